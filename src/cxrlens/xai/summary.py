"""Scores of the explanation maps -> tables per metric, rankings, the verdict and the shortcut audit.

Each summary is a mean with a 95 % percentile-bootstrap interval that resamples images. Methods and models
are ranked by the average of their normalised ranks ((k - rank) / (k - 1), 1 = best) over the ranked metrics
(:data:`~cxrlens.xai.scores.RANKED`: deletion and insertion gains relative to p(x), lung share, pointing game
and, lower is better, randomisation Spearman): methods are compared within each model, models within each
method; means equal to three decimals tie. The raw gains are reported but not ranked: bounded by the label's
probability, they would partly reward a model's confidence. Fold stability is reported but not ranked either.
The shortcut audit lists, per model, the ten images with the largest outside-lung share (one map per image:
its largest).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cxrlens.run.layout import RunLayout
from cxrlens.text import number
from cxrlens.xai import measures as xm
from cxrlens.xai.randomisation import SANITY_THRESHOLD
from cxrlens.xai.scores import RANKED, ScoredMap, method_order, model_order
from cxrlens.xai.settings import CONFIDENCE, Settings

RANK_DECIMALS = 3
TOP_IMAGES = 10


def interval(items: list[ScoredMap], metric: str, s: Settings) -> xm.Interval:
    """Mean and bootstrap interval of ``metric`` over ``items``, resampling images."""
    return xm.bootstrap_ci([m.value(metric) for m in items], [m.image for m in items], s.bootstrap, s.seed, CONFIDENCE)


def metric_table(maps: list[ScoredMap], metric: str, s: Settings) -> list[dict[str, Any]]:
    """One row per (model, method) with a value: mean, 95 % interval, values and images used."""
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
    unit scale (relative AUC gains, shares, correlations), where smaller differences mean nothing (e.g. an
    ensemble of one model and that model differ only by float rounding).
    """
    finite = {k: round(v, RANK_DECIMALS) for k, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:
        return {}
    names = list(finite)
    signed = torch.tensor([-finite[n] if higher else finite[n] for n in names], dtype=torch.float64)
    ranks = xm.average_ranks(signed)  # 1 = best
    k = len(names)
    return {n: float((k - r) / (k - 1)) for n, r in zip(names, ranks.tolist(), strict=True)}


@dataclass(frozen=True)
class Ranking:
    """Methods and models by score (1 = best in every comparison), and each method's score per metric."""

    methods: list[dict[str, Any]]
    models: list[dict[str, Any]]
    detail: dict[str, dict[str, float]]


def ranking(metrics: dict[str, list[dict[str, Any]]]) -> Ranking:
    """Rank methods within each model and models within each method on the :data:`RANKED` metrics' tables."""
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
    return Ranking(table(method_scores, "method"), table(model_scores, "model"), detail)


def _lead_overlap(metrics: dict[str, list[dict[str, Any]]], axis: str, first: str, second: str) -> tuple[int, int]:
    """In how many (ranked metric, other-axis) cells the intervals of two ``axis`` items (``method`` or
    ``model``) overlap, of how many compared."""
    other = "model" if axis == "method" else "method"
    inside = total = 0
    for metric in RANKED:
        cells = {(r[other], r[axis]): r for r in metrics.get(metric, [])}
        for key in sorted({k for k, _ in cells}):
            a, b = cells.get((key, first)), cells.get((key, second))
            if a is None or b is None:
                continue
            a_low, a_high, b_low, b_high = (number(x) for x in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"]))
            if a_low is None or a_high is None or b_low is None or b_high is None:
                continue  # no interval (NaN or null)
            total += 1
            inside += int(a_low <= b_high and b_low <= a_high)
    return inside, total


def verdict(
    ranked: Ranking,
    *,
    sanity_rows: list[dict[str, Any]],
    metrics: dict[str, list[dict[str, Any]]],
    n_maps: int,
    n_images: int,
) -> str:
    """The ranking in words, with the randomisation test's flags and how firm the leads are."""
    methods, models, detail = ranked.methods, ranked.models, ranked.detail
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
    for axis, order in (("model", models), ("method", methods)):
        if len(order) > 1 and order[1]["rank"] > 1:
            inside, total = _lead_overlap(metrics, axis, order[0][axis], order[1][axis])
            if total:
                verdict += (
                    f" The lead of {order[0][axis]} over {order[1][axis]} lies within overlapping 95% intervals "
                    f"in {inside} of {total} comparisons."
                )
    verdict += f" Based on {n_maps} maps of {n_images} image(s) (ranked metrics: {', '.join(RANKED)})"
    verdict += "; few images: treat as indicative." if n_images < 30 else "."
    return verdict


def sanity_rows(maps: list[ScoredMap]) -> list[dict[str, Any]]:
    """Per (model, method) tested: the mean Spearman after each cascade step and whether it is flagged."""
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


def _shortcut_row(items: list[ScoredMap], s: Settings) -> dict[str, Any]:
    outside = interval(items, "outside_lung_share", s)
    border = interval(items, "border_share", s)
    padding = interval(items, "padding_share", s)
    return {
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


def shortcut_audit(
    maps: list[ScoredMap], layout: RunLayout, s: Settings, source_of: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Per model (and per model and image source): attribution outside the lungs, on the border frame and on
    the padding; the images that rely most on what lies outside the lungs. ``source_of``: image -> source
    (images outside the run's data count as "outside")."""
    explanations = layout.explanations
    rows, top, by_source = [], [], []
    sources = source_of or {}
    for model in model_order(maps):
        items = [m for m in maps if m.model == model]
        rows.append({"model": model, **_shortcut_row(items, s)})
        per_source: dict[str, list[ScoredMap]] = defaultdict(list)
        for item in items:
            per_source[sources.get(item.image, "outside")].append(item)
        if len(per_source) > 1 or source_of:
            for source, part in sorted(per_source.items()):
                by_source.append({"model": model, "source": source, **_shortcut_row(part, s)})
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
                    "overlay": overlay.relative_to(layout.root).as_posix(),
                }
            )
            if len(seen) >= TOP_IMAGES:
                break
    return {"rows": rows, "by_source": by_source, "top_images": top}
