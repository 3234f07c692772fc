"""`evaluate-explanations` end to end on a tiny trained and explained run: files, shape, reuse, notes, CLI."""

import csv
import dataclasses
import json
import math

import pytest
import typer
from typer.testing import CliRunner

from cxrlens.config import XaiConfig, load_run_config
from cxrlens.errors import ConfigError, RunError
from cxrlens.explain.runner import run_explain
from cxrlens.fileio import read_json
from cxrlens.run import create_run, open_run
from cxrlens.run.maps import MapStore
from cxrlens.train.runner import run_cv
from cxrlens.xai import measures as xm
from cxrlens.xai.context import Stage
from cxrlens.xai.scores import METRICS, RANKED
from cxrlens.xai.settings import DEFAULT_MEMORY_GIB, Settings
from cxrlens.xai.study import FORMAT, XaiResult, evaluate_explanations

METHODS = ["saliency", "gradcam", "occlusion"]
PARAMS = {"occlusion": {"window": 12, "stride": 12}}
FAST = XaiConfig(steps=4, bootstrap=200, sanity_images=1, stability_images=1, sanity_steps=3, n_random=2)
TOP_KEYS = [
    "format",
    "settings",
    "n_maps",
    "notes",
    "metrics",
    "sanity",
    "ranking",
    "shortcut",
    "no_positive_maps",
    "files",
]


def study_config(root, **extra):
    """The tiny model on the bundled sample (48 px), one epoch, explanations without figures."""
    overrides = {
        "data.sources": ["@sample"],
        "data.preprocess.size": 48,
        "data.cache_dir": str(root / "cache"),
        "models.names": ["tiny"],
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.patience": 0,
        "cv.split.folds": 3,
        "explain.followup_images": 0,
        "explain.figures": False,
        **extra,
    }
    return load_run_config(None, overrides)


