import json

import numpy as np
import pytest

from cxrlens.errors import RunError
from cxrlens.run import open_run
from cxrlens.run.predictions import RunData
from tests.evaluate.synthetic import rewrite_predictions, synthetic_run, write_run


def load_run(path) -> RunData:
    return open_run(path).predictions()


LABELS = ["Viral Pneumonia", "COVID-19"]


def small_run(tmp_path, probs=(0.2, 0.9)):
    labels = {"a.png": [1, 1], "b.png": [0, 0]}
    rows = [
        ("a.png", 0, "resnet18", "test", probs),
        ("b.png", 0, "resnet18", "test", (0.1, 0.1)),
        ("b.png", 1, "resnet18", "val", (0.1, 0.1)),
    ]
    return write_run(tmp_path / "run", LABELS, labels, rows)


def test_reads_a_run_with_spaces_in_label_names(tmp_path):
    run = load_run(small_run(tmp_path))
    assert run.label_names == ("Viral Pneumonia", "COVID-19")
    assert run.models() == ["resnet18"]
    assert run.folds("resnet18") == [0]
    test = run.get("resnet18", 0, "test")
    assert test is not None and test.filenames == ("a.png", "b.png")
    assert np.allclose(test.probs, [[0.2, 0.9], [0.1, 0.1]])
    assert test.truth.tolist() == [[1, 1], [0, 0]]
    assert run.get("resnet18", 1, "val") is not None and run.get("resnet18", 1, "test") is None


@pytest.mark.parametrize("name", ["labels.csv", "predictions.csv"])
def test_missing_file(tmp_path, name):
    run = small_run(tmp_path)
    (run / name).unlink()
    with pytest.raises(RunError, match=rf"{name}: file not found"):
        load_run(run)


def test_missing_run_json_or_folder(tmp_path):
    run = small_run(tmp_path)
    (run / "run.json").unlink()
    with pytest.raises(RunError, match=r"not a cxrlens run folder \(no run\.json\)"):
        load_run(run)
    with pytest.raises(RunError, match="run folder not found"):
        load_run(tmp_path / "nope")


def test_bad_run_json(tmp_path):
    run = small_run(tmp_path)
    (run / "run.json").write_text("{", encoding="utf-8")
    with pytest.raises(RunError, match=r"run\.json: damaged JSON"):
        load_run(run)
    (run / "run.json").write_text(json.dumps({"labels": []}), encoding="utf-8")
    with pytest.raises(RunError, match=r"run\.json: 'label_names'"):
        load_run(run)


def test_missing_label_column(tmp_path):
    run = small_run(tmp_path)
    (run / "run.json").write_text(json.dumps({"label_names": [*LABELS, "No Finding"]}), encoding="utf-8")
    with pytest.raises(RunError, match=r"labels\.csv: missing column\(s\) 'No Finding'"):
        load_run(run)


def test_missing_prediction_column(tmp_path):
    run = small_run(tmp_path)
    text = (run / "predictions.csv").read_text(encoding="utf-8").replace("subset", "split")
    (run / "predictions.csv").write_text(text, encoding="utf-8")
    with pytest.raises(RunError, match=r"predictions\.csv: missing column\(s\) 'subset'"):
        load_run(run)


def test_unknown_filename(tmp_path):
    run = small_run(tmp_path)
    rewrite_predictions(run, lambda row: row.update(filename="zzz.png", patient_id="p-zzz.png"))
    with pytest.raises(RunError, match=r"predictions\.csv: line 2: filename 'zzz\.png' is not in the run's labels"):
        load_run(run)


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, r"outside \[0, 1\]"), (-0.1, r"outside \[0, 1\]"), (float("nan"), "is NaN")],
)
def test_bad_probability(tmp_path, value, message):
    run = small_run(tmp_path, probs=(0.2, value))
    with pytest.raises(RunError, match=rf"predictions\.csv: line 2: probability of 'COVID-19' .*{message}"):
        load_run(run)


