"""Scores of the explanation maps -> tables per metric, rankings, the verdict and the shortcut audit.

The definitions of the scores are in :mod:`cxrlens.xai.measures`; :mod:`cxrlens.xai.study`
computes them per map and calls these functions to summarise them.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlens.attribution.budget import GIB
from cxrlens.attribution.methods import METHODS
from cxrlens.evaluate.ensemble import ENSEMBLE
from cxrlens.run.maps import MapStore
from cxrlens.xai import measures as xm

SANITY_THRESHOLD = xm.SANITY_THRESHOLD
BORDER_FRACTION = xm.BORDER_FRACTION
CONFIDENCE = 0.95
TOP_IMAGES = 10

METRICS: dict[str, tuple[str, bool]] = {
    "deletion_auc": ("area under the label's probability as the most relevant pixels are set to black", False),
    "insertion_auc": (
        "area under the label's probability as the most relevant pixels are put back into a blurred copy",
        True,
    ),
    "deletion_gain": ("random-order deletion AUC minus deletion AUC (> 0: the map finds pixels that matter)", True),
    "insertion_gain": ("insertion AUC minus random-order insertion AUC", True),
    "lung_share": ("share of positive attribution inside the lung mask", True),
    "lung_area_share": (
        "the lung mask's share of the image: the lung share of a uniform map (chance level, not a quality measure)",
        False,
    ),
    "pointing_game": ("the map's maximum lies inside the lungs (ties: share of maximal pixels inside)", True),
    "randomisation_spearman": (
        "Spearman (absolute values) with the original map after randomising every "
        "block of the model (low: the map depends on the weights)",
        False,
    ),
    "fold_stability": ("mean pairwise Spearman (absolute values) of the maps of the models of different folds", True),
}
RANK_DECIMALS = 3
REFERENCE_ONLY = ("lung_area_share",)  # reported as the chance level, not as a quality
RANKED: dict[str, bool] = {
    "deletion_gain": True,
    "insertion_gain": True,
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
    entry: dict[str, Any]
    label_index: int
    values: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    sanity_layers: list[str] = field(default_factory=list)
    sanity: list[float] = field(default_factory=list)

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

    def value(self, name: str) -> float:
        return self.values.get(name, math.nan)


@dataclass
class Settings:
    images_max: int | None
    steps: int
    bootstrap: int
    seed: int
    memory_gib: float
    sanity: bool
    stability: bool
    sanity_images: int
    stability_images: int
    sanity_steps: int
    n_random: int
    insertion_start: str
    size: int

    @property
    def budget(self) -> float:
        return self.memory_gib * GIB

    @property
    def blur_sigma(self) -> float:
        return xm.default_blur_sigma(self.size)

    def describe(self) -> dict[str, Any]:
        return {
            "images_max": self.images_max,
            "steps": self.steps,
            "bootstrap": self.bootstrap,
            "confidence": CONFIDENCE,
            "bootstrap_unit": "image",
            "seed": self.seed,
            "memory_gib": self.memory_gib,
            "sanity": self.sanity,
            "stability": self.stability,
            "sanity_images": self.sanity_images,
            "stability_images": self.stability_images,
            "sanity_steps": self.sanity_steps,
            "sanity_threshold": SANITY_THRESHOLD,
            "n_random_orders": self.n_random,
            "deletion_baseline": 0.0,
            "insertion_start": self.insertion_start,
            "blur_sigma_px": self.blur_sigma if self.insertion_start == "blur" else None,
            "pixel_order": "signed attribution, largest first; ties in seeded random order",
            "relevance": "positive part of the map (absolute values if it has no positive part)",
            "spearman_on": "absolute values",
            "border_fraction": BORDER_FRACTION,
            "ranking_metrics": {name: ("higher" if up else "lower") for name, up in RANKED.items()},
            "size": self.size,
        }


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def model_order(maps: Iterable[ScoredMap]) -> list[str]:
    names = sorted({m.model for m in maps})
    return [n for n in names if n != ENSEMBLE] + ([ENSEMBLE] if ENSEMBLE in names else [])


def method_order(maps: Iterable[ScoredMap]) -> list[str]:
    present = {m.method for m in maps}
    return [n for n in METHODS.names() if n in present]


def interval(items: list[ScoredMap], metric: str, s: Settings) -> xm.Interval:
    return xm.bootstrap_ci([m.value(metric) for m in items], [m.image for m in items], s.bootstrap, s.seed, CONFIDENCE)


def metric_table(maps: list[ScoredMap], metric: str, s: Settings) -> list[dict[str, Any]]:
    rows = []
    cells: dict[tuple[str, str], list[ScoredMap]] = defaultdict(list)
    for item in maps:
        cells[(item.model, item.method)].append(item)
    for model in model_order(maps):
        for method in method_order(maps):
            if (model, method) not in cells:
                continue
            ci = interval(cells[(model, method)], metric, s)
            if ci.n == 0:
                continue
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "mean": ci.mean,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "n": ci.n,
                    "n_images": ci.n_groups,
                }
            )
    return rows


def _normalised_ranks(values: dict[str, float], higher: bool) -> dict[str, float]:
    """(k - rank) / (k - 1) with average ranks for ties; empty with fewer than two values.

    Means equal to ``RANK_DECIMALS`` decimals (the tables' precision) are ties: every ranked metric lives on a
    unit scale (AUC gains, shares, correlations), where smaller differences mean nothing (e.g. an ensemble of
    one model and that model differ only by float rounding).
    """
    finite = {k: round(v, RANK_DECIMALS) for k, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:
        return {}
    names = list(finite)
    signed = torch.tensor([-finite[n] if higher else finite[n] for n in names], dtype=torch.float64)
    ranks = xm.average_ranks(signed)  # 1 = best
    k = len(names)
    return {n: float((k - r) / (k - 1)) for n, r in zip(names, ranks.tolist(), strict=True)}


def ranking(
    metrics: dict[str, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, float]]]:
    method_scores: dict[str, list[float]] = defaultdict(list)
    model_scores: dict[str, list[float]] = defaultdict(list)
    per_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for metric, higher in RANKED.items():
        rows = metrics.get(metric, [])
        by_model: dict[str, dict[str, float]] = defaultdict(dict)
        by_method: dict[str, dict[str, float]] = defaultdict(dict)
        for row in rows:
            by_model[row["model"]][row["method"]] = row["mean"]
            by_method[row["method"]][row["model"]] = row["mean"]
        for values in by_model.values():
            for method, score in _normalised_ranks(values, higher).items():
                method_scores[method].append(score)
                per_metric[method][metric].append(score)
        for values in by_method.values():
            for model, score in _normalised_ranks(values, higher).items():
                model_scores[model].append(score)

    def table(scores: dict[str, list[float]], key: str) -> list[dict[str, Any]]:
        means = sorted(((float(np.mean(v)), name) for name, v in scores.items() if v), key=lambda t: (-t[0], t[1]))
        out, rank = [], 0
        for i, (score, name) in enumerate(means):
            if i == 0 or score < means[i - 1][0] - 1e-12:
                rank = i + 1
            out.append({key: name, "score": round(score, 6), "rank": rank})
        return out

    detail = {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in per_metric.items()}
    return table(method_scores, "method"), table(model_scores, "model"), detail


def _lead_overlap(metrics: dict[str, list[dict[str, Any]]], axis: str, first: str, second: str) -> tuple[int, int]:
    """In how many (ranked metric, other-axis) cells the intervals of two ``axis`` items (``method`` or
    ``model``) overlap, of how many compared."""
    other = "model" if axis == "method" else "method"
    inside = total = 0
    for metric in RANKED:
        cells = {(r[other], r[axis]): r for r in metrics.get(metric, [])}
        for key in sorted({k for k, _ in cells}):
            a, b = cells.get((key, first)), cells.get((key, second))
            if a is None or b is None or None in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"]):
                continue
            total += 1
            inside += int(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])
    return inside, total


def verdict(
    methods: list[dict[str, Any]],
    models: list[dict[str, Any]],
    detail: dict[str, dict[str, float]],
    sanity_rows: list[dict[str, Any]],
    n_maps: int,
    n_images: int,
    metrics: dict[str, list[dict[str, Any]]],
) -> str:
    parts = []
    if models:
        first = [m["model"] for m in models if m["rank"] == 1]
        if len(first) == len(models) > 1:
            parts.append(f"the models {', '.join(first)} tie (score {models[0]['score']:.2f} of 1)")
        else:
            rest = [m["model"] for m in models if m["rank"] != 1]
            tail = f", ahead of {', '.join(rest)}" if rest else ""
            who = " and ".join(first)
            verb = "are the most interpretable models" if len(first) > 1 else "is the most interpretable model"
            parts.append(f"{who} {verb} (score {models[0]['score']:.2f} of 1){tail}")
    if methods:
        first = [m["method"] for m in methods if m["rank"] == 1]
        if len(first) == len(methods) > 1:
            parts.append(f"the methods {', '.join(first)} tie (score {methods[0]['score']:.2f})")
        else:
            strong = [k.replace("_", " ") for k, v in sorted(detail.get(first[0], {}).items()) if v >= 0.999]
            why = f"; best on {', '.join(strong)}" if strong and len(first) == 1 else ""
            who = " and ".join(first)
            verb = "are the most trustworthy methods" if len(first) > 1 else "is the most trustworthy method"
            text = f"{who} {verb} (score {methods[0]['score']:.2f}{why})"
            if len(methods) > len(first):
                text += f" and {methods[-1]['method']} the least (score {methods[-1]['score']:.2f})"
            parts.append(text)
    if not parts:
        verdict = "Too few models and methods with measured values to rank anything."
    else:
        verdict = "Measured, not judged by eye: " + "; ".join(parts) + "."
    flagged = [f"{r['method']} on {r['model']}" for r in sanity_rows if r["flagged"]]
    if flagged:
        verdict += (
            f" The randomisation test flags {', '.join(flagged)}: the maps stay similar (mean Spearman "
            f"> {SANITY_THRESHOLD}) after the weights are randomised, so they do not explain the model."
        )
    elif sanity_rows:
        verdict += " Every tested method's maps change when the weights are randomised."
    for axis, ranked in (("model", models), ("method", methods)):
        if len(ranked) > 1 and ranked[1]["rank"] > 1:
            inside, total = _lead_overlap(metrics, axis, ranked[0][axis], ranked[1][axis])
            if total:
                verdict += (
                    f" The lead of {ranked[0][axis]} over {ranked[1][axis]} lies within overlapping 95% intervals "
                    f"in {inside} of {total} comparisons."
                )
    verdict += f" Based on {n_maps} maps of {n_images} image(s) (ranked metrics: {', '.join(RANKED)})"
    verdict += "; few images: treat as indicative." if n_images < 30 else "."
    return verdict


def sanity_rows(maps: list[ScoredMap]) -> list[dict[str, Any]]:
    rows = []
    cells: dict[tuple[str, str], list[ScoredMap]] = defaultdict(list)
    for item in maps:
        if item.sanity:
            cells[(item.model, item.method)].append(item)
    for model in model_order(maps):
        for method in method_order(maps):
            items = cells.get((model, method))
            if not items:
                continue
            matrix = np.array([item.sanity for item in items], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is reported as null
                means = np.nanmean(matrix, axis=0)
            final = float(means[-1])
            flagged = bool(math.isfinite(final) and final > SANITY_THRESHOLD)
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "layers": list(items[0].sanity_layers),
                    "spearman": [float(v) for v in means],
                    "flagged": flagged,
                    "n": len(items),
                }
            )
    return rows


def shortcut_audit(maps: list[ScoredMap], run_root: Path, s: Settings) -> dict[str, Any]:
    explanations = MapStore(run_root / "explanations")
    rows, top = [], []
    for model in model_order(maps):
        items = [m for m in maps if m.model == model]
        outside = interval(items, "outside_lung_share", s)
        border = interval(items, "border_share", s)
        padding = interval(items, "padding_share", s)
        rows.append(
            {
                "model": model,
                "outside_lung_share": outside.mean,
                "ci_low": outside.low,
                "ci_high": outside.high,
                "border_share": border.mean,
                "border_ci_low": border.low,
                "border_ci_high": border.high,
                "padding_share": padding.mean,
                "padding_ci_low": padding.low,
                "padding_ci_high": padding.high,
                "n": outside.n,
                "n_images": outside.n_groups,
                "n_maps": len(items),
            }
        )
        ranked = sorted(
            (m for m in items if math.isfinite(m.value("outside_lung_share"))),
            key=lambda m: (-m.value("outside_lung_share"), m.image, m.method, m.label),
        )
        seen: set[str] = set()
        for item in ranked:  # one map per image: the ten images that rely most on what lies outside the lungs
            if item.image in seen:
                continue
            seen.add(item.image)
            overlay = explanations.overlay_path(item.image, item.model, item.method, item.label)
            top.append(
                {
                    "model": model,
                    "image": item.image,
                    "label": item.label,
                    "method": item.method,
                    "outside_lung_share": item.value("outside_lung_share"),
                    "overlay": overlay.relative_to(run_root).as_posix(),
                }
            )
            if len(seen) >= TOP_IMAGES:
                break
    return {"rows": rows, "top_images": top}