def _no_nan(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def _per_map(run_dir) -> list[dict[str, str]]:
    with open_run(run_dir).layout.xai_per_map.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("xai")
    cfg = study_config(root, **{"cv.folds": None, "explain.n_images": 3, "explain.methods": METHODS})
    cfg = cfg.model_copy(update={"explain": cfg.explain.model_copy(update={"params": PARAMS})})
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    run_explain(open_run(root / "run"), cfg.explain, enable_progress_bar=False)
    return root / "run"


@pytest.fixture(scope="module")
def result(run_dir):
    return evaluate_explanations(open_run(run_dir), FAST)


def test_the_result_is_frozen_and_is_what_metrics_json_holds(run_dir, result):
    assert isinstance(result, XaiResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.n_maps = 0  # type: ignore[misc]
    layout = open_run(run_dir).layout
    written = _no_nan(layout.xai_metrics.read_text(encoding="utf-8"))
    assert written == result.to_dict() == json.loads(json.dumps(result.to_dict()))
    assert list(written) == TOP_KEYS
    assert written["format"] == FORMAT == "cxrlens-xai/2"
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
    assert written["settings"]["memory_gib"] == DEFAULT_MEMORY_GIB  # the config left it open
    assert list(written["settings"]["ranking_metrics"]) == list(RANKED)
    assert "not evaluable" in written["settings"]["relevance"]


def test_every_map_of_the_index_is_measured(run_dir, result):
    entries = MapStore(open_run(run_dir).layout.explanations.root).read_index()
    assert result.n_maps == len(entries)
    rows = _per_map(run_dir)
    assert len(rows) == len(entries)
    for row in rows:
        assert float(row["deletion_auc"]) >= 0 and float(row["insertion_auc"]) >= 0
        gain = float(row["random_deletion_auc"]) - float(row["deletion_auc"])
        assert float(row["deletion_gain"]) == pytest.approx(gain)
        # relative to p(x): the label's probability on the unmodified image, as `explain` recorded it
        probability = float(row["probability"])
        assert float(row["deletion_gain_rel"]) == pytest.approx(gain / probability, rel=1e-4, abs=1e-9)
        insertion = float(row["insertion_gain"]) / probability
        assert float(row["insertion_gain_rel"]) == pytest.approx(insertion, rel=1e-4, abs=1e-9)
        if row["border_share"]:  # empty (not evaluable) for a map with no positive value
            assert 0 <= float(row["border_share"]) <= 1 and 0 <= float(row["padding_share"]) <= 1
    masked = [r for r in rows if r["lung_mask"] == "True" and r["lung_share"]]
    assert masked, "the sample's lung-masked images are picked first"
    for row in masked:
        share = float(row["lung_share"])
        assert 0 <= share <= 1 and float(row["outside_lung_share"]) == pytest.approx(1 - share)
        assert 0 < float(row["lung_area_share"]) < 1


def test_maps_with_no_positive_value_are_counted_and_not_evaluated(run_dir, result):
    rows = _per_map(run_dir)
    counted: dict[str, dict[str, int]] = {}
    for row in rows:
        cell = counted.setdefault(row["model"], {}).setdefault(row["method"], 0)
        counted[row["model"]][row["method"]] = cell + (row["has_positive"] == "False")
        if row["has_positive"] == "False":
            assert not any(row[k] for k in ("lung_share", "pointing_game", "border_share", "padding_share"))
    assert result.no_positive_maps == counted
    total = sum(n for cells in counted.values() for n in cells.values())
    notes = [n for n in result.notes if "no positive attribution" in n]
    assert (len(notes) == 1 and notes[0].startswith(f"{total} of {len(rows)} map(s)")) if total else not notes
    table = open_run(run_dir).layout.xai_tables / "no_positive.csv"
    with table.open(encoding="utf-8") as handle:
        listed = {(r["model"], r["method"]): int(r["maps"]) for r in csv.DictReader(handle)}
    assert listed == {(model, method): n for model, cells in counted.items() for method, n in cells.items()}


def test_tables_rows_and_files(run_dir, result):
    metrics = result.metrics
    for name in (
        "deletion_auc",
        "insertion_gain",
        "deletion_gain_rel",
        "lung_share",
        "pointing_game",
        "fold_stability",
    ):
        assert metrics[name]["rows"], name
        assert {r["model"] for r in metrics[name]["rows"]} == {"tiny", "ensemble"}
    sanity_models = {r["model"] for r in metrics["randomisation_spearman"]["rows"]}
    assert sanity_models == {"tiny"}
    assert any("ensemble is skipped" in note for note in result.notes)
    sanity = result.sanity["rows"]
    assert {r["method"] for r in sanity} == set(METHODS)
    for row in sanity:
        assert row["layers"][0] == "backbone.fc" and row["layers"][-1] == "backbone.conv1"
        assert len(row["spearman"]) == len(row["layers"]) == 3
    layout = open_run(run_dir).layout
    for name in METRICS:
        assert result.files["tables"][name] == {"md": f"tables/{name}.md", "csv": f"tables/{name}.csv"}
        assert (layout.xai_tables / f"{name}.md").is_file() and (layout.xai_tables / f"{name}.csv").is_file()
    assert "| model |" in (layout.xai_tables / "lung_share.md").read_text(encoding="utf-8")
    figures = result.files["figures"]
    assert {"curves", "bars_deletion_gain", "bars_deletion_gain_rel", "bars_insertion_gain_rel"} <= set(figures)
    for path in figures.values():
        assert (layout.xai_dir / path).stat().st_size > 0
    assert layout.xai_maps.maps_dir.is_dir(), "the other folds' maps are stored for reuse"
    assert (layout.xai_dir / result.files["maps"]) == layout.xai_maps.maps_dir
    for key in ("metrics", "per_map", "cache"):
        assert (layout.xai_dir / result.files[key]).is_file()


def test_shortcut_audit_and_ranking(run_dir, result):
    rows = {r["model"]: r for r in result.shortcut["rows"]}
    assert set(rows) == {"tiny", "ensemble"}
    for row in rows.values():
        assert 0 <= row["outside_lung_share"] <= 1 and 0 <= row["padding_share"] <= 1
    top = result.shortcut["top_images"]
    assert top and len({(t["model"], t["image"]) for t in top}) == len(top)
    for item in top:
        assert (run_dir / item["overlay"]).is_file()
        assert math.isfinite(item["outside_lung_share"])
    ranked = result.ranking["methods"]
    assert {r["method"] for r in ranked} == set(METHODS)
    assert [r["rank"] for r in ranked] == sorted(r["rank"] for r in ranked) and ranked[0]["rank"] == 1
    assert all(0 <= r["score"] <= 1 for r in ranked)
    assert [r["model"] for r in result.ranking["models"]][:1] in (["tiny"], ["ensemble"])
    assert "deletion_gain_rel" in result.ranking["verdict"]


def test_rerun_reuses_everything_and_gives_the_same_numbers(run_dir, result, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(Stage, "attribute", refuse)
    monkeypatch.setattr(xm, "pixel_curves", refuse)
    seen: list[int] = []
    again = evaluate_explanations(open_run(run_dir), FAST, progress=seen.append)
    assert again.metrics == result.metrics and again.no_positive_maps == result.no_positive_maps
    assert again.sanity == result.sanity and again.ranking == result.ranking
    assert sum(seen) >= result.n_maps


def test_fewer_images_and_switches(run_dir):
    fewer = FAST.model_copy(update={"images_max": 1, "sanity": False, "stability": False, "figures": False})
    smaller = evaluate_explanations(open_run(run_dir), fewer)
    assert any("1 of 3 explained images" in note for note in smaller.notes)
    assert not smaller.sanity["rows"] and not smaller.metrics["fold_stability"]["rows"]
    assert any("--no-sanity" in note for note in smaller.notes)
    assert smaller.files["figures"] == {}
    with pytest.raises(ConfigError, match="steps"):
        load_run_config(None, {"xai.steps": 1})
    with pytest.raises(ConfigError, match="insertion_start"):
        load_run_config(None, {"xai.insertion_start": "grey"})
    assert Settings.of(FAST.model_copy(update={"memory_gib": 2.0}), 48).budget == 2.0 * 1024**3


def test_one_fold_and_no_masks_are_reported_as_notes(tmp_path):
    cfg = study_config(tmp_path, **{"cv.folds": [0]})
    study = create_run(cfg, tmp_path / "run")
    run_cv(study, enable_progress_bar=False)
    with pytest.raises(RunError, match="no explanations yet"):
        evaluate_explanations(open_run(tmp_path / "run"), FAST)
    unmasked = sorted(r.filename for r in study.dataset.records if r.lung_mask is None)[0]
    explain = cfg.explain.model_copy(update={"images": [unmasked], "methods": ["saliency"], "models": ["tiny"]})
    run_explain(open_run(tmp_path / "run"), explain, enable_progress_bar=False)
    result = evaluate_explanations(open_run(tmp_path / "run"), FAST.model_copy(update={"sanity": False}))
    assert any("only one fold is trained" in note for note in result.notes)
    assert any("none of the evaluated images has a lung mask" in note for note in result.notes)
    assert not result.metrics["lung_share"]["rows"] and not result.metrics["pointing_game"]["rows"]
    assert result.metrics["deletion_auc"]["rows"][0]["n"] == result.n_maps
    shortcut = result.to_dict()["shortcut"]["rows"][0]
    assert shortcut["outside_lung_share"] is None and shortcut["padding_share"] is not None


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
    assert printed["format"] == FORMAT and printed["files"]["figures"] == {}
    assert printed == read_json(open_run(run_dir).layout.xai_metrics)
    tables = CliRunner().invoke(app, [*options, "--images-max", "2"])
    assert tables.exit_code == 0, tables.output
    assert "lung_share" in tables.stdout and "deletion_gain_rel" in tables.stdout and "Measured" in tables.stdout
    bad = CliRunner().invoke(app, ["--run", str(run_dir), "--steps", "1"])
    assert isinstance(bad.exception, ConfigError)
