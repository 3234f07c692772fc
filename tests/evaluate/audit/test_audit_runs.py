"""The audit on trained runs: a label that equals the source is flagged in the data, the behaviour and the
features; a label independent of the source is not flagged at all. Also the files, the CLI and a run that is
not trained yet."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cxrlens.cli import options
from cxrlens.cli.audit import audit_cmd
from cxrlens.config import AuditConfig, load_run_config
from cxrlens.evaluate.audit.runner import AuditResult, run_audit
from cxrlens.fileio import json_ready
from cxrlens.run import create_run, open_run
from tests.evaluate.audit.synthetic import LABELS, make_data, trained_run

pytestmark = pytest.mark.slow

SMALL = AuditConfig(tcav_images=6, tcav_repeats=3, probe_folds=3)


@pytest.fixture(scope="module")
def confounded(tmp_path_factory):
    run_dir = trained_run(tmp_path_factory.mktemp("confounded"), "confounded")
    seen: list[int] = []
    result = run_audit(open_run(run_dir), SMALL, progress=seen.append)
    return run_dir, result, seen


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    run_dir = trained_run(tmp_path_factory.mktemp("balanced"), "balanced")
    return run_dir, run_audit(open_run(run_dir), SMALL)


def test_label_equal_to_source_is_flagged_everywhere(confounded):
    _, result, seen = confounded
    source = result.to_dict()["columns"]["source"]
    covid = source["labels"]["COVID-19"]
    # in the data
    assert covid["counts"] == {"cohen": 30, "kermany": 0} and source["images"] == {"cohen": 30, "kermany": 30}
    assert covid["confounded"] and covid["one_column_auroc"] == 1.0 and covid["cramers_v"] == pytest.approx(1.0)
    assert covid["sentence"] == "COVID-19: 100 % of positives from cohen, which holds 50 % of the images"
    # in the behaviour: the model learnt the mark, but no source has positives and negatives to check it within
    assert covid["pooled_auroc"] >= 0.9
    assert all(auc is None or auc <= 0.6 for auc in covid["within_auroc"].values())
    assert covid["behaviour_flag"] and "cannot be told apart from the source" in covid["behaviour_sentence"]
    # in the representation: the source is plain in the features, and the COVID-19 logit follows cohen
    assert source["probe_auroc"]["tiny"] >= 0.8
    assert source["tcav"]["tiny"]["COVID-19"]["cohen"] > source["tcav"]["tiny"]["COVID-19"]["kermany"]
    detail = source["tcav_detail"]["tiny"]
    assert detail["fold"] == 0 and detail["layer"] == "backbone.bn2"  # the last block but one
    assert {"score", "scores", "random_score", "p_value", "significant"} <= set(detail["labels"]["COVID-19"]["cohen"])
    flags = result.flags
    assert covid["confounded_sentence"] in flags and covid["behaviour_sentence"] in flags
    assert any(f.startswith("tiny's features tell the source apart") for f in flags)
    assert result.checked.endswith(f"{len(flags)} finding(s) flagged.")
    assert result.to_dict()["skipped"] == {"view": "every image with a view recorded has the same one (PA)"}
    assert sum(seen) >= 60  # every test image's features, then the TCAV inputs


def test_audit_files(confounded):
    run_dir, result, _ = confounded
    audit = run_dir / "audit"
    assert json.loads((audit / "metrics.json").read_text(encoding="utf-8")) == json_ready(result.to_dict())
    assert sorted(result.to_dict()["files"]) == sorted(
        ["tables/summary.md", "tables/label_checks.csv", "tables/values.csv", "tables/probe.csv", "tables/tcav.csv",
         "figures/confounding.png", "metrics.json"]
    )  # fmt: skip
    assert all((audit / name).is_file() for name in result.to_dict()["files"])
    summary = (audit / "tables" / "summary.md").read_text(encoding="utf-8")
    assert result.flags[0] in summary and "| source | COVID-19 | 30 | cohen (100 %) | 1.00 |" in summary
    assert (audit / "cav" / "tiny-fold0").is_dir() and any((audit / "cav" / "tiny-fold0").glob("*.pkl"))
    assert not list(audit.rglob("*.tmp"))


def test_label_independent_of_source_flags_nothing(balanced):
    _, result = balanced
    metrics = result.to_dict()
    for column in ("source", "sex", "age"):
        for label in LABELS:
            row = metrics["columns"][column]["labels"][label]
            assert not row["confounded"] and row["confounded_sentence"] is None, (column, label)
            assert not row["behaviour_flag"], (column, label)
    covid = metrics["columns"]["source"]["labels"]["COVID-19"]
    assert covid["counts"] == {"cohen": 15, "kermany": 15} and covid["one_column_auroc"] == 0.5
    assert covid["cramers_v"] == pytest.approx(0.0)
    assert all(auc is not None and auc >= 0.8 for auc in covid["within_auroc"].values())
    assert result.flags == [] and result.checked.endswith("nothing was flagged.")


def test_cli_prints_json_and_a_table(confounded, monkeypatch):
    run_dir, _, _ = confounded
    monkeypatch.setitem(options.CONFIG_KEYS, "audit_by", "audit.by")  # the wiring cli/options.py will get
    app = typer.Typer()
    app.command("audit")(audit_cmd)
    app.command("noop")(lambda: None)  # two commands: typer keeps the sub-command name
    runner = CliRunner()
    args = ["audit", "--run", str(run_dir), "--set", "audit.tcav=false", "--set", "audit.probe_folds=3"]
    result = runner.invoke(app, [*args, "--by", "source,sex", "--by", "age", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["columns"]) == ["source", "sex", "age"] and data["settings"]["by"] == ["source", "sex", "age"]
    assert data["columns"]["source"]["tcav"] is None and data["columns"]["source"]["labels"]["COVID-19"]["confounded"]
    result = runner.invoke(app, [*args, "--by", "source"])
    assert result.exit_code == 0, result.output
    assert "| source | COVID-19 |" in result.stdout and "Flags:" in result.stdout
    assert "COVID-19 is confounded with source" in result.stdout


def test_audit_of_an_untrained_run_checks_the_data(tmp_path):
    data = make_data(tmp_path / "data", "confounded", n=24)
    overrides = {"data.sources": [str(data)], "data.preprocess.size": 48, "data.cache_dir": str(tmp_path / "cache"),
                 "data.labels.names": LABELS, "cv.split.folds": 3}  # fmt: skip
    create_run(load_run_config(None, overrides), tmp_path / "run")
    result = run_audit(open_run(tmp_path / "run"), AuditConfig(by=["source,age"]))
    assert isinstance(result, AuditResult)
    metrics = result.to_dict()
    assert list(metrics["columns"]) == ["source", "age"] and metrics["models"] == []
    covid = metrics["columns"]["source"]["labels"]["COVID-19"]
    assert covid["confounded"] and covid["pooled_auroc"] is None and not covid["behaviour_flag"]
    assert metrics["columns"]["source"]["probe_auroc"] is None and metrics["columns"]["source"]["tcav"] is None
    assert any("behaviour is not checked" in n for n in metrics["notes"])
    assert any("No trained model" in n for n in metrics["notes"])
    assert result.flags and all("confounded with" in f for f in result.flags)
