import numpy as np
import pytest
from sklearn.metrics import f1_score

from cxrlens.errors import ConfigError, RunError
from cxrlens.evaluate.thresholds import best_f1_threshold, parse_threshold, tune_thresholds
from tests.evaluate.synthetic import evaluate, rewrite_predictions, synthetic_run


def test_parse_threshold():
    assert parse_threshold(0.5) == ("fixed", 0.5)
    assert parse_threshold("0.51") == ("fixed", 0.51)
    assert parse_threshold("fixed") == ("fixed", 0.5)
    assert parse_threshold("Tuned") == ("tuned", 0.5)
    for bad in ("best", 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="threshold"):
            parse_threshold(bad)


def test_tuned_threshold_improves_validation_f1():
    truth = np.array([0, 0, 1, 1, 1, 0])
    probs = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.05])  # positives all below 0.5
    t = best_f1_threshold(truth, probs)
    assert t == pytest.approx(0.25)  # midpoint between the last negative and the first positive
    assert f1_score(truth, probs >= t) == 1.0
    assert f1_score(truth, probs >= 0.5, zero_division=0) == 0.0


def test_ties_go_to_the_threshold_closest_to_half():
    # all-positive (F1 2/3) ties with "only 0.95 positive" (F1 2/3); 0.5 lies in the latter interval
    truth = np.array([1, 0, 0, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.95])
    assert best_f1_threshold(truth, probs) == 0.5
    # separable above 0.5: 0.5 itself is optimal and kept
    assert best_f1_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.5


def test_no_positive_keeps_the_default():
    assert best_f1_threshold(np.zeros(4), np.array([0.9, 0.8, 0.1, 0.6])) == 0.5
    assert best_f1_threshold(np.zeros(0), np.zeros(0)) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_tuned_f1_is_the_best_achievable(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((40, 3)) < 0.3).astype(int)
    probs = np.round(np.clip(0.3 * truth + rng.random((40, 3)) * 0.7, 0, 1), 2)  # ties among probabilities
    thresholds = tune_thresholds(truth, probs)
    for j in range(3):
        best = max(f1_score(truth[:, j], probs[:, j] >= t, zero_division=0) for t in np.unique(probs[:, j]))
        ours = f1_score(truth[:, j], probs[:, j] >= thresholds[j], zero_division=0)
        assert ours == pytest.approx(best)
        assert ours >= f1_score(truth[:, j], probs[:, j] >= 0.5, zero_division=0)


def test_tuned_thresholds_look_at_val_rows_only(tmp_path):
    run = synthetic_run(tmp_path / "run", models=("resnet18", "resnet34"))
    before = evaluate(run, threshold="tuned")

    def scramble_test(row: dict[str, str]) -> None:
        if row["subset"] == "test":
            for label in ("COVID-19", "Pneumonia", "No Finding"):
                row[label] = "0.99" if float(row[label]) < 0.5 else "0.01"

    rewrite_predictions(run, scramble_test)
    after = evaluate(run, threshold="tuned")
    for name in ("resnet18", "resnet34", "ensemble-mean"):
        for f_before, f_after in zip(before.entries[name].folds, after.entries[name].folds, strict=True):
            assert f_before.thresholds == f_after.thresholds
    assert (
        after.entries["resnet18"].summary["micro"]["f1"]["mean"]
        < before.entries["resnet18"].summary["micro"]["f1"]["mean"]
    )
    thresholds = before.entries["resnet18"].folds[0].thresholds
    assert thresholds is not None and any(t != 0.5 for t in thresholds)
    assert before.entries["ensemble-vote"].folds[0].thresholds is None


def test_tuned_thresholds_raise_without_val_rows(tmp_path):
    run = synthetic_run(tmp_path / "run", models=("resnet18",))
    rewrite_predictions(run, lambda row: row.update(subset="test") if row["subset"] == "val" else None)
    with pytest.raises(RunError, match=r"predictions\.csv: model 'resnet18' fold 0 has no val rows"):
        evaluate(run, threshold="tuned")
