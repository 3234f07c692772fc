import json

import pytest

from cxrlens.errors import ConfigError, RunError
from cxrlens.evaluate import write_evaluation
from cxrlens.run import open_run
from tests.evaluate.synthetic import LABELS, evaluate, read_csv, synthetic_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("eval") / "run", models=("resnet18", "resnet34"), n_folds=2)


def test_evaluate_run_covers_models_and_ensembles(run_dir):
    result = evaluate(run_dir)
    assert list(result.entries) == ["resnet18", "resnet34", "ensemble-mean", "ensemble-vote"]
    assert result.models == ["resnet18", "resnet34"] and result.ensemble_members == ["resnet18", "resnet34"]
    entry = result.entries["resnet18"]
    assert [f.fold for f in entry.folds] == [0, 1]
    assert entry.summary["n_folds"] == 2
    assert "MERS" in entry.summary["non_evaluable"]
    assert entry.summary["per_label"]["MERS"]["evaluable"] is False
    assert entry.summary["per_label"]["COVID-19"]["evaluable"] is True
    assert 0.6 < entry.summary["micro"]["f1"]["mean"] <= 1.0
    assert entry.pooled is not None and entry.pooled.y_true.shape == (48, len(LABELS))
    data = json.loads(result.to_json())  # strict JSON: NaN became null
    assert data["threshold"] == {"mode": "fixed", "value": 0.5}
    assert data["conventions"]["std"].startswith("sample std")
    assert data["entries"]["resnet18"]["folds"][0]["per_label"]["MERS"]["evaluable"] is False


def test_model_selection_and_no_ensembles(run_dir):
    result = evaluate(run_dir, models=["resnet34"])
    assert list(result.entries) == ["resnet34"]
    assert any("at least two models" in n for n in result.notes)
    result = evaluate(run_dir, ensembles=False)
    assert list(result.entries) == ["resnet18", "resnet34"] and result.notes == []
    with pytest.raises(RunError, match=r"predictions\.csv: no test predictions for model\(s\) \['vgg'\]"):
        evaluate(run_dir, models=["vgg"])


def test_bad_options(run_dir):
    with pytest.raises(ConfigError, match="min_support"):
        evaluate(run_dir, min_support=0)
    with pytest.raises(ConfigError, match="threshold"):
        evaluate(run_dir, threshold="magic")


def test_min_support_changes_what_is_evaluable(run_dir):
    strict = evaluate(run_dir, min_support=1000, ensembles=False)
    assert strict.entries["resnet18"].summary["non_evaluable"] == LABELS
    assert strict.entries["resnet18"].summary["micro"]["f1"]["n"] == 0  # all NaN: nothing evaluable
    assert strict.entries["resnet18"].summary["micro_all"]["f1"]["n"] == 2


def test_write_evaluation(run_dir):
    result = evaluate(run_dir, threshold="tuned")
    paths = write_evaluation(open_run(run_dir), result)
    out = run_dir / "evaluation"
    names = {p.relative_to(out).as_posix() for p in paths}
    assert {"metrics.json", "thresholds.json", "table2.md", "table2.csv", "per_label.csv"} <= names
    assert "figures/bars_COVID-19.png" in names and "figures/roc_ensemble-vote.png" in names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries
    data = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {"format", "label_names", "threshold", "min_support", "conventions", "notes", "entries"} <= set(data)
    assert data["threshold"]["mode"] == "tuned"
    table = read_csv(out / "table2.csv")
    assert [r["model"] for r in table] == list(result.entries)
    assert {"micro_precision_mean", "micro_f1_std", "macro_f1_mean", "micro_all_f1_mean"} <= set(table[0])
    per_label = read_csv(out / "per_label.csv")
    assert len(per_label) == len(result.entries) * len(LABELS)
    assert {"model", "label", "support", "evaluable", "f1_mean", "f1_std", "f1_folds", "roc_auc_mean"} <= set(
        per_label[0]
    )
    mers = next(r for r in per_label if r["label"] == "MERS")
    assert mers["evaluable"] == "False"
    markdown = (out / "table2.md").read_text(encoding="utf-8")
    body = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [line.split("|")[1].strip() for line in body] == list(result.entries)
