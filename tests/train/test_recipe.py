"""The training recipe: ``auto`` precision and channels-last, explicit settings, the recipe a resumed fold keeps,
and the recipe recorded in ``done.json``, ``model.pt`` and the checkpoints of a tiny run."""

import json

import pytest
import torch
from pydantic import ValidationError

from cxrlens.config import TrainConfig, load_run_config
from cxrlens.models.checkpoint import read_meta
from cxrlens.models.registry import get_spec
from cxrlens.run import create_run
from cxrlens.train import recipe as recipe_module
from cxrlens.train.module import RECIPE_KEY
from cxrlens.train.recipe import (
    CHANNELS_LAST,
    Hardware,
    Recipe,
    auto_channels_last,
    auto_precision,
    cpu_flags,
    cpu_has_native_bf16,
    detect_hardware,
    resolve_recipe,
)
from cxrlens.train.runner import recorded_recipe, train_fold

BF16_CPU = Hardware("cpu", cpu_bf16=True)
PLAIN_CPU = Hardware("cpu")


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (Hardware("cpu", cpu_bf16=True), "bf16-mixed"),
        (Hardware("cpu", cpu_bf16=False), "32-true"),
        (Hardware("cuda", cuda_bf16=True), "bf16-mixed"),
        (Hardware("cuda", cuda_bf16=False), "16-mixed"),
        (Hardware("mps"), "32-true"),
        (Hardware("tpu"), "32-true"),
        (Hardware("mps", cpu_bf16=True), "32-true"),  # the CPU's bf16 does not count off the CPU
    ],
)
def test_auto_precision_per_hardware(hardware, expected):
    precision, why = auto_precision(hardware)
    assert precision == expected and why
    assert resolve_recipe(TrainConfig(), "resnet18", hardware).precision == expected


X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 1\n"


@pytest.mark.parametrize(
    ("extra", "native"),
    [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512_vnni", False), ("", False)],
)
def test_native_bf16_needs_the_bf16_instructions_not_just_avx512(monkeypatch, extra, native):
    monkeypatch.setattr(recipe_module.platform, "machine", lambda: "x86_64")
    flags = cpu_flags(X86_CPUINFO.format(extra=extra))
    assert "avx512f" in flags
    assert cpu_has_native_bf16(flags) is native


def test_arm_cpus_stay_fp32_and_their_features_are_read(monkeypatch):
    flags = cpu_flags("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n")
    assert "bf16" in flags
    monkeypatch.setattr(recipe_module.platform, "machine", lambda: "aarch64")
    assert cpu_has_native_bf16(flags) is False
    assert cpu_flags("no flags here") == set()


def test_detect_hardware_on_this_machine_matches_its_parts():
    hardware = detect_hardware("cpu")
    assert hardware.device == "cpu" and hardware.cuda_bf16 is False
    assert hardware.cpu_bf16 == cpu_has_native_bf16()
    if not torch.cuda.is_available():
        assert detect_hardware("auto").device in ("cpu", "mps")


@pytest.mark.parametrize("model", sorted(CHANNELS_LAST))
def test_channels_last_table_names_registered_backbones(model):
    get_spec(model)  # an unknown name raises
    assert CHANNELS_LAST[model] <= {"32-true", "bf16-mixed", "16-mixed"}


@pytest.mark.parametrize(
    ("model", "precision", "expected"),
    [
        ("resnet18", "bf16-mixed", True),
        ("resnet18", "32-true", True),
        ("densenet161", "bf16-mixed", True),
        ("densenet161", "32-true", False),
        ("resnet34", "16-mixed", False),  # not measured
        ("tiny", "bf16-mixed", False),  # not in the table
    ],
)
def test_channels_last_auto_table(model, precision, expected):
    assert auto_channels_last(model, precision) is expected
    cfg = TrainConfig(precision=precision)
    recipe = resolve_recipe(cfg, model, BF16_CPU)
    assert recipe.precision == precision and recipe.channels_last is expected
    assert ("channels-last on" if expected else "channels-last off") in recipe.reason


def test_auto_channels_last_follows_the_resolved_precision():
    assert resolve_recipe(TrainConfig(), "densenet161", BF16_CPU).channels_last is True
    assert resolve_recipe(TrainConfig(), "densenet161", PLAIN_CPU).channels_last is False


def test_explicit_settings_win_over_hardware_and_recorded_recipe():
    recorded = {"precision": "bf16-mixed", "channels_last": True}
    cfg = TrainConfig(precision="32-true", channels_last=False, fused_optimizer=False)
    recipe = resolve_recipe(cfg, "resnet18", BF16_CPU, recorded=recorded)
    assert recipe == Recipe(
        precision="32-true",
        channels_last=False,
        fused_optimizer=False,
        reason="precision 32-true: set in train.precision; channels-last off: set in train.channels_last",
    )
    assert recipe.autocast_dtype is None
    recipe = resolve_recipe(TrainConfig(precision="bf16-mixed", channels_last=True), "tiny", PLAIN_CPU)
    assert (recipe.precision, recipe.channels_last) == ("bf16-mixed", True)
    assert recipe.reason.count("set in train.") == 2
    assert recipe.autocast_dtype is torch.bfloat16


def test_recorded_recipe_wins_on_resume():
    recorded = {"precision": "32-true", "channels_last": False, "fused_optimizer": True}
    recipe = resolve_recipe(TrainConfig(), "resnet18", BF16_CPU, recorded=recorded)
    assert (recipe.precision, recipe.channels_last) == ("32-true", False)
    assert recipe.reason.count("as the interrupted training started") == 2
    # an explicit precision with a recorded channels-last: each setting on its own
    recipe = resolve_recipe(TrainConfig(precision="bf16-mixed"), "resnet18", PLAIN_CPU, recorded=recorded)
    assert (recipe.precision, recipe.channels_last) == ("bf16-mixed", False)


def test_recipe_meta_is_what_gets_recorded():
    recipe = resolve_recipe(TrainConfig(), "resnet18", BF16_CPU)
    assert recipe.meta() == {"precision": "bf16-mixed", "channels_last": True, "fused_optimizer": True}
    assert "CPU with native bf16" in recipe.reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [("bf16", "bf16-mixed"), ("16", "16-mixed"), ("32", "32-true"), (32, "32-true"), ("64", "64-true"),
     (" auto ", "auto"), ("bf16-mixed", "bf16-mixed"), ("16-true", "16-true")],
)  # fmt: skip
def test_precision_aliases_become_lightning_names(given, expected):
    assert TrainConfig(precision=given).precision == expected


