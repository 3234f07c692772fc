import math

import numpy as np
import pytest
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support, roc_auc_score

from cxrlens.evaluate.metrics import (
    binarize,
    evaluable_mask,
    fold_metrics,
    label_prior_baseline,
    mean_std,
    summarize_folds,
)

NAMES = ["A", "B", "C", "D"]


def random_case(seed: int, n: int = 80, labels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, labels)) < 0.4).astype(int)
    probs = np.clip(0.5 * truth + rng.random((n, labels)) * 0.7, 0, 1)
    return truth, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed):
    truth, probs = random_case(seed)
    pred = (probs >= 0.5).astype(int)
    m = fold_metrics(truth, probs, NAMES, 0.5, min_support=1)
    assert m.non_evaluable == []
    for average, ours in (("micro", m.micro), ("macro", m.macro)):
        p, r, f, _ = precision_recall_fscore_support(truth, pred, average=average, zero_division=0)
        assert ours["precision"] == pytest.approx(p)
        assert ours["recall"] == pytest.approx(r)
        assert ours["f1"] == pytest.approx(f)
    p, r, f, support = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    mcm = multilabel_confusion_matrix(truth, pred)  # [[tn, fp], [fn, tp]] per label
    spec = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
    micro_spec = mcm[:, 0, 0].sum() / (mcm[:, 0, 0].sum() + mcm[:, 0, 1].sum())
    assert m.micro["specificity"] == pytest.approx(micro_spec)
    assert m.macro["specificity"] == pytest.approx(spec.mean())
    for j, name in enumerate(NAMES):
        row = m.per_label[name]
        assert row["precision"] == pytest.approx(p[j])
        assert row["recall"] == pytest.approx(r[j])
        assert row["f1"] == pytest.approx(f[j])
        assert row["specificity"] == pytest.approx(spec[j])
        assert row["support"] == support[j]
        assert row["roc_auc"] == pytest.approx(roc_auc_score(truth[:, j], probs[:, j]))
    assert m.micro_all == pytest.approx(m.micro)


def test_undefined_per_label_values_are_nan_but_macro_counts_them_as_zero_like_scikit_learn():
    truth = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    probs = np.array([[0.1, 0.9], [0.2, 0.9], [0.3, 0.9], [0.4, 0.9]])  # label A never predicted
    m = fold_metrics(truth, probs, ["A", "B"], 0.5, min_support=1)
    assert math.isnan(m.per_label["A"]["precision"])  # nothing predicted positive: undefined
    assert m.per_label["A"]["f1"] == 0.0 and m.per_label["A"]["recall"] == 0.0  # two positives missed
    p, _, _, _ = precision_recall_fscore_support(truth, probs >= 0.5, average="macro", zero_division=0)
    assert m.macro["precision"] == pytest.approx(p)


def test_a_fold_without_positives_does_not_count_as_zero_in_the_per_label_summary():
    """A label predicted perfectly in the 3 of 5 folds that hold it: F1 1.0 over 3 folds (not 0.6 over 5)."""
    folds = []
    for fold in range(5):
        truth = np.zeros((10, 2), dtype=int)
        truth[:5, 0] = 1
        if fold < 3:
            truth[:2, 1] = 1  # label B has test positives in folds 0-2 only
        probs = truth * 0.9 + 0.05  # perfect decisions at 0.5: B is never predicted where it is absent
        folds.append(fold_metrics(truth, probs, ["A", "B"], 0.5, fold=fold, min_support=1))
    assert math.isnan(folds[4].per_label["B"]["f1"]) and math.isnan(folds[4].per_label["B"]["recall"])
    summary = summarize_folds(folds, ["A", "B"])["per_label"]["B"]
    assert summary["f1"]["mean"] == 1.0 and summary["f1"]["n"] == 3
    assert summary["recall"] == {"mean": 1.0, "std": 0.0, "n": 3}
    assert summary["specificity"]["n"] == 5  # defined in every fold
    assert math.isnan(summary["roc_auc"]["std"]) is False and summary["roc_auc"]["n"] == 3


def test_perfect_predictions_score_one():
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]] * 2)
    m = fold_metrics(truth, truth.astype(float), ["A", "B", "C"], 0.5, min_support=5)
    for group in (m.micro, m.macro, m.micro_all):
        for key in ("precision", "recall", "f1", "specificity"):
            assert group[key] == 1.0
    assert m.macro["roc_auc"] == 1.0


