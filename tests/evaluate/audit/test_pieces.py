"""The audit's pure pieces: columns and age bins, one-column AUROC, Cramér's V, behaviour, probe, sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats.contingency import association

from cxrlens.config import AuditConfig
from cxrlens.data.records import ImageRecord
from cxrlens.errors import ConfigError, ModelError
from cxrlens.evaluate.audit.behaviour import check_behaviour, mean_of_models, out_of_fold, within_values
from cxrlens.evaluate.audit.columns import (
    UNKNOWN,
    ColumnValues,
    age_bin,
    age_bin_names,
    column_values,
    parse_age,
    parse_columns,
)
from cxrlens.evaluate.audit.data_check import check_label
from cxrlens.evaluate.audit.probe import probe_auroc
from cxrlens.evaluate.audit.sentences import behaviour_flag, data_sentence, percent
from cxrlens.evaluate.audit.stats import contingency, cramers_v, one_column_auroc, prevalence_scores
from cxrlens.evaluate.audit.tcav import LinearCav, choose_sets, layer_name, significance
from cxrlens.models.registry import create_model
from cxrlens.run.predictions import Predictions, RunData


def column(name: str, values: list[str]) -> ColumnValues:
    order = tuple(sorted(set(values) - {UNKNOWN})) + ((UNKNOWN,) if UNKNOWN in values else ())
    return ColumnValues(name, np.array(values, dtype=object), order)


# -- columns ------------------------------------------------------------------------------------------------


def test_parse_columns_accepts_commas_repeats_and_case():
    assert parse_columns(["source,view", "Sex", " age ", "source"]) == ["source", "view", "sex", "age"]
    assert parse_columns(["source, sex"]) == ["source", "sex"]
    with pytest.raises(ConfigError, match="unknown column 'hospital'"):
        parse_columns(["source,hospital"])
    with pytest.raises(ConfigError, match="no column"):
        parse_columns([" , "])


def test_age_bins():
    assert age_bin_names([18, 40, 60, 80]) == ["<18", "18-39", "40-59", "60-79", "80+"]
    assert age_bin_names([]) == ["all ages"]
    edges = [18, 40, 60, 80]
    cases = {"0.5": "<18", "17": "<18", "18": "18-39", "39.9": "18-39", "45 y": "40-59", "79,5": "60-79"}
    cases |= {"80": "80+", "101": "80+", "": UNKNOWN, "n/a": UNKNOWN, "200": UNKNOWN, "-3": UNKNOWN}
    for text, expected in cases.items():
        assert age_bin(text, edges) == expected, text
    assert parse_age("45 years") == 45.0 and parse_age("abc") is None
    with pytest.raises(ConfigError, match="must increase"):
        age_bin_names([40, 18])


def test_column_values_order_unknown_last_and_skip_reasons(tmp_path: Path):
    def record(i: int, age: str, sex: str, view: str) -> ImageRecord:
        return ImageRecord(f"f{i}", tmp_path / f"f{i}", f"p{i}", "x", frozenset(), view=view, sex=sex, age=age)

    records = [record(0, "70", "F", "PA"), record(1, "", "", "PA"), record(2, "5", "M", ""), record(3, "30", "F", "")]
    ages = column_values(records, "age", [18, 40, 60, 80])
    assert ages.order == ("<18", "18-39", "60-79", UNKNOWN) and ages.values.tolist() == [
        "60-79",
        UNKNOWN,
        "<18",
        "18-39",
    ]
    assert ages.known == ("<18", "18-39", "60-79") and ages.skip_reason() is None
    assert column_values(records, "sex", []).counts() == {"F": 2, "M": 1, UNKNOWN: 1}
    assert "same one (PA)" in (column_values(records, "view", []).skip_reason() or "")
    assert "no image" in (column_values(records, "source", []).skip_reason() or "")


# -- numbers ------------------------------------------------------------------------------------------------


def test_one_column_auroc_by_hand():
    # A: 3 positives, 1 negative (prevalence 0.75); B: 1 positive, 3 negatives (0.25).
    values = np.array(["A"] * 4 + ["B"] * 4, dtype=object)
    truth = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert prevalence_scores(truth, values).tolist() == [0.75] * 4 + [0.25] * 4
    # 16 positive-negative pairs: 9 won (A+ vs B-), 3 + 3 tied (within A, within B), 1 lost: (9 + 3) / 16
    assert one_column_auroc(truth, values) == pytest.approx(12 / 16)
    assert one_column_auroc(truth, np.array(["A"] * 4 + ["B"] * 4)) == pytest.approx(0.75)
    assert one_column_auroc(np.array([1, 1, 0, 0], bool), np.array(["A", "A", "B", "B"], dtype=object)) == 1.0
    assert one_column_auroc(np.array([1, 0, 1, 0], bool), np.array(["A", "A", "B", "B"], dtype=object)) == 0.5
    assert one_column_auroc(np.zeros(4, bool), np.array(["A", "A", "B", "B"], dtype=object)) is None


def test_cramers_v_by_hand_and_against_scipy():
    values = np.array(["A"] * 4 + ["B"] * 4, dtype=object)
    truth = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert contingency(truth, values).tolist() == [[1, 3], [3, 1]]
    # every expected count is 2: chi2 = 4 * (1 / 2) = 2, V = sqrt(2 / (8 * 1)) = 0.5
    assert cramers_v(truth, values) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    values = rng.choice(np.array(["a", "b", "c"], dtype=object), 90)
    truth = rng.random(90) < np.where(values == "a", 0.7, 0.3)
    table = contingency(truth, values)
    assert cramers_v(truth, values) == pytest.approx(association(table, method="cramer", correction=False))
    assert cramers_v(np.zeros(4, bool), np.array(["A", "B", "A", "B"], dtype=object)) is None
    assert cramers_v(np.array([1, 0], bool), np.array(["A", "A"], dtype=object)) is None


def test_check_label_data_part():
    col = column("source", ["cohen"] * 3 + ["kermany"] * 5)
    row = check_label("COVID-19", np.array([1, 1, 1, 0, 0, 0, 0, 0], bool), col, flag_auroc=0.7)
    assert row["counts"] == {"cohen": 3, "kermany": 0} and row["positives"] == 3
    assert row["one_column_auroc"] == 1.0 and row["cramers_v"] == pytest.approx(1.0) and row["confounded"]
    assert row["sentence"] == "COVID-19: 100 % of positives from cohen, which holds 38 % of the images"
    assert row["confounded_sentence"].startswith("COVID-19 is confounded with source: the source alone predicts it")
    even = check_label("COVID-19", np.array([1, 0, 0, 1, 0, 0, 1, 0], bool), col, flag_auroc=0.7)
    assert not even["confounded"] and even["confounded_sentence"] is None


# -- behaviour -----------------------------------------------------------------------------------------------


def test_out_of_fold_rows_are_averaged_and_models_meaned():
    labels = ("COVID-19",)
    one = Predictions(("a", "b"), np.array([[0.2], [0.4]]), np.array([[0], [1]]))
    two = Predictions(("a",), np.array([[0.6]]), np.array([[0]]))
    other = Predictions(("b",), np.array([[0.8]]), np.array([[1]]))
    data = RunData(Path("p.csv"), labels, {("m", 0, "test"): one, ("m", 1, "test"): two, ("n", 0, "test"): other})
    per_model = out_of_fold(data, ["a", "b", "c"])
    assert per_model["m"][:2, 0].tolist() == pytest.approx([0.4, 0.4]) and np.isnan(per_model["m"][2, 0])
    assert np.isnan(per_model["n"][0, 0]) and per_model["n"][1, 0] == 0.8
    mean = mean_of_models(per_model)[:, 0]
    assert mean[:2].tolist() == pytest.approx([0.4, 0.6]) and np.isnan(mean[2])


def test_score_that_only_follows_the_source_is_flagged():
    rng = np.random.default_rng(0)
    col = column("source", ["cohen"] * 40 + ["kermany"] * 40)
    truth = np.r_[rng.random(40) < 0.8, rng.random(40) < 0.2]
    by_source = np.where(col.values == "cohen", 0.9, 0.1) + rng.normal(0, 0.01, 80)
    pooled, within, notes = within_values(truth, by_source, col, min_within=5)
    assert pooled is not None and pooled > 0.7 and notes == {}
    assert all(auc is not None and abs(auc - 0.5) < 0.3 for auc in within.values())
    cfg = AuditConfig(chance_auroc=0.8)  # generous: the noise score may reach 0.7 within a small source
    flagged = check_behaviour(0, "COVID-19", truth, {"m": by_source[:, None]}, col, cfg)
    assert flagged["behaviour_flag"] and "falls to chance" in flagged["behaviour_sentence"]
    assert flagged["by_model"]["m"]["behaviour_flag"]
    honest = truth + rng.normal(0, 0.3, 80)
    fine = check_behaviour(0, "COVID-19", truth, {"m": honest[:, None]}, col, AuditConfig())
    assert not fine["behaviour_flag"] and fine["behaviour_sentence"] is None
    assert all(auc is not None and auc > 0.8 for auc in fine["within_auroc"].values())


def test_label_that_cannot_be_checked_within_any_value_is_flagged():
    col = column("source", ["cohen"] * 10 + ["kermany"] * 10)
    truth = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    out = check_behaviour(0, "COVID-19", truth, {"m": truth[:, None] * 0.9}, col, AuditConfig())
    assert out["pooled_auroc"] == 1.0 and out["within_auroc"] == {"cohen": None, "kermany": None}
    assert out["within_notes"]["cohen"].startswith("not evaluable within cohen (10 positive(s), 0 negative(s)")
    assert out["behaviour_flag"] and "cannot be told apart from the source" in out["behaviour_sentence"]
    empty = check_behaviour(0, "COVID-19", truth, {}, col, AuditConfig())
    assert empty["pooled_auroc"] is None and not empty["behaviour_flag"]


# -- representation ------------------------------------------------------------------------------------------


def test_probe_reads_a_visible_column_and_not_an_invisible_one():
    rng = np.random.default_rng(0)
    values = np.array(["a", "b"] * 30 + [UNKNOWN] * 4, dtype=object)
    groups = np.array([f"p{i // 2}" for i in range(64)], dtype=object)
    features = rng.normal(size=(64, 10))
    visible = features.copy()
    visible[:, 0] += np.where(values == "a", 3.0, 0.0)
    seen = probe_auroc(visible, values, groups, folds=5, seed=0)
    assert seen.auroc is not None and seen.auroc > 0.9 and seen.images == 60 and seen.classes == ("a", "b")
    unseen = probe_auroc(features, values, groups, folds=5, seed=0)
    assert unseen.auroc is not None and unseen.auroc < 0.75
    three = np.array(["a", "b", "c"] * 20, dtype=object)
    shifted = features[:60] + np.eye(10)[[("abc".index(v)) for v in three]] * 4
    assert (probe_auroc(shifted, three, groups[:60], folds=3, seed=0).auroc or 0) > 0.9
    lone = probe_auroc(features[:6], np.array(["a"] * 5 + ["b"], dtype=object), groups[:6], folds=5, seed=0)
    assert lone.auroc is None and lone.note is not None


def test_cav_classifier_points_towards_its_class():
    x = torch.randn(40, 6)
    y = torch.tensor([3] * 20 + [5] * 20)
    x[20:, 0] += 3.0
    cav = LinearCav()
    cav.train_and_eval([(x, y)])
    assert cav.classes() == [3, 5]
    weights = cav.weights()
    assert weights.shape == (2, 6) and weights[1, 0] > 0 and torch.allclose(weights[0], -weights[1])


def test_tcav_significance_and_sets():
    p, significant = significance([1.0, 1.0, 1.0], [0.4, 0.5, 0.6])
    assert p is not None and p < 0.05 and significant
    assert significance([0.5, 0.5], [0.5, 0.5]) == (None, False)
    assert significance([0.6], [0.5, 0.4]) == (None, False)
    files = [f"f{i}" for i in range(20)]
    values = {"source": np.array(["a"] * 12 + ["b"] * 6 + ["c"] * 2, dtype=object)}
    sets = choose_sets(files, values, {"source": ("a", "b", "c")}, {"L": files[:3]}, images=5, repeats=3, seed=0)
    assert set(sets.concepts) == {("source", "a"), ("source", "b")}  # c has too few images
    assert all(len(s) == 5 for s in sets.concepts.values())
    for (_, value), randoms in sets.randoms.items():
        own = {f for f, v in zip(files, values["source"], strict=True) if v == value}
        assert len(randoms) == 3 and not any(set(r) & own for r in randoms)  # controls lack the value
    again = choose_sets(files, values, {"source": ("a", "b", "c")}, {"L": files[:3]}, images=5, repeats=3, seed=0)
    assert again == sets


# -- sentences -----------------------------------------------------------------------------------------------


def test_sentences():
    assert data_sentence("COVID-19", "source", "cohen", 1.0, 0.37, 12) == (
        "COVID-19: 100 % of positives from cohen, which holds 37 % of the images"
    )
    assert data_sentence("COVID-19", "age", "60-79", 0.5, 0.2, 4).endswith(
        "50 % of positives aged 60-79, which holds 20 % of the images"
    )
    assert data_sentence("ARDS", "source", None, 0.0, 0.0, 0) == "ARDS: no positive image"
    assert [percent(x) for x in (1.0, 0.996, 0.004, 0.0, 0.375)] == ["100 %", "99 %", "<1 %", "0 %", "38 %"]
    text = behaviour_flag("COVID-19", "source", 0.97, {"cohen": None, "kermany": None}, 5, 0.6)
    assert text == (
        "COVID-19: pooled AUROC 0.97, but no source has 5 positives and 5 negatives to check it within: "
        "its score cannot be told apart from the source."
    )
    text = behaviour_flag("COVID-19", "age", 0.9, {"<18": 0.52, "60-79": 0.58, "80+": None}, 5, 0.6)
    assert text is not None and "within each age group it falls to chance (≤ 0.60: <18 0.52, 60-79 0.58)" in text
    assert behaviour_flag("COVID-19", "source", 0.9, {"cohen": 0.55, "kermany": 0.8}, 5, 0.6) is None


def test_tcav_layer_names():
    model = create_model("tiny", label_names=["COVID-19"])
    assert layer_name(model, "bn2") == "backbone.bn2" == layer_name(model, "backbone.bn2")
    assert layer_name(model, model.gradcam_layer_name) == "backbone.bn3"
    with pytest.raises(ModelError, match="no layer 'layer9'"):
        layer_name(model, "layer9")


def test_control_sets_are_never_all_the_same_images():
    """With a pool as small as the requested set, equal controls gave a zero direction and a null of 0 %."""
    import numpy as np

    from cxrlens.evaluate.audit.tcav import choose_sets

    names = [f"i{k}" for k in range(20)]
    source = np.array(["a"] * 10 + ["b"] * 10)
    sets = choose_sets(names, {"source": source}, {"source": ["a", "b"]}, {"L": names[:5]}, 24, 4, seed=0)
    for key, controls in sets.randoms.items():
        assert len(controls[0]) == 5  # half of the other value's 10 images
        assert len({tuple(c) for c in controls}) > 1, key
        assert not set(controls[0]) & set(sets.concepts[key])
