import csv
import io

import pytest

from cxrlens.evaluate import markdown_table
from cxrlens.evaluate.tables import per_label_csv, table2_csv
from tests.evaluate.synthetic import LABELS, evaluate, synthetic_run


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    run = synthetic_run(tmp_path_factory.mktemp("tables") / "run", models=("resnet18", "densenet161"), n_folds=2)
    return evaluate(run)


def test_markdown_table_has_one_row_per_entry(result):
    text = markdown_table(result)
    lines = text.splitlines()
    assert lines[0].startswith("| model | folds | precision | recall | F1 | specificity | macro F1")
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert [r.split("|")[1].strip() for r in rows] == ["densenet161", "resnet18", "ensemble-mean", "ensemble-vote"]
    assert all(r.count("±") == 6 for r in rows)
    assert "ddof=1" in text and "MERS" in text


def test_table2_csv(result):
    rows = list(csv.DictReader(io.StringIO(table2_csv(result))))
    assert len(rows) == 4
    entry = result.entries["resnet18"].summary
    assert float(rows[1]["micro_f1_mean"]) == pytest.approx(entry["micro"]["f1"]["mean"])
    assert rows[1]["kind"] == "model" and rows[2]["kind"] == "ensemble-mean"
    assert "MERS" in rows[0]["non_evaluable"].split(";")


def test_per_label_csv(result):
    rows = list(csv.DictReader(io.StringIO(per_label_csv(result))))
    assert len(rows) == 4 * len(LABELS)
    covid = next(r for r in rows if r["model"] == "resnet18" and r["label"] == "COVID-19")
    stats = result.entries["resnet18"].summary["per_label"]["COVID-19"]
    assert int(covid["support"]) == stats["support"] and covid["evaluable"] == "True"
    assert float(covid["f1_mean"]) == pytest.approx(stats["f1"]["mean"])
    assert int(covid["f1_folds"]) == stats["f1"]["n"] == 2
    mers = next(r for r in rows if r["model"] == "resnet18" and r["label"] == "MERS")
    assert mers["evaluable"] == "False"
