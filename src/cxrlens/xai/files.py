"""Files of `cxrlens evaluate-explanations`: markdown / CSV tables, the per-map CSV and the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.fileio import atomic_write_bytes, atomic_write_text
from cxrlens.xai.summary import (
    PER_MAP_VALUES,
    REFERENCE_ONLY,
    SANITY_THRESHOLD,
    ScoredMap,
    method_order,
    model_order,
)


def format_number(value: Any, digits: int = 3) -> str:
    """``digits`` decimals; small non-zero values in scientific notation; ``–`` for undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value != 0 and abs(value) < 10 ** (1 - digits):
        return f"{value:.{max(1, digits - 1)}e}"
    return f"{value:.{digits}f}"


def direction(name: str, higher_is_better: bool) -> str:
    if name in REFERENCE_ONLY:
        return "chance level"
    return "higher is better" if higher_is_better else "lower is better"


def _cell(row: dict[str, Any]) -> str:
    return f"{format_number(row['mean'])} [{format_number(row['ci_low'])}, {format_number(row['ci_high'])}]"


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
        values = [_cell(cells[(model, m)]) if (model, m) in cells else "–" for m in methods]
        lines.append(f"| {model} | " + " | ".join(values) + " |")
    return "\n".join([*lines, ""])


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in row])
    return buffer.getvalue()


def write_tables(out: Path, result: dict[str, Any]) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    tables = out / "tables"
    for name, block in result["metrics"].items():
        atomic_write_text(tables / f"{name}.md", metric_markdown(name, block))
        keys = ("model", "method", "mean", "ci_low", "ci_high", "n", "n_images")
        atomic_write_text(tables / f"{name}.csv", _csv_text(keys, ([r.get(k) for k in keys] for r in block["rows"])))
        files[name] = {"md": f"tables/{name}.md", "csv": f"tables/{name}.csv"}
    sanity = result["sanity"]["rows"]
    lines = [
        "### sanity (cascading randomisation)",
        "",
        f"mean Spearman (absolute values) with the original map as blocks are randomised from the head down; "
        f"flagged: above {SANITY_THRESHOLD} after the whole cascade",
        "",
        "| model | method | randomised down to: Spearman | flagged | maps |",
        "|---|---|---|---|---|",
    ]
    for r in sanity:
        steps = ", ".join(
            f"{layer}: {format_number(v, 2)}" for layer, v in zip(r["layers"], r["spearman"], strict=True)
        )
        lines.append(f"| {r['model']} | {r['method']} | {steps} | {'yes' if r['flagged'] else 'no'} | {r['n']} |")
    atomic_write_text(tables / "sanity.md", "\n".join([*lines, ""]))
    files["sanity"] = {"md": "tables/sanity.md"}
    short = result["shortcut"]
    lines = [
        "### shortcut audit",
        "",
        "| model | outside lungs [95% CI] | border frame | zero padding | maps |",
        "|---|---|---|---|---|",
    ]
    for r in short["rows"]:
        outside = (
            f"{format_number(r['outside_lung_share'])} [{format_number(r['ci_low'])}, {format_number(r['ci_high'])}]"
        )
        lines.append(
            f"| {r['model']} | {outside} | {format_number(r['border_share'])} | {format_number(r['padding_share'])} | "
            f"{r['n_maps']} |"
        )
    lines += ["", "| model | image | label | method | outside lungs | overlay |", "|---|---|---|---|---|---|"]
    for t in short["top_images"]:
        lines.append(
            f"| {t['model']} | {t['image']} | {t['label']} | {t['method']} | "
            f"{format_number(t['outside_lung_share'])} | {t['overlay']} |"
        )
    atomic_write_text(tables / "shortcut.md", "\n".join([*lines, ""]))
    short_keys = ("model", "outside_lung_share", "ci_low", "ci_high", "border_share", "padding_share", "n", "n_maps")
    rows = ([r.get(k) for k in short_keys] for r in short["rows"])
    atomic_write_text(tables / "shortcut.csv", _csv_text(short_keys, rows))
    files["shortcut"] = {"md": "tables/shortcut.md", "csv": "tables/shortcut.csv"}
    ranking = result["ranking"]
    lines = ["### ranking", "", ranking["verdict"], "", "| rank | method | score |", "|---|---|---|"]
    lines += [f"| {r['rank']} | {r['method']} | {r['score']:.3f} |" for r in ranking["methods"]]
    lines += ["", "| rank | model | score |", "|---|---|---|"]
    lines += [f"| {r['rank']} | {r['model']} | {r['score']:.3f} |" for r in ranking["models"]]
    atomic_write_text(tables / "ranking.md", "\n".join([*lines, ""]))
    files["ranking"] = {"md": "tables/ranking.md"}
    return files


def per_map_csv(maps: list[ScoredMap]) -> str:
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
                e["map"],
                *(m.value(k) for k in PER_MAP_VALUES),
                ";".join(m.sanity_layers),
                ";".join(f"{v:.6g}" for v in m.sanity),
            ]
        )
    return _csv_text(header, rows)


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def draw_figures(out: Path, maps: list[ScoredMap], result: dict[str, Any]) -> dict[str, str]:
    from matplotlib.figure import Figure

    files: dict[str, str] = {}
    figures = out / "figures"
    models = model_order(maps)
    methods = method_order(maps)
    with_curves = [m for m in maps if m.curves]
    if with_curves:
        fig = Figure(figsize=(10, 3.0 * len(models) + 0.6), layout="constrained")
        axes = fig.subplots(len(models), 2, squeeze=False)
        for row, model in enumerate(models):
            for col, kind in enumerate(("deletion", "insertion")):
                ax = axes[row][col]
                items = [m for m in with_curves if m.model == model]
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
        _save(fig, figures / "curves.png")
        files["curves"] = "figures/curves.png"
    for name, block in result["metrics"].items():
        rows = block["rows"]
        if not rows:
            continue
        fig = Figure(figsize=(max(6.0, 1.1 * len(models) * max(1, len(methods)) / 2 + 2), 4.0), layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(methods))
        cells = {(r["model"], r["method"]): r for r in rows}
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
        _save(fig, figures / f"bars_{name}.png")
        files[f"bars_{name}"] = f"figures/bars_{name}.png"
    sanity = result["sanity"]["rows"]
    if sanity:
        tested = list(dict.fromkeys(r["model"] for r in sanity))
        fig = Figure(figsize=(6, 3.2 * len(tested) + 0.4), layout="constrained")
        axes = fig.subplots(len(tested), 1, squeeze=False)
        for i, model in enumerate(tested):
            ax = axes[i][0]
            for r in (r for r in sanity if r["model"] == model):
                ys = [v if v is not None else np.nan for v in r["spearman"]]
                ax.plot(range(len(ys)), ys, marker="o", label=r["method"])
                ax.set_xticks(range(len(ys)), [layer.rsplit(".", 1)[-1] for layer in r["layers"]], rotation=45)
            ax.axhline(SANITY_THRESHOLD, color="grey", linestyle=":")
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{model}: cascading randomisation (head first)")
            ax.set_ylabel("Spearman with original")
            ax.legend(fontsize=7)
        _save(fig, figures / "sanity.png")
        files["sanity"] = "figures/sanity.png"
    return files