def test_label_below_min_support_is_excluded_and_marked():
    rng = np.random.default_rng(3)
    truth = np.zeros((40, 3), dtype=int)
    truth[:20, 0] = 1
    truth[10:30, 1] = 1
    truth[:2, 2] = 1  # only 2 positives: not evaluable with min_support=5
    probs = np.clip(truth * 0.8 + rng.random(truth.shape) * 0.3, 0, 1)
    probs[:, 2] = 0.0  # and never predicted: F1 0 for that label
    m = fold_metrics(truth, probs, ["A", "B", "Rare"], 0.5, min_support=5)
    assert m.non_evaluable == ["Rare"]
    assert m.per_label["Rare"]["evaluable"] is False and m.per_label["A"]["evaluable"] is True
    assert m.per_label["Rare"]["support"] == 2
    both = fold_metrics(truth[:, :2], probs[:, :2], ["A", "B"], 0.5, min_support=5)
    assert m.macro == pytest.approx(both.macro)
    assert m.micro == pytest.approx(both.micro)
    assert m.micro_all["recall"] < m.micro["recall"]  # the rare label's misses count only in micro_all


def test_label_without_negatives_is_not_evaluable_and_has_no_auc():
    truth = np.array([[1, 1], [1, 0], [1, 1], [1, 0], [1, 1], [1, 0]])
    probs = truth * 0.9
    m = fold_metrics(truth, probs, ["All", "Half"], 0.5, min_support=3)
    assert m.non_evaluable == ["All"]
    assert math.isnan(m.per_label["All"]["roc_auc"])
    assert evaluable_mask(truth, 3).tolist() == [False, True]


def test_no_evaluable_label_gives_nan_averages():
    truth = np.array([[1, 0], [0, 0], [0, 0]])
    m = fold_metrics(truth, truth * 1.0, ["A", "B"], 0.5, min_support=5)
    assert all(math.isnan(v) for v in m.micro.values())
    assert m.micro_all["f1"] == 1.0


def test_hierarchy_consistency_of_predictions():
    names = ["Pneumonia", "Viral Pneumonia", "COVID-19", "No Finding"]
    pred = np.array(
        [
            [1, 1, 1, 0],  # consistent
            [0, 0, 1, 0],  # COVID-19 without Viral Pneumonia
            [0, 1, 0, 0],  # Viral Pneumonia without Pneumonia
            [0, 0, 0, 1],  # consistent
        ]
    )
    truth = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]])
    m = fold_metrics(truth, pred.astype(float), names, 0.5, min_support=1)
    assert m.hierarchy_consistency == 0.5
    m = fold_metrics(truth, truth.astype(float), names, 0.5, min_support=1)
    assert m.hierarchy_consistency == 1.0


def test_explicit_decisions_override_thresholds():
    truth = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.9], [0.8], [0.1], [0.2]])
    m = fold_metrics(truth, scores, ["A"], None, y_pred=truth.astype(bool), min_support=1)
    assert m.micro["f1"] == 1.0 and m.thresholds is None
    assert m.per_label["A"]["roc_auc"] == 0.5


def test_binarize_is_greater_or_equal():
    assert binarize(np.array([[0.5, 0.49]]), 0.5).tolist() == [[True, False]]
    assert binarize(np.array([[0.3, 0.3]]), np.array([0.2, 0.4])).tolist() == [[True, False]]


def test_mean_std_uses_ddof_one():
    s = mean_std([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    one = mean_std([0.7])  # the spread of a single fold is undefined, not 0
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["std"])
    assert mean_std([0.5, float("nan")])["n"] == 1
    assert math.isnan(mean_std([])["mean"])


def test_summarize_folds():
    truth, probs = random_case(0, n=30, labels=2)
    folds = [fold_metrics(truth, probs, ["A", "B"], 0.5, fold=0, min_support=1)]
    truth2 = truth.copy()
    truth2[:, 1] = 0
    truth2[:3, 1] = 1
    folds.append(fold_metrics(truth2, probs, ["A", "B"], 0.5, fold=1, min_support=5))
    s = summarize_folds(folds, ["A", "B"])
    assert s["n_folds"] == 2
    assert s["micro"]["f1"]["mean"] == pytest.approx(np.mean([f.micro["f1"] for f in folds]))
    assert s["micro"]["f1"]["std"] == pytest.approx(np.std([f.micro["f1"] for f in folds], ddof=1))
    assert s["per_label"]["B"]["evaluable_folds"] == 1 and s["per_label"]["B"]["evaluable"] is False
    assert s["per_label"]["B"]["support"] == int(truth[:, 1].sum()) + 3
    assert s["non_evaluable"] == ["B"]


def test_label_prior_baseline_is_beaten_by_an_informative_model():
    truth, probs = random_case(5, n=100, labels=3)
    train = truth[:60]
    prior = label_prior_baseline(train, 40)
    assert prior.shape == (40, 3)
    assert np.allclose(prior[0], train.mean(axis=0)) and np.allclose(prior, prior[0])
    base = fold_metrics(truth[60:], prior, ["A", "B", "C"], 0.5, min_support=1)
    model = fold_metrics(truth[60:], probs[60:], ["A", "B", "C"], 0.5, min_support=1)
    assert base.macro["roc_auc"] == 0.5
    assert model.macro["roc_auc"] > base.macro["roc_auc"]
    assert model.micro["f1"] > base.micro["f1"]
    with pytest.raises(ValueError, match="non-empty"):
        label_prior_baseline(np.zeros((0, 3)), 4)