@pytest.mark.parametrize("bad", ["fp16", "bfloat16", "8", "mixed", ""])
def test_unknown_precision_is_refused_with_the_choices(bad):
    with pytest.raises(ValidationError, match=r"precision must be one of auto, 32-true, bf16-mixed"):
        TrainConfig(precision=bad)


def test_train_config_defaults_are_the_auto_recipe():
    cfg = TrainConfig()
    assert (cfg.precision, cfg.channels_last, cfg.fused_optimizer) == ("auto", "auto", True)
    with pytest.raises(ValidationError):
        TrainConfig(channels_last="sometimes")


# -- a tiny training run -----------------------------------------------------------------------------------------
def _tiny(tmp_path, **extra):
    overrides = {
        "data.sources": ["@sample"],
        "data.preprocess.size": 64,
        "data.cache_dir": str(tmp_path / "cache"),
        "models.names": ["tiny"],
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.patience": 0,
        "train.limit_batches": 2,
        "cv.split.folds": 3,
        "cv.folds": [0],
        **extra,
    }
    return load_run_config(None, overrides)


def _fold_records(study):
    layout = study.run.layout
    done = json.loads(layout.done_file("tiny", 0).read_text())
    meta = read_meta(layout.model_file("tiny", 0))
    checkpoint = recorded_recipe(layout.last_checkpoint("tiny", 0))
    return done, meta, checkpoint


def test_tiny_run_records_its_resolved_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_module, "detect_hardware", lambda accelerator="auto": BF16_CPU)
    study = create_run(_tiny(tmp_path), tmp_path / "run")
    result = train_fold(study, "tiny", 0, enable_progress_bar=False)
    assert result is not None and (result.precision, result.channels_last) == ("bf16-mixed", False)
    done, meta, checkpoint = _fold_records(study)
    expected = {"precision": "bf16-mixed", "channels_last": False, "fused_optimizer": True}
    assert {k: done[k] for k in ("precision", "channels_last")} == {"precision": "bf16-mixed", "channels_last": False}
    assert {k: meta[k] for k in expected} == expected
    assert checkpoint == expected
    assert done["recipe"].startswith("precision bf16-mixed: CPU with native bf16")
    best = torch.load(study.run.layout.checkpoints_dir("tiny", 0) / "best.ckpt", weights_only=True)
    assert best[RECIPE_KEY] == expected
    state = torch.load(study.run.layout.model_file("tiny", 0), weights_only=True)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values()), "weights stay fp32"


class _Crash(Exception):
    pass


def test_resumed_fold_keeps_the_recipe_it_started_with(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import Callback

    class CrashInSecondEpoch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                raise _Crash("simulated power cut")

    study = create_run(_tiny(tmp_path, **{"train.precision": "auto"}), tmp_path / "run")
    monkeypatch.setattr(recipe_module, "detect_hardware", lambda accelerator="auto": PLAIN_CPU)
    with pytest.raises(_Crash):
        train_fold(study, "tiny", 0, callbacks=[CrashInSecondEpoch()], enable_progress_bar=False)
    last = study.run.layout.last_checkpoint("tiny", 0)
    assert recorded_recipe(last)["precision"] == "32-true"
    # resumed on a machine where auto would pick bf16: the fold finishes as it started
    monkeypatch.setattr(recipe_module, "detect_hardware", lambda accelerator="auto": BF16_CPU)
    result = train_fold(study, "tiny", 0, resume=True, enable_progress_bar=False)
    assert result is not None and result.precision == "32-true"
    done, meta, checkpoint = _fold_records(study)
    assert done["precision"] == meta["precision"] == checkpoint["precision"] == "32-true"


def test_unreadable_checkpoint_records_nothing(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert recorded_recipe(bad) == {}
    assert recorded_recipe(tmp_path / "missing.ckpt") == {}
