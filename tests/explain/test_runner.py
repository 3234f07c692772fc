"""`explain` end to end on a tiny trained run: maps, sidecars, overlays, figures, resume, bad input."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cxrlens.config import ExplainConfig
from cxrlens.errors import RegistryError, RunError
from cxrlens.explain.plan import make_plan
from cxrlens.explain.runner import run_explain
from cxrlens.run import create_run, open_run
from cxrlens.run.maps import MapStore, load_map
from cxrlens.train.runner import run_cv
from tests.train.test_runner import tiny_config

METHODS = ["saliency", "deeplift", "gradcam", "occlusion"]
PARAMS = {"occlusion": {"window": 12, "stride": 12}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    cfg = tiny_config(root, **{"train.epochs": 1, "cv.folds": None})
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    return open_run(root / "run")


def explain(run, cfg):
    result = run_explain(run, cfg, enable_progress_bar=False)
    assert result is not None
    return result


@pytest.fixture(scope="module")
def explained(study):
    return explain(study, ExplainConfig(n_images=2, methods=METHODS, params=PARAMS))


def test_maps_sidecars_overlays_and_figures(study, explained):
    assert explained.models == ("tiny", "ensemble")
    assert explained.maps_written == explained.maps_total > 0
    assert explained.not_applicable == ("gradcam on ensemble: the ensemble has no single layer",)
    store = MapStore(study.layout.explanations.root)
    entries = store.read_index()
    sidecar = entries[0]
    for key in ("image", "model", "fold", "checkpoint", "checkpoint_sha256", "method", "parameters", "label",
                "probability", "runtime_s", "delta"):  # fmt: skip
        assert key in sidecar
    values = load_map(store.root / sidecar["map"])
    assert values.shape == (48, 48) and np.isfinite(values).all()
    assert store.overlay_path(sidecar["image"], sidecar["model"], sidecar["method"], sidecar["label"]).is_file()
    deltas = [e["delta"] for e in entries if e["method"] == "deeplift"]
    assert deltas and all(d is not None for d in deltas)
    names = [p.rsplit("/", 1)[1] for p in explained.figures]
    assert any(n.startswith("grid_") for n in names)
    assert any(n.startswith("occlusion_models_") for n in names)
    assert any(n.startswith("followup_") for n in names), "the sample's follow-up patient gets its figure"


def test_each_image_is_explained_by_the_models_that_never_trained_on_it(study, explained):
    entries = MapStore(study.layout.explanations.root).read_index()
    test_fold = {(r.filename, r.fold) for r in study.splits() if r.subset == "test"}
    for entry in entries:
        assert (entry["image"], entry["fold"]) in test_fold


def test_labels_default_to_predicted_and_true_positives(study, explained):
    for entry in MapStore(study.layout.explanations.root).read_index():
        assert entry["true"] or entry["predicted"] or entry["labels_in_call"] == 1


def test_rerun_reuses_existing_maps(study, explained):
    again = explain(study, ExplainConfig(n_images=2, methods=METHODS, params=PARAMS))
    assert again.maps_written == 0 and again.maps_total == explained.maps_total
    changed = explain(
        study,
        ExplainConfig(n_images=2, methods=["occlusion"], params={"occlusion": {"window": 24}}, followup_images=0),
    )
    assert changed.maps_written > 0  # other parameters: recomputed, not silently reused


def test_an_image_outside_the_data_can_be_explained(study, tmp_path):
    from cxrlens.data.sources import sample_root

    image = sorted((sample_root() / "images" / "kermany").iterdir())[0]
    cfg = ExplainConfig(images=[str(image)], methods=["saliency"], labels=["COVID-19"], fold=1, figures=False)
    result = explain(study, cfg)
    assert result.maps_written == 2  # tiny and the ensemble
    entry = json.loads(next(study.layout.explanations.maps_dir.rglob("COVID-19.json")).read_text(encoding="utf-8"))
    assert entry["label"] == "COVID-19"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"methods": ["occlussion"]}, RegistryError, "unknown attribution method 'occlussion'; valid:"),
        ({"labels": ["Covid"]}, RunError, r"unknown label\(s\) \['Covid'\]; valid:"),
        ({"models": ["resnet18"]}, RunError, "model 'resnet18' is not trained"),
        ({"images": ["nope.png"]}, RunError, "nope.png: not an image of the run's data"),
        ({"models": ["ensemble"], "methods": ["gradcam"]}, RunError, "gradcam cannot explain the ensemble"),
        ({"fold": 9}, RunError, "fold 9 has no trained models"),
        ({"params": {"occlusion": {"size": 3}}}, Exception, "occlusion parameters: size: unknown option"),
    ],
)
def test_bad_requests_fail_before_any_work(study, options, error, message):
    with pytest.raises(error, match=message):
        make_plan(study, ExplainConfig(n_images=1, **options))


def test_predicted_labels_use_the_runs_tuned_thresholds(tmp_path):
    from cxrlens.evaluate.evaluation import evaluate_run, write_evaluation

    cfg = tiny_config(tmp_path, **{"train.epochs": 1, "evaluate.threshold": "tuned", "evaluate.ensembles": False})
    run_cv(create_run(cfg, tmp_path / "run"), enable_progress_bar=False)
    run = open_run(tmp_path / "run")
    request = ExplainConfig(n_images=2, methods=["saliency"], followup_images=0)
    with pytest.raises(RunError, match="cxrlens evaluate"):
        explain(run, request)  # tuned thresholds do not exist yet
    write_evaluation(run, evaluate_run(run, cfg.evaluate))
    explain(run, request)
    metrics = json.loads(run.layout.evaluation_metrics.read_text())
    label_names = list(run.label_names)
    tuned = {f["fold"]: f["thresholds"] for f in metrics["entries"]["tiny"]["folds"]}
    entries = MapStore(run.layout.explanations.root).read_index()
    assert {e["model"] for e in entries} == {"tiny", "ensemble"}
    for entry in entries:  # the one-member ensemble has its member's thresholds
        threshold = tuned[entry["fold"]][label_names.index(entry["label"])]
        assert entry["threshold"] == pytest.approx(threshold)
        assert entry["predicted"] == (entry["probability"] >= threshold)
    assert any(e["threshold"] != 0.5 for e in entries), "tuning moved at least one threshold off 0.5"


@pytest.mark.slow
def test_two_ddp_processes_shard_the_images_and_write_the_same_maps(study, explained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(study.root, copy)
    shutil.rmtree(open_run(copy).layout.explanations.root)
    result = subprocess.run(
        [sys.executable, "-m", "cxrlens", "explain", "--run", str(copy), "--n-images", "2",
         "--methods", "saliency", "--methods", "occlusion", "--param", "occlusion.window=12",
         "--param", "occlusion.stride=12", "--no-figures", "--devices", "2", "--strategy", "ddp"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]

    def keys(root):
        return {
            (e["image"], e["model"], e["method"], e["label"])
            for e in MapStore(open_run(root).layout.explanations.root).read_index()
            if e["method"] in ("saliency", "occlusion")
        }

    plan = make_plan(study, ExplainConfig(n_images=2, methods=["saliency"]))
    images = {item.filename for item in plan.items}  # other tests of this module explain more images
    expected = {key for key in keys(study.root) if key[0] in images}
    assert keys(copy) == expected
    assert f"{len(expected)} map(s) computed" in result.stdout, "the count covers both ranks"
