"""Localisation of the maps of one image: lung share, pointing game, border and padding shares, and the maps
with no positive value (not evaluable, counted)."""

import math

import numpy as np
import torch

from cxrlens.config import XaiConfig
from cxrlens.xai.localisation import localise, no_positive_counts, no_positive_note
from cxrlens.xai.settings import Settings
from cxrlens.xai.summary import metric_table
from tests.xai.helpers import H, W, lung_mask, scored

RELEVANCE_BASED = ("lung_share", "outside_lung_share", "pointing_game", "border_share", "padding_share")


def test_positive_evidence_in_the_lungs_scores_inside_and_not_on_the_padding():
    mask = lung_mask()
    content = np.ones((H, W), dtype=bool)
    content[:2] = False  # a padded strip at the top
    item = scored("tiny", "saliency")
    localise([item], mask.float()[None], mask.numpy(), content)
    assert item.has_positive is True
    assert item.value("lung_share") == 1.0 and item.value("outside_lung_share") == 0.0
    assert item.value("pointing_game") == 1.0 and item.value("padding_share") == 0.0
    assert 0 < item.value("lung_area_share") < 1
    unmasked = scored("tiny", "saliency")
    localise([unmasked], mask.float()[None], None, content)
    assert math.isnan(unmasked.value("lung_share")) and unmasked.value("border_share") >= 0


def test_a_purely_negative_map_is_not_evaluable_and_is_counted():
    """Fix: scored on |map|, this map (all counter-evidence, in the lungs) had a lung share of 1 and a
    pointing-game hit. It has no evidence for the label: every relevance-based value is NaN, and it is counted."""
    mask = lung_mask()
    content = np.ones((H, W), dtype=bool)
    negative = scored("tiny", "deeplift")
    positive = scored("tiny", "saliency")
    zero = scored("ensemble", "saliency")
    tensors = torch.stack([-mask.float(), mask.float(), torch.zeros(H, W)])
    localise([negative, positive, zero], tensors, mask.numpy(), content)
    for name in RELEVANCE_BASED:
        assert math.isnan(negative.value(name)), name
        assert math.isnan(zero.value(name)), name
    assert negative.value("lung_area_share") == positive.value("lung_area_share")  # the chance level stays
    assert positive.value("lung_share") == 1.0
    assert (negative.has_positive, positive.has_positive, zero.has_positive) == (False, True, False)

    maps = [negative, positive, zero]
    counts = no_positive_counts(maps)
    assert counts == {"tiny": {"saliency": 0, "deeplift": 1}, "ensemble": {"saliency": 1}}
    note = no_positive_note(counts, len(maps))
    assert note is not None and note.startswith("2 of 3 map(s) have no positive attribution")
    assert "deeplift on tiny: 1" in note and "saliency on ensemble: 1" in note
    assert no_positive_note({"tiny": {"saliency": 0}}, 1) is None
    rows = metric_table(maps, "lung_share", Settings.of(XaiConfig(bootstrap=0), H))
    assert [(r["model"], r["method"], r["n"]) for r in rows] == [("tiny", "saliency", 1)]  # NaN maps left out
