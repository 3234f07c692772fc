"""What is measured: a map with its scores (:class:`ScoredMap`) and the catalogue of metrics.

:mod:`cxrlens.xai.measures` defines the measures; the metric families (:mod:`~cxrlens.xai.faithfulness`,
:mod:`~cxrlens.xai.localisation`, :mod:`~cxrlens.xai.sanity`, :mod:`~cxrlens.xai.stability`) fill the
scores of each map; :mod:`cxrlens.xai.summary` summarises them per model and method.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cxrlens.attribution.methods import METHODS
from cxrlens.models.names import ENSEMBLE

#: metric -> (description, higher is better); each gets a table and a bar figure
METRICS: dict[str, tuple[str, bool]] = {
    "deletion_auc": ("area under the label's probability as the most relevant pixels are set to black", False),
    "insertion_auc": (
        "area under the label's probability as the most relevant pixels are put back into a blurred copy",
        True,
    ),
    "deletion_gain": ("random-order deletion AUC minus deletion AUC (> 0: the map finds pixels that matter)", True),
    "insertion_gain": ("insertion AUC minus random-order insertion AUC", True),
    "deletion_gain_rel": (
        "deletion gain divided by the label's probability on the unmodified image, p(x) "
        "(comparable across confident and unsure models; undefined for p(x) < 1e-6)",
        True,
    ),
    "insertion_gain_rel": ("insertion gain divided by p(x) (undefined for p(x) < 1e-6)", True),
    "lung_share": (
        "share of positive attribution inside the lung mask (maps with no positive value are not evaluable)",
        True,
    ),
    "lung_area_share": (
        "the lung mask's share of the image: the lung share of a uniform map (chance level, not a quality measure)",
        False,
    ),
    "pointing_game": (
        "the map's positive maximum lies inside the lungs (ties: share of maximal pixels inside; "
        "maps with no positive value are not evaluable)",
        True,
    ),
    "randomisation_spearman": (
        "Spearman (absolute values) with the original map after randomising every "
        "block of the model (low: the map depends on the weights)",
        False,
    ),
    "fold_stability": ("mean pairwise Spearman (absolute values) of the maps of the models of different folds", True),
}
REFERENCE_ONLY = ("lung_area_share",)  # reported as the chance level, not as a quality
#: the metrics methods and models are ranked on (-> higher is better). The faithfulness gains enter relative to
#: p(x): raw gains are bounded by the label's probability and would reward a model's confidence.
RANKED: dict[str, bool] = {
    "deletion_gain_rel": True,
    "insertion_gain_rel": True,
    "lung_share": True,
    "pointing_game": True,
    "randomisation_spearman": False,
}
PER_MAP_VALUES = (
    "deletion_auc",
    "insertion_auc",
    "random_deletion_auc",
    "random_insertion_auc",
    "deletion_gain",
    "insertion_gain",
    "deletion_gain_rel",
    "insertion_gain_rel",
    "lung_share",
    "lung_area_share",
    "pointing_game",
    "outside_lung_share",
    "border_share",
    "padding_share",
    "randomisation_spearman",
    "fold_stability",
)


@dataclass
class ScoredMap:
    """One stored map (its index record) and the scores measured on it so far."""

    entry: dict[str, Any]
    label_index: int
    values: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    sanity_layers: list[str] = field(default_factory=list)
    sanity: list[float] = field(default_factory=list)
    has_positive: bool | None = None  # None until localised; False: relevance-based measures are undefined

    @property
    def image(self) -> str:
        return str(self.entry["image"])

    @property
    def model(self) -> str:
        return str(self.entry["model"])

    @property
    def method(self) -> str:
        return str(self.entry["method"])

    @property
    def label(self) -> str:
        return str(self.entry["label"])

    @property
    def fold(self) -> int:
        return int(self.entry["fold"])

    @property
    def map(self) -> str:
        """The map file, relative to its store."""
        return str(self.entry["map"])

    def value(self, name: str) -> float:
        return self.values.get(name, math.nan)


def model_order(maps: Iterable[ScoredMap]) -> list[str]:
    """The models of ``maps``: sorted, the ensemble last."""
    names = sorted({m.model for m in maps})
    return [n for n in names if n != ENSEMBLE] + ([ENSEMBLE] if ENSEMBLE in names else [])


def method_order(maps: Iterable[ScoredMap]) -> list[str]:
    """The methods of ``maps`` in the registry's order."""
    present = {m.method for m in maps}
    return [n for n in METHODS.names() if n in present]


def first_images(maps: list[ScoredMap], per_cell: int, skip_ensemble: bool) -> list[ScoredMap]:
    """Maps of the first ``per_cell`` images (evaluation order) of each (model, method) cell."""
    chosen: list[ScoredMap] = []
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in maps:
        if skip_ensemble and item.model == ENSEMBLE:
            continue
        images = seen[(item.model, item.method)]
        if item.image not in images:
            if len(images) >= per_cell:
                continue
            images.append(item.image)
        chosen.append(item)
    return chosen
