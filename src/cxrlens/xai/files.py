"""Files of the explanation evaluation besides ``metrics.json``: markdown / CSV tables, the per-map CSV and the
figures. The folders are the run layout's (``RunLayout.xai_tables``, ``RunLayout.xai_figures``); the names of
the files inside them are chosen here. Paths returned are relative to ``RunLayout.xai_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cxrlens.figures import new_figure, save_figure
from cxrlens.fileio import atomic_write_text, csv_text
from cxrlens.run.layout import RunLayout
from cxrlens.text import fmt, fmt_ci
from cxrlens.xai.randomisation import SANITY_THRESHOLD
from cxrlens.xai.scores import PER_MAP_VALUES, REFERENCE_ONLY, ScoredMap, method_order, model_order

METRIC_COLUMNS = ("model", "method", "mean", "ci_low", "ci_high", "n", "n_images")
SHORTCUT_COLUMNS = ("model", "outside_lung_share", "ci_low", "ci_high", "border_share", "padding_share", "n", "n_maps")


def direction(name: str, higher_is_better: bool) -> str:
    """How to read a metric: ``higher is better``, ``lower is better`` or ``chance level``."""
    if name in REFERENCE_ONLY:
        return "chance level"
    return "higher is better" if higher_is_better else "lower is better"


def metric_markdown(name: str, block: dict[str, Any]) -> str:
    """One metric as a Markdown table: rows models, columns methods, cells ``mean [CI]``."""
    rows = block["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    arrow = direction(name, block["higher_is_better"])
    lines = [f"### {name}", "", f"{block['description']} ({arrow}; mean [95% CI over images])", ""]
    if not rows:
        return "\n".join([*lines, "not computed (see notes)", ""])
    cells = {(r["model"], r["method"]): r for r in rows}
    lines.append("| model | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for model in models:
        values = [
            fmt_ci(cells[(model, m)]["mean"], cells[(model, m)]["ci_low"], cells[(model, m)]["ci_high"])
            if (model, m) in cells
            else "–"
            for m in methods
        ]
        lines.append(f"| {model} | " + " | ".join(values) + " |")
    return "\n".join([*lines, ""])


def _sanity_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "### sanity (cascading randomisation)",
        "",
        f"mean Spearman (absolute values) with the original map as blocks are randomised from the head down; "
        f"flagged: above {SANITY_THRESHOLD} after the whole cascade",
        "",
        "| model | method | randomised down to: Spearman | flagged | maps |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        steps = ", ".join(f"{layer}: {fmt(v, 2)}" for layer, v in zip(r["layers"], r["spearman"], strict=True))
        lines.append(f"| {r['model']} | {r['method']} | {steps} | {'yes' if r['flagged'] else 'no'} | {r['n']} |")
    return "\n".join([*lines, ""])


def _shortcut_markdown(short: dict[str, Any]) -> str:
    lines = [
        "### shortcut audit",
        "",
        "| model | outside lungs [95% CI] | border frame | zero padding | maps |",
        "|---|---|---|---|---|",
    ]
    for r in short["rows"]:
        outside = fmt_ci(r["outside_lung_share"], r["ci_low"], r["ci_high"])
        lines.append(
            f"| {r['model']} | {outside} | {fmt(r['border_share'])} | {fmt(r['padding_share'])} | {r['n_maps']} |"
        )
    lines += ["", "| model | image | label | method | outside lungs | overlay |", "|---|---|---|---|---|---|"]
    for t in short["top_images"]:
        lines.append(
            f"| {t['model']} | {t['image']} | {t['label']} | {t['method']} | "
            f"{fmt(t['outside_lung_share'])} | {t['overlay']} |"
        )
    return "\n".join([*lines, ""])


def _no_positive_rows(counts: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    return [(model, method, n) for model, row in counts.items() for method, n in row.items()]


def _no_positive_markdown(counts: dict[str, dict[str, int]]) -> str:
    lines = [
        "### maps with no positive attribution",
        "",
        "not evaluable for the lung share, pointing game, border and padding shares",
        "",
        "| model | method | maps |",
        "|---|---|---|",
    ]
    lines += [f"| {model} | {method} | {n} |" for model, method, n in _no_positive_rows(counts)]
    return "\n".join([*lines, ""])


def _ranking_markdown(ranking: dict[str, Any]) -> str:
    lines = ["### ranking", "", ranking["verdict"], "", "| rank | method | score |", "|---|---|---|"]
    lines += [f"| {r['rank']} | {r['method']} | {r['score']:.3f} |" for r in ranking["methods"]]
    lines += ["", "| rank | model | score |", "|---|---|---|"]
    lines += [f"| {r['rank']} | {r['model']} | {r['score']:.3f} |" for r in ranking["models"]]
    return "\n".join([*lines, ""])


def write_tables(layout: RunLayout, result: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every table of ``result`` (what ``metrics.json`` holds) as Markdown (and CSV); returns the files."""
    tables = layout.xai_tables
    written: dict[str, dict[str, str]] = {}

    def write(name: str, kind: str, text: str) -> None:
        path = tables / f"{name}.{kind}"
        atomic_write_text(path, text)
        written.setdefault(name, {})[kind] = path.relative_to(layout.xai_dir).as_posix()

    for name, block in result["metrics"].items():
        write(name, "md", metric_markdown(name, block))
        write(name, "csv", csv_text(METRIC_COLUMNS, ([r.get(k) for k in METRIC_COLUMNS] for r in block["rows"])))
    write("sanity", "md", _sanity_markdown(result["sanity"]["rows"]))
    short = result["shortcut"]
    write("shortcut", "md", _shortcut_markdown(short))
    write("shortcut", "csv", csv_text(SHORTCUT_COLUMNS, ([r.get(k) for k in SHORTCUT_COLUMNS] for r in short["rows"])))
    counts = result["no_positive_maps"]
    write("no_positive", "md", _no_positive_markdown(counts))
    write("no_positive", "csv", csv_text(("model", "method", "maps"), _no_positive_rows(counts)))
    write("ranking", "md", _ranking_markdown(result["ranking"]))
    return written