def test_probability_not_a_number(tmp_path):
    run = small_run(tmp_path)
    rewrite_predictions(run, lambda row: row.update({"Viral Pneumonia": "high"}) if row["subset"] == "val" else None)
    with pytest.raises(RunError, match=r"predictions\.csv: line 4: .*'high', not a number"):
        load_run(run)


def test_bad_ground_truth(tmp_path):
    run = small_run(tmp_path)
    text = (run / "labels.csv").read_text(encoding="utf-8").replace("b.png,p-b.png,0,0", "b.png,p-b.png,0,2")
    (run / "labels.csv").write_text(text, encoding="utf-8")
    with pytest.raises(RunError, match=r"labels\.csv: line 3: 'COVID-19' is '2', expected 0 or 1"):
        load_run(run)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subset", "train", "subset 'train' must be one of test, val"),
        ("fold", "one", "fold 'one' is not an integer"),
        ("model", "", "empty model name"),
        ("patient_id", "someone", "patient_id 'someone'"),
    ],
)
def test_bad_prediction_fields(tmp_path, field, value, message):
    run = small_run(tmp_path)
    rewrite_predictions(run, lambda row: row.update({field: value}))
    with pytest.raises(RunError, match=rf"predictions\.csv: line 2: {message}"):
        load_run(run)


def test_duplicate_and_leaking_rows(tmp_path):
    run = small_run(tmp_path)
    rewrite_predictions(run, lambda row: row.update(fold="0", subset="test"))
    with pytest.raises(RunError, match=r"predictions\.csv: line 4: 'b\.png' appears twice"):
        load_run(run)
    run = small_run(tmp_path)
    rewrite_predictions(run, lambda row: row.update(fold="0"))
    with pytest.raises(RunError, match=r"predictions\.csv: 'b\.png' is in both test and val"):
        load_run(run)


def test_wrong_field_count(tmp_path):
    run = small_run(tmp_path)
    with (run / "predictions.csv").open("a", encoding="utf-8") as handle:
        handle.write("a.png,p-a.png,3\n")
    with pytest.raises(RunError, match=r"predictions\.csv: line 5: expected 7 fields, found 3"):
        load_run(run)


def test_synthetic_run_loads(tmp_path):
    run = load_run(synthetic_run(tmp_path / "run", n_folds=2))
    assert run.models() == ["densenet161", "resnet18", "resnet34"]
    assert run.folds("resnet18") == [0, 1]
    assert len(run.get("resnet18", 1, "test")) == 24


def test_predictions_keep_full_precision(tmp_path):
    """Rounding to 6 decimals (the old format) made confident probabilities 0 and tied: AUC changed."""
    from sklearn.metrics import roc_auc_score

    from cxrlens.data.records import ImageRecord
    from cxrlens.run.predictions import prediction_rows, read_labels, read_predictions, write_labels, write_predictions

    rng = np.random.default_rng(0)
    n = 40
    truth = (np.arange(n) % 4 == 0).astype(int)
    probs = np.where(truth == 1, 10 ** rng.uniform(-7, -6, n), 10 ** rng.uniform(-9, -6.5, n))  # all < 1e-6
    probs[-1] = 1 - 1e-12
    records = [
        ImageRecord(f"i{i}.png", tmp_path / f"i{i}.png", f"p{i}", "x", frozenset({"COVID-19"} if t else set()))
        for i, t in enumerate(truth)
    ]
    from cxrlens.data.labels import LabelSpace

    space = LabelSpace(("COVID-19",))
    write_labels(tmp_path / "labels.csv", records, space)
    write_predictions(tmp_path / "p.csv", prediction_rows(records, probs[:, None], 0, "m", "test"), space.names)
    block = read_predictions(tmp_path / "p.csv", space.names, read_labels(tmp_path / "labels.csv", space.names))
    back = block[("m", 0, "test")].probs[:, 0]
    assert back.tolist() == probs.tolist()  # exact round trip, no ties made up
    assert roc_auc_score(truth, back) == roc_auc_score(truth, probs)
    rounded = np.round(probs, 6)
    assert roc_auc_score(truth, rounded) != roc_auc_score(truth, probs)  # what the old 6-decimal format did
