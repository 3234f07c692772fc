"""`cxrlens nap` on a tiny trained run: arrays, summary, figures, chosen layers and images, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cxrlens.config import NapConfig, RunConfig, load_run_config, validate
from cxrlens.errors import ConfigError, LabelError, ModelError, RunError
from cxrlens.nap.runner import run_nap
from cxrlens.run import create_run, open_run
from cxrlens.train.runner import train_fold


def _config(tmp_path):
    return load_run_config(
        None,
        {
            "data.sources": ["@sample"],
            "data.preprocess.size": 48,
            "data.cache_dir": str(tmp_path / "cache"),
            "models.names": ["tiny"],
            "train.epochs": 1,
            "train.batch_size": 8,
            "train.patience": 0,
            "cv.split.folds": 3,
            "cv.folds": [0],
        },
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("nap")
    train_fold(create_run(_config(tmp_path), tmp_path / "run"), "tiny", 0, enable_progress_bar=False)
    return open_run(tmp_path / "run")


def test_run_nap_writes_arrays_summary_and_figures(trained_run):
    advanced: list[int] = []
    result = run_nap(trained_run, NapConfig(top_k=5), progress=advanced.append)  # default: the first model
    summary = result.summary
    out = trained_run.layout.nap("tiny", 0).root
    assert result.dir == str(out) and result.fold == 0 and summary["images"] == "test" and result.model == "tiny"
    layers = ["backbone.bn1", "backbone.bn2", "backbone.bn3"]
    assert [layer["name"] for layer in summary["layers"]] == layers
    assert sum(advanced) == summary["n_images"] > 0

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["layers"] == summary["layers"] and on_disk["files"]["figures"]["backbone.bn1"]
    for path in result.paths:
        assert (out / path).is_file()
    for png in [*on_disk["files"]["figures"].values(), on_disk["files"]["overview"]]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    groups = [g["name"] for g in summary["groups"]]
    with np.load(out / "nap.npz") as npz:
        assert list(npz["layers"]) == layers and list(npz["group_names"]) == groups
        assert int(npz["n_images"]) == summary["n_images"]
        assert int(npz["group_sizes"].sum()) >= summary["n_images"] // 2
        for layer, channels in zip(layers, (8, 16, 32), strict=True):
            live = npz[f"{layer}/live"]
            assert npz[f"{layer}/profile"].shape == (len(groups), len(live))
            assert npz[f"{layer}/group_means"].shape == (len(groups), len(live))
            assert int(npz[f"{layer}/channels"]) == channels == len(live) + int(npz[f"{layer}/dead"])
            np.testing.assert_allclose(npz[f"{layer}/profile"].mean(axis=0), 0, atol=1e-9)
            entry = summary["layers"][layers.index(layer)]
            top = entry["top"]
            assert len(top) == min(5, len(live)) and entry["dead"] == int(npz[f"{layer}/dead"])
            assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
            assert set(top[0]["profile"]) == set(groups)


def test_run_nap_on_all_images_and_chosen_layers(trained_run):
    cfg = NapConfig(model="tiny", fold=0, layers=["backbone.bn3"], images="all", top_k=3)
    result = run_nap(trained_run, cfg)
    assert [layer["name"] for layer in result.summary["layers"]] == ["backbone.bn3"]
    with trained_run.layout.splits.open() as handle:
        assert result.n_images == len({row["filename"] for row in csv.DictReader(handle)})
    files = trained_run.layout.nap("tiny", 0)
    pngs = sorted(p.name for p in files.root.glob("*.png"))
    assert pngs == sorted([files.layer_figure("backbone.bn3").name, files.overview.name])  # no stale ones


def test_run_nap_errors(trained_run, tmp_path):
    with pytest.raises(RunError, match=r"model 'resnet18' is not trained in this run \(trained: tiny fold 0\)"):
        run_nap(trained_run, NapConfig(model="resnet18"))
    with pytest.raises(RunError, match=r"tiny fold 2 is not trained \(trained folds of tiny: \[0\]\)"):
        run_nap(trained_run, NapConfig(model="tiny", fold=2))
    with pytest.raises(LabelError, match=r"group 'bad'.*unknown label\(s\) 'Covid'.*valid labels"):
        run_nap(trained_run, NapConfig(groups={"bad": "Covid & Pneumonia", "ok": "Pneumonia"}))
    with pytest.raises(ModelError, match=r"unknown layer 'backbone.bn4'; did you mean backbone.bn"):
        run_nap(trained_run, NapConfig(layers=["backbone.bn4"]))
    with pytest.raises(ConfigError, match=r"nap\.images"):
        validate(RunConfig, {"nap": {"images": "val"}}, "options")
    with pytest.raises(RunError, match="not a cxrlens run folder"):
        open_run(tmp_path)
