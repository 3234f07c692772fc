"""`explain` and `nap` on a run trained on the real data (small images, the tiny model, briefly)."""

import json

import pytest

from cxrlens.config import ExplainConfig, NapConfig
from cxrlens.explain.runner import run_explain
from cxrlens.nap.runner import run_nap
from cxrlens.run import create_run, open_run
from cxrlens.run.maps import MapStore
from cxrlens.train.runner import train_fold
from tests.conftest import real_run_config


@pytest.mark.realdata
@pytest.mark.slow
def test_explain_and_nap_on_a_run_of_the_shared_data(realdata, tmp_path):
    cfg = real_run_config(realdata, tmp_path)
    train_fold(create_run(cfg, tmp_path / "run"), "tiny", 0, enable_progress_bar=False)
    run = open_run(tmp_path / "run")
    explain = ExplainConfig(
        n_images=2,
        followup_images=3,
        methods=["saliency", "deeplift", "gradcam", "occlusion"],
        params={"occlusion": {"window": 16, "stride": 16}},
    )
    result = run_explain(run, explain, enable_progress_bar=False)
    assert result is not None and result.maps_written > 0
    store = MapStore(run.layout.explanations.root)
    entries = store.read_index()
    assert {e["method"] for e in entries} == {"saliency", "deeplift", "gradcam", "occlusion"}
    assert all((store.root / e["map"]).is_file() for e in entries)
    names = [p.rsplit("/", 1)[1] for p in result.figures]
    assert any(n.startswith("grid_") for n in names)
    assert any(n.startswith("followup_") for n in names), "the real data has follow-up patients"
    assert any(n.startswith("occlusion_models_") for n in names)

    summary = run_nap(run, NapConfig(model="tiny", fold=0))
    assert summary.n_images > 100
    files = run.layout.nap("tiny", 0)
    assert files.npz.is_file()
    assert json.loads(files.summary.read_text())["layers"]
