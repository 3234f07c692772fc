"""Training on the tiny model: outputs, skipping, exact resume, no test leakage, real-data sanity."""

import csv

import numpy as np
import pytest
import torch

from cxrlens.config import load_run_config
from cxrlens.data.splits import fold_files
from cxrlens.errors import RunError
from cxrlens.models.checkpoint import load_model
from cxrlens.run import create_run
from cxrlens.train.runner import FoldResult, collect_predictions, run_cv, train_fold
from tests.conftest import real_run_config


def tiny_config(tmp_path, **extra):
    overrides = {
        "data.sources": ["@sample"],
        "data.preprocess.size": 48,
        "data.cache_dir": str(tmp_path / "cache"),
        "models.names": ["tiny"],
        "train.epochs": 3,
        "train.batch_size": 8,
        "train.patience": 0,
        "cv.split.folds": 3,
        "cv.folds": [0],
        **extra,
    }
    return load_run_config(None, overrides)


def test_cv_writes_model_predictions_and_skips_finished_pairs(tmp_path):
    study = create_run(tiny_config(tmp_path), tmp_path / "run")
    first = run_cv(study, enable_progress_bar=False)
    assert first[0].model == "tiny" and first[0].epochs_run == 3
    run = study.run
    assert run.is_done("tiny", 0)
    with run.layout.predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    files = fold_files(study.splits, 0)
    assert sorted(r["filename"] for r in rows if r["subset"] == "test") == sorted(files["test"])
    assert sorted(r["filename"] for r in rows if r["subset"] == "val") == sorted(files["val"])
    assert all(0.0 <= float(r["COVID-19"]) <= 1.0 for r in rows)
    _, meta = load_model(run.layout.model_file("tiny", 0), study.space.names)
    assert meta["fold"] == 0 and meta["preprocess"]["size"] == 48
    again = run_cv(create_run(tiny_config(tmp_path), tmp_path / "run"), enable_progress_bar=False)
    assert again == [FoldResult(model="tiny", fold=0, skipped=True)]


def test_best_epoch_is_chosen_on_validation_never_on_test(tmp_path):
    study = create_run(tiny_config(tmp_path, **{"train.epochs": 4}), tmp_path / "run")
    done = train_fold(study, "tiny", 0, enable_progress_bar=False)
    with (study.run.layout.fold_dir("tiny", 0) / "logs" / "metrics.csv").open() as handle:
        val = [float(r["val_loss"]) for r in csv.DictReader(handle) if r.get("val_loss")]
    assert done is not None and done.val_loss == pytest.approx(min(val), rel=1e-6)
    files = fold_files(study.splits, 0)
    assert not set(files["test"]) & (set(files["train"]) | set(files["val"]))


class _Crash(Exception):
    pass


def _crash_at(epoch: int, batch: int):
    from lightning.pytorch.callbacks import Callback

    class CrashCallback(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch_data, batch_idx):
            if trainer.current_epoch == epoch and batch_idx == batch:
                raise _Crash("simulated power cut")

    return CrashCallback()


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.epochs": 3})
    whole = create_run(cfg, tmp_path / "whole")
    train_fold(whole, "tiny", 0, enable_progress_bar=False)
    reference = torch.load(whole.run.layout.model_file("tiny", 0), weights_only=True)["state_dict"]

    broken = create_run(cfg, tmp_path / "broken")
    with pytest.raises(_Crash):
        train_fold(broken, "tiny", 0, callbacks=[_crash_at(epoch=1, batch=2)], enable_progress_bar=False)
    assert not broken.run.is_done("tiny", 0)
    assert broken.run.layout.last_checkpoint("tiny", 0).is_file()
    train_fold(broken, "tiny", 0, resume=True, enable_progress_bar=False)
    resumed = torch.load(broken.run.layout.model_file("tiny", 0), weights_only=True)["state_dict"]
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_run_folder_refuses_other_labels_or_preprocessing_and_keeps_its_files(tmp_path):
    study = create_run(tiny_config(tmp_path), tmp_path / "run")
    before = {p: p.read_bytes() for p in (study.run.layout.splits, study.run.layout.labels)}
    with pytest.raises(RunError, match="other labels"):
        create_run(tiny_config(tmp_path, **{"data.labels.preset": "paper14"}), tmp_path / "run")
    with pytest.raises(RunError, match=r"preprocesses images otherwise.*size 48 vs 64"):
        create_run(tiny_config(tmp_path, **{"data.preprocess.size": 64}), tmp_path / "run")
    assert {p: p.read_bytes() for p in before} == before  # refused before anything was overwritten


def test_unknown_fold_and_model(tmp_path):
    study = create_run(tiny_config(tmp_path, **{"cv.folds": [7]}), tmp_path / "run")
    with pytest.raises(RunError, match=r"fold\(s\) \[7\] not in the splits"):
        run_cv(study)
    from cxrlens.errors import RegistryError

    study = create_run(tiny_config(tmp_path), tmp_path / "run2")
    with pytest.raises(RegistryError, match="unknown model 'resnet81'"):
        run_cv(study, models=["resnet81"])


@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_model_beats_the_label_prior_on_real_test_patients(realdata, tmp_path):
    from sklearn.metrics import f1_score

    from cxrlens.evaluate import label_prior_baseline

    cfg = real_run_config(realdata, tmp_path, **{"train.epochs": 4})
    study = create_run(cfg, tmp_path / "run")
    train_fold(study, "tiny", 0, enable_progress_bar=False)
    collect_predictions(study)
    files = fold_files(study.splits, 0)
    index = study.dataset.by_filename()
    truth = study.space.encode_many(index[f].labels for f in files["test"])
    train_truth = study.space.encode_many(index[f].labels for f in files["train"])
    with study.run.layout.predictions.open() as handle:
        rows = {r["filename"]: r for r in csv.DictReader(handle) if r["subset"] == "test"}
    probs = np.array([[float(rows[f][n]) for n in study.space.names] for f in files["test"]])
    model_f1 = f1_score(truth, probs >= 0.5, average="micro", zero_division=0)
    prior = label_prior_baseline(train_truth, len(files["test"]))
    prior_f1 = f1_score(truth, prior >= 0.5, average="micro", zero_division=0)
    assert model_f1 > prior_f1 + 0.1, (model_f1, prior_f1)
