"""Deletion / insertion scores of a map from its curves: AUCs, gains over random orders, gains relative to p(x)."""

import math

import pytest

from cxrlens.xai.faithfulness import CURVES, apply_curves
from tests.xai.helpers import scored


def curves(*values: list[float]) -> dict[str, list[float]]:
    return dict(zip(CURVES, values, strict=True))


def test_gains_are_measured_against_random_orders_and_relative_to_p_x():
    item = scored("tiny", "saliency")
    apply_curves(item, curves([0.5, 0.1, 0.0], [0.1, 0.4, 0.5], [0.5, 0.3, 0.0], [0.1, 0.2, 0.5]))
    assert item.value("deletion_auc") == pytest.approx(0.175)
    assert item.value("random_deletion_auc") == pytest.approx(0.275)
    assert item.value("deletion_gain") == pytest.approx(0.1)
    assert item.value("insertion_auc") == pytest.approx(0.35)
    assert item.value("insertion_gain") == pytest.approx(0.35 - 0.25)
    assert item.value("deletion_gain_rel") == pytest.approx(0.1 / 0.5)  # p(x): the deletion curve's first point
    assert item.value("insertion_gain_rel") == pytest.approx(0.1 / 0.5)
    assert set(item.curves) == {"deletion", "insertion", "random_deletion", "random_insertion"}


def test_relative_gains_are_undefined_when_the_label_is_all_but_absent():
    item = scored("tiny", "saliency")
    apply_curves(item, curves([1e-8, 0.0, 0.0], [0.0, 0.0, 1e-8], [1e-8, 1e-8, 0.0], [0.0, 0.0, 1e-8]))
    assert math.isfinite(item.value("deletion_gain"))  # the raw gains are still reported
    assert math.isnan(item.value("deletion_gain_rel")) and math.isnan(item.value("insertion_gain_rel"))
