"""The study on a GPU (`--accelerator gpu` for train, predict, explain, the explanation metrics and activation
profiles). Marked ``gpu``: skipped, saying why, on a machine without CUDA (as the one these tests were written on)."""

from __future__ import annotations

import pytest

from cxrlens.config import ExplainConfig, NapConfig, PredictConfig, XaiConfig
from cxrlens.data.sources import sample_root
from cxrlens.explain.runner import run_explain
from cxrlens.nap.runner import run_nap
from cxrlens.predict import predict_images
from cxrlens.run import create_run, open_run
from cxrlens.train.runner import run_cv
from cxrlens.xai.study import evaluate_explanations
from tests.train.test_runner import tiny_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    cfg = tiny_config(root, **{"train.epochs": 1, "cv.folds": [0, 1], "train.accelerator": "gpu",
                               "train.devices": "1"})  # fmt: skip
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    return open_run(root / "run")


def test_training_predict_and_profiles_on_the_gpu(gpu_run):
    images = sorted((sample_root() / "images" / "kermany").iterdir())[:4]
    on_gpu = predict_images(gpu_run, images, PredictConfig(accelerator="gpu"))
    on_cpu = predict_images(gpu_run, images, PredictConfig(accelerator="cpu"))
    for a, b in zip(on_gpu.images, on_cpu.images, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    assert run_nap(gpu_run, NapConfig(accelerator="gpu")).n_images > 0


def test_explain_and_explanation_metrics_on_the_gpu(gpu_run):
    cfg = ExplainConfig(n_images=1, followup_images=0, methods=["saliency", "occlusion"], accelerator="gpu",
                        params={"occlusion": {"window": 16, "stride": 16}})  # fmt: skip
    summary = run_explain(gpu_run, cfg, enable_progress_bar=False)
    assert summary is not None and summary.maps_written > 0
    result = evaluate_explanations(gpu_run, XaiConfig(steps=4, bootstrap=10, sanity_images=1, stability_images=1,
                                                      accelerator="gpu"))  # fmt: skip
    assert result.n_maps == summary.maps_total