def per_map_csv(maps: list[ScoredMap]) -> str:
    """One row per map: what it is, every value measured on it and its randomisation cascade."""
    header = (
        "image",
        "patient_id",
        "model",
        "fold",
        "method",
        "label",
        "probability",
        "true",
        "predicted",
        "lung_mask",
        "map",
        "has_positive",
        *PER_MAP_VALUES,
        "randomisation_layers",
        "randomisation_spearman_by_layer",
    )
    rows = []
    for m in maps:
        e = m.entry
        rows.append(
            [
                m.image,
                e.get("patient_id", ""),
                m.model,
                m.fold,
                m.method,
                m.label,
                e.get("probability"),
                e.get("true"),
                e.get("predicted"),
                bool(e.get("lung_mask")),
                m.map,
                m.has_positive,
                *(m.value(k) for k in PER_MAP_VALUES),
                ";".join(m.sanity_layers),
                ";".join(f"{v:.6g}" for v in m.sanity),
            ]
        )
    return csv_text(header, rows)


def _curves_figure(maps: list[ScoredMap], models: list[str], methods: list[str]) -> Figure:
    fig = new_figure(10, 3.0 * len(models) + 0.6, constrained=True)
    axes = fig.subplots(len(models), 2, squeeze=False)
    for row, model in enumerate(models):
        for col, kind in enumerate(("deletion", "insertion")):
            ax = axes[row][col]
            items = [m for m in maps if m.model == model]
            for method in methods:
                curves = [m.curves[kind] for m in items if m.method == method]
                if curves:
                    mean = np.mean(np.array(curves), axis=0)
                    ax.plot(np.linspace(0, 1, mean.size), mean, label=method)
            randoms = [m.curves[f"random_{kind}"] for m in items]
            if randoms:
                mean = np.mean(np.array(randoms), axis=0)
                ax.plot(np.linspace(0, 1, mean.size), mean, "k--", label="random order")
            ax.set_title(f"{model}: {kind}")
            ax.set_xlabel("share of pixels " + ("removed" if kind == "deletion" else "inserted"))
            ax.set_ylabel("label probability")
            ax.set_ylim(-0.02, 1.02)
            if items:
                ax.legend(fontsize=7)
    return fig


def _bars_figure(name: str, result: dict[str, Any], models: list[str], methods: list[str]) -> Figure:
    block = result["metrics"][name]
    fig = new_figure(max(6.0, 1.1 * len(models) * max(1, len(methods)) / 2 + 2), 4.0, constrained=True)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    cells = {(r["model"], r["method"]): r for r in block["rows"]}
    for j, method in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for i, model in enumerate(models):
            r = cells.get((model, method))
            if r is None or r["mean"] is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(r["mean"])
            lo.append(r["mean"] - (r["ci_low"] if r["ci_low"] is not None else r["mean"]))
            hi.append((r["ci_high"] if r["ci_high"] is not None else r["mean"]) - r["mean"])
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=method)
    ax.set_xticks(range(len(models)), models)
    ax.set_title(f"{name} ({direction(name, block['higher_is_better'])}; 95% CI)")
    ax.axhline(0, color="grey", linewidth=0.5)
    chance = [r["mean"] for r in result["metrics"]["lung_area_share"]["rows"] if r["mean"] is not None]
    if name == "lung_share" and chance:
        ax.axhline(float(np.mean(chance)), color="black", linestyle="--", linewidth=1, label="lung area (chance)")
    ax.legend(fontsize=7)
    return fig


def _sanity_figure(rows: list[dict[str, Any]]) -> Figure:
    tested = list(dict.fromkeys(r["model"] for r in rows))
    fig = new_figure(6, 3.2 * len(tested) + 0.4, constrained=True)
    axes = fig.subplots(len(tested), 1, squeeze=False)
    for i, model in enumerate(tested):
        ax = axes[i][0]
        for r in (r for r in rows if r["model"] == model):
            ys = [v if v is not None else np.nan for v in r["spearman"]]
            ax.plot(range(len(ys)), ys, marker="o", label=r["method"])
            ax.set_xticks(range(len(ys)), [layer.rsplit(".", 1)[-1] for layer in r["layers"]], rotation=45)
        ax.axhline(SANITY_THRESHOLD, color="grey", linestyle=":")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{model}: cascading randomisation (head first)")
        ax.set_ylabel("Spearman with original")
        ax.legend(fontsize=7)
    return fig


def draw_figures(layout: RunLayout, maps: list[ScoredMap], result: dict[str, Any]) -> dict[str, str]:
    """Mean deletion / insertion curves, a bar chart with intervals per metric, the randomisation cascade."""
    figures = layout.xai_figures
    drawn: dict[str, str] = {}

    def save(name: str, fig: Figure) -> None:
        path: Path = save_figure(fig, figures / f"{name}.png")
        drawn[name] = path.relative_to(layout.xai_dir).as_posix()

    models, methods = model_order(maps), method_order(maps)
    with_curves = [m for m in maps if m.curves]
    if with_curves:
        save("curves", _curves_figure(with_curves, models, methods))
    for name, block in result["metrics"].items():
        if block["rows"]:
            save(f"bars_{name}", _bars_figure(name, result, models, methods))
    if result["sanity"]["rows"]:
        save("sanity", _sanity_figure(result["sanity"]["rows"]))
    return drawn
