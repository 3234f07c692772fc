"""`evaluate-explanations` end to end on a tiny trained and explained run: files, shape, reuse, notes, CLI."""

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from cxrlens.config import ExplainConfig
from cxrlens.errors import ConfigError, RunError
from cxrlens.explain.runner import run_explain
from cxrlens.run.maps import MapStore
from cxrlens.train.runner import open_study, run_cv
from cxrlens.xai import study as xai_study
from cxrlens.xai.study import METRICS, evaluate_explanations
from tests.train.test_runner import tiny_config

METHODS = ["saliency", "gradcam", "occlusion"]
PARAMS = {"occlusion": {"window": 12, "stride": 12}}
FAST = {"steps": 4, "bootstrap": 200, "sanity_images": 1, "stability_images": 1, "sanity_steps": 3, "n_random": 2}
TOP_KEYS = ["format", "settings", "n_maps", "notes", "metrics", "sanity", "ranking", "shortcut", "files"]


def _no_nan(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("xai")
    study = open_study(tiny_config(root, **{"train.epochs": 1, "cv.folds": None}), root / "run")
    run_cv(study, enable_progress_bar=False)
    cfg = ExplainConfig(n_images=3, methods=METHODS, params=PARAMS, followup_images=0, figures=False)
    run_explain(study, cfg, enable_progress_bar=False)
    return study.run.root


@pytest.fixture(scope="module")
def result(run_dir):
    return evaluate_explanations(run_dir, **FAST)


def test_metrics_json_has_the_agreed_shape_and_no_nan(run_dir, result):
    written = _no_nan((run_dir / "xai" / "metrics.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(result))
    assert list(written) == TOP_KEYS
    assert written["format"] == "cxrlens-xai/1"
    assert set(written["metrics"]) == set(METRICS)
    for block in written["metrics"].values():
        assert isinstance(block["description"], str) and isinstance(block["higher_is_better"], bool)
        for row in block["rows"]:
            assert {"model", "method", "mean", "ci_low", "ci_high", "n"} <= set(row)
            if row["ci_low"] is not None:
                assert row["ci_low"] - 1e-9 <= row["mean"] <= row["ci_high"] + 1e-9
    assert written["sanity"]["threshold"] == 0.5
    assert {"methods", "models", "verdict"} <= set(written["ranking"])
    assert written["ranking"]["verdict"].startswith("Measured")
    assert {"rows", "top_images"} <= set(written["shortcut"])


def test_every_map_of_the_index_is_measured(run_dir, result):
    entries = MapStore(run_dir / "explanations").read_index()
    assert result["n_maps"] == len(entries)
    with (run_dir / "xai" / "per_map.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(entries)
    for row in rows:
        assert float(row["deletion_auc"]) >= 0 and float(row["insertion_auc"]) >= 0
        gain = float(row["random_deletion_auc"]) - float(row["deletion_auc"])
        assert float(row["deletion_gain"]) == pytest.approx(gain)
        if row["border_share"]:  # empty (undefined) for an all-zero map, e.g. a Grad-CAM with no positive evidence
            assert 0 <= float(row["border_share"]) <= 1 and 0 <= float(row["padding_share"]) <= 1
    masked = [r for r in rows if r["lung_mask"] == "True" and r["lung_share"]]
    assert masked, "the sample's lung-masked images are picked first"
    for row in masked:
        share = float(row["lung_share"])
        assert 0 <= share <= 1 and float(row["outside_lung_share"]) == pytest.approx(1 - share)
        assert 0 < float(row["lung_area_share"]) < 1


def test_tables_rows_and_files(run_dir, result):
    metrics = result["metrics"]
    for name in ("deletion_auc", "insertion_gain", "lung_share", "pointing_game", "fold_stability"):
        assert metrics[name]["rows"], name
        assert {r["model"] for r in metrics[name]["rows"]} == {"tiny", "ensemble"}
    sanity_models = {r["model"] for r in metrics["randomisation_spearman"]["rows"]}
    assert sanity_models == {"tiny"}
    assert any("ensemble is skipped" in note for note in result["notes"])
    sanity = result["sanity"]["rows"]
    assert {r["method"] for r in sanity} == set(METHODS)
    for row in sanity:
        assert row["layers"][0] == "backbone.fc" and row["layers"][-1] == "backbone.conv1"
        assert len(row["spearman"]) == len(row["layers"]) == 3
    out = run_dir / "xai"
    for name in METRICS:
        assert (out / "tables" / f"{name}.md").is_file() and (out / "tables" / f"{name}.csv").is_file()
    assert "| model |" in (out / "tables" / "lung_share.md").read_text(encoding="utf-8")
    figures = result["files"]["figures"]
    assert "curves" in figures and "bars_deletion_gain" in figures
    for path in figures.values():
        assert (out / path).stat().st_size > 0
    assert (out / "maps").is_dir(), "the other folds' maps are stored for reuse"


def test_shortcut_audit_and_ranking(run_dir, result):
    rows = {r["model"]: r for r in result["shortcut"]["rows"]}
    assert set(rows) == {"tiny", "ensemble"}
    for row in rows.values():
        assert 0 <= row["outside_lung_share"] <= 1 and 0 <= row["padding_share"] <= 1
    top = result["shortcut"]["top_images"]
    assert top and len({(t["model"], t["image"]) for t in top}) == len(top)
    for item in top:
        assert (run_dir / item["overlay"]).is_file()
    ranked = result["ranking"]["methods"]
    assert {r["method"] for r in ranked} == set(METHODS)
    assert [r["rank"] for r in ranked] == sorted(r["rank"] for r in ranked) and ranked[0]["rank"] == 1
    assert all(0 <= r["score"] <= 1 for r in ranked)
    assert [r["model"] for r in result["ranking"]["models"]][:1] in (["tiny"], ["ensemble"])


def test_rerun_reuses_everything_and_gives_the_same_numbers(run_dir, result, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(xai_study, "_run_method", refuse)
    monkeypatch.setattr(xai_study.xm, "pixel_curves", refuse)
    again = evaluate_explanations(run_dir, **FAST)
    assert again["metrics"] == result["metrics"]
    assert again["sanity"] == result["sanity"] and again["ranking"] == result["ranking"]


def test_fewer_images_and_switches(run_dir):
    smaller = evaluate_explanations(run_dir, images_max=1, sanity=False, stability=False, **FAST)
    assert any("1 of 3 explained images" in note for note in smaller["notes"])
    assert not smaller["sanity"]["rows"] and not smaller["metrics"]["fold_stability"]["rows"]
    assert any("--no-sanity" in note for note in smaller["notes"])
    with pytest.raises(ConfigError, match="steps must be at least 2"):
        evaluate_explanations(run_dir, steps=1)
    with pytest.raises(ConfigError, match="insertion_start"):
        evaluate_explanations(run_dir, insertion_start="grey")


def test_one_fold_and_no_masks_are_reported_as_notes(tmp_path):
    study = open_study(tiny_config(tmp_path, **{"train.epochs": 1}), tmp_path / "run")
    run_cv(study, enable_progress_bar=False)
    with pytest.raises(RunError, match="no explanations yet"):
        evaluate_explanations(study.run.root, **FAST)
    unmasked = sorted(r.filename for r in study.dataset.records if r.lung_mask is None)[0]
    cfg = ExplainConfig(images=[unmasked], methods=["saliency"], models=["tiny"], figures=False, followup_images=0)
    run_explain(study, cfg, enable_progress_bar=False)
    result = evaluate_explanations(study.run.root, sanity=False, **FAST)
    assert any("only one fold is trained" in note for note in result["notes"])
    assert any("none of the evaluated images has a lung mask" in note for note in result["notes"])
    assert not result["metrics"]["lung_share"]["rows"] and not result["metrics"]["pointing_game"]["rows"]
    assert result["metrics"]["deletion_auc"]["rows"][0]["n"] == result["n_maps"]
    assert result["shortcut"]["rows"][0]["outside_lung_share"] is None
    assert result["shortcut"]["rows"][0]["padding_share"] is not None


def test_cli_prints_json_and_tables(run_dir):
    from cxrlens.cli.xai import evaluate_explanations_cmd

    app = typer.Typer()
    app.command()(evaluate_explanations_cmd)
    options = [
        "--run",
        str(run_dir),
        "--steps",
        "4",
        "--bootstrap",
        "50",
        "--no-stability",
        "--no-sanity",
        "--no-figures",
    ]
    result = CliRunner().invoke(app, [*options, "--json"])
    assert result.exit_code == 0, result.output
    printed = _no_nan(result.stdout[result.stdout.index("{") :])
    assert printed["format"] == "cxrlens-xai/1" and printed["files"]["figures"] == {}
    tables = CliRunner().invoke(app, [*options, "--images-max", "2"])
    assert tables.exit_code == 0, tables.output
    assert "lung_share" in tables.stdout and "Measured" in tables.stdout
    bad = CliRunner().invoke(app, ["--run", str(run_dir), "--steps", "1"])
    assert isinstance(bad.exception, ConfigError)
