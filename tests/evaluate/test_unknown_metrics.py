"""Unknown is not negative in the numbers: a label one source never annotates is measured on the images that
annotate it only (per-label counts, support, ROC-AUC, micro pools, thresholds, external stats, the audit)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrlens.config import AuditConfig
from cxrlens.evaluate.audit.behaviour import check_behaviour
from cxrlens.evaluate.audit.columns import ColumnValues
from cxrlens.evaluate.audit.data_check import AuditData, check_column
from cxrlens.evaluate.external.stats import Scored, measure, summarise
from cxrlens.evaluate.metrics import fold_metrics, label_prior_baseline
from cxrlens.evaluate.thresholds import tune_thresholds

LABELS = ["COVID-19", "No Finding", "Pneumonia"]
N_A, N_B = 40, 30  # images of source A (annotates every label) and source B (never annotates COVID-19)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """truth, scores, known, source of N_A + N_B images; at B's images COVID-19 is 0 in truth but unknown."""
    rng = np.random.default_rng(seed)
    n = N_A + N_B
    truth = rng.random((n, 3)) < 0.4
    truth[N_A:, 0] = False
    scores = np.clip(truth * 0.3 + rng.random((n, 3)) * 0.7, 0, 1)
    scores[N_A:, 0] = 0.95  # confident "COVID-19" where nobody annotated it: would be false positives
    known = np.ones((n, 3), dtype=bool)
    known[N_A:, 0] = False
    source = np.array(["A"] * N_A + ["B"] * N_B, dtype=object)
    return truth, scores, known, source


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)


def test_fold_metrics_of_a_label_equal_those_of_the_images_that_annotate_it():
    truth, scores, known, _ = _data()
    m = fold_metrics(truth, scores, LABELS, 0.5, min_support=1, known=known)
    only_a = fold_metrics(truth[:N_A], scores[:N_A], LABELS, 0.5, min_support=1)
    every = fold_metrics(truth, scores, LABELS, 0.5, min_support=1)
    covid = m.per_label["COVID-19"]
    for key in ("support", "negatives", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "specificity"):
        assert _same(covid[key], only_a.per_label["COVID-19"][key]), key
    assert covid["roc_auc"] == pytest.approx(roc_auc_score(truth[:N_A, 0], scores[:N_A, 0]))
    assert covid["unknown"] == N_B and covid["negatives"] == N_A - covid["support"]
    assert m.per_label["Pneumonia"] == {**every.per_label["Pneumonia"]}  # known everywhere: all images
    # micro pools: the known entries only (B's confident COVID-19 scores add no false positive)
    fp = sum(m.per_label[name]["fp"] for name in LABELS)
    tp = sum(m.per_label[name]["tp"] for name in LABELS)
    fn = sum(m.per_label[name]["fn"] for name in LABELS)
    assert m.micro_all["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert every.per_label["COVID-19"]["fp"] == covid["fp"] + N_B  # what treating unknown as negative did


def test_nothing_unknown_changes_nothing():
    truth, scores, _, _ = _data()
    all_known = np.ones(truth.shape, dtype=bool)
    a = fold_metrics(truth, scores, LABELS, 0.5, known=all_known).to_dict()
    b = fold_metrics(truth, scores, LABELS, 0.5).to_dict()
    assert a == b or str(a) == str(b)  # NaN != NaN: compare the text
    assert np.array_equal(tune_thresholds(truth, scores, known=all_known), tune_thresholds(truth, scores))


def test_thresholds_are_tuned_on_the_images_that_annotate_the_label():
    truth, scores, known, _ = _data(1)
    tuned = tune_thresholds(truth, scores, known=known)
    assert tuned[0] == tune_thresholds(truth[:N_A], scores[:N_A])[0]
    assert np.array_equal(tuned[1:], tune_thresholds(truth, scores)[1:])


def test_external_numbers_and_bootstrap_leave_unknown_values_out():
    truth, scores, known, _ = _data(2)
    patients = np.array([f"p{i // 2}" for i in range(len(truth))])
    scored = Scored(truth, scores, scores >= 0.5, patients, known)
    only_a = Scored(truth[:N_A], scores[:N_A], scores[:N_A] >= 0.5, patients[:N_A])
    values, expected = measure(scored, 1), measure(only_a, 1)
    assert values["support"][0] == expected["support"][0] and values["negatives"][0] == expected["negatives"][0]
    for name in ("sensitivity", "specificity", "ppv", "auroc"):
        assert _same(values["per_label"][name][0], expected["per_label"][name][0]), name
    out = summarise(scored, LABELS, 1, 30, 0, 5)
    covid = out["labels"]["COVID-19"]
    assert covid["unknown"] == N_B and covid["support"] == int(truth[:N_A, 0].sum())
    assert covid["ece"] == summarise(only_a, LABELS, 1, 0, 0, 5)["labels"]["COVID-19"]["ece"]
    # the bootstrap draws patients, and measures each resample on its known values: B adds no false positive
    assert covid["ppv_ci"][0] is not None and covid["ppv_ci"][1] <= 1.0
    assert scored.take(np.arange(N_A, N_A + 4)).known[:, 0].tolist() == [False] * 4


def test_audit_does_not_see_a_label_one_source_never_annotates_as_confounded():
    truth, scores, known, source = _data(3)
    truth[:N_A, 0] = np.arange(N_A) % 4 == 0  # COVID-19 at a quarter of A's images, independent of anything
    column = ColumnValues("source", source, ("A", "B"))
    data = AuditData(tuple(f"i{i}" for i in range(len(truth))), source, truth, tuple(LABELS), {"source": column},
                     known=known)  # fmt: skip
    row = check_column(data, column, flag_auroc=0.7)["COVID-19"]
    assert row["counts"] == {"A": N_A // 4, "B": 0} and row["unknown"] == N_B
    assert row["prevalence"]["B"] is None  # no image of B knows its COVID-19 value
    assert not row["confounded"]
    unknown_as_negative = AuditData(data.filenames, source, truth, tuple(LABELS), {"source": column})
    wrong = check_column(unknown_as_negative, column, flag_auroc=0.7)["COVID-19"]
    assert wrong["prevalence"]["B"] == 0.0 and wrong["confounded"]  # what treating unknown as negative did
    behaviour = check_behaviour(0, "COVID-19", truth[:, 0], {"m": scores}, column, AuditConfig(), known[:, 0])
    assert behaviour["scored_images"] == N_A
    assert behaviour["pooled_auroc"] == pytest.approx(roc_auc_score(truth[:N_A, 0], scores[:N_A, 0]))


def test_the_label_prior_counts_the_images_that_annotate_the_label():
    truth, _, known, _ = _data(4)
    prior = label_prior_baseline(truth, 2, known)
    assert prior.shape == (2, 3) and prior[0, 0] == pytest.approx(truth[:N_A, 0].mean())
    assert np.array_equal(prior[0, 1:], truth[:, 1:].mean(axis=0))
    assert np.array_equal(label_prior_baseline(truth, 2), label_prior_baseline(truth, 2, np.ones_like(known)))
