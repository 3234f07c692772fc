"""What ``cxrlens evaluate-external`` writes besides ``metrics.json``: tables (markdown and CSV) and figures
(a reliability diagram and per-label sensitivity / specificity beside the in-domain numbers, per model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.figures import new_figure, save_figure
from cxrlens.fileio import atomic_write_text, csv_text
from cxrlens.run.layout import ExternalFiles
from cxrlens.text import fmt

SUMMARY_COLUMNS = ("precision", "recall", "f1", "specificity")


def summary_markdown(result: dict[str, Any]) -> str:
    """Per model: the external micro metrics beside the in-domain ones and the change, ECE."""
    lines = [
        f"External set **{result['name']}**: {result['images']} images of {result['patients']} patients.",
        "",
        "| model | micro F1 external | micro F1 in-domain | change | precision | recall | specificity | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["models"].items():
        ext, own = entry["micro"], (entry.get("in_domain") or {}).get("micro", {})
        lines.append(
            f"| {name} | {fmt(ext['f1'])} | {fmt(own.get('f1'))} | {fmt(entry['change'].get('micro_f1'))} | "
            f"{fmt(ext['precision'])} | {fmt(ext['recall'])} | {fmt(ext['specificity'])} | {fmt(entry['ece'])} |"
        )
    if result["not_evaluable"]:
        lines += ["", f"Not evaluable here (no positive or no negative image): {', '.join(result['not_evaluable'])}."]
    for note in result["notes"]:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def labels_csv(result: dict[str, Any]) -> str:
    header = ["model", "label", "set", "support", "negatives", "evaluable"]
    for metric in ("sensitivity", "specificity", "ppv", "auroc"):
        header += [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
    rows = []
    for name, entry in result["models"].items():
        sets = [("external", entry), ("in-domain", entry.get("in_domain"))]
        sets += [(f"source {s}", part) for s, part in (entry.get("by_source") or {}).items()]
        for where, part in sets:
            if not part:
                continue
            for label, row in part["labels"].items():
                values = [name, label, where, row["support"], row["negatives"], row["evaluable"]]
                for metric in ("sensitivity", "specificity", "ppv", "auroc"):
                    values += [row[metric], *row[f"{metric}_ci"]]
                rows.append(values)
    return csv_text(header, rows)


def reliability_figure(entry: dict[str, Any], name: str) -> Any:
    fig = new_figure(4.4, 4.2, constrained=True)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="perfectly calibrated")
    for where, part in (("external", entry), ("in-domain", entry.get("in_domain"))):
        bins = (part or {}).get("reliability") or []
        points = [(b["confidence"], b["frequency"]) for b in bins if b["n"]]
        if points:
            x, y = zip(*points, strict=True)
            ece = fmt((part or {}).get("ece"))
            ax.plot(x, y, marker="o", linewidth=1.2, label=f"{where} (ECE {ece})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{name}: reliability", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    return fig


def labels_figure(entry: dict[str, Any], name: str) -> Any:
    labels = [label for label, row in entry["labels"].items() if row["evaluable"]]
    fig = new_figure(max(5.0, 0.9 * len(labels) + 2.5), 4.0, constrained=True)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    own: dict[str, Any] = entry.get("in_domain") or {"labels": {}}
    bars = [(metric, where, part) for where, part in (("external", entry), ("in-domain", own))
            for metric in ("sensitivity", "specificity")]  # fmt: skip
    width = 0.8 / len(bars)
    for k, (metric, where, part) in enumerate(bars):
        values = [(part["labels"].get(label) or {}).get(metric) for label in labels]
        ax.bar(x + (k - 1.5) * width, [v if v is not None else 0 for v in values], width, label=f"{metric} {where}",
               hatch="//" if where == "in-domain" else None, alpha=0.85)  # fmt: skip
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{name}: external vs in-domain", fontsize="medium")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def write_files(result: dict[str, Any], files: ExternalFiles) -> dict[str, Any]:
    """Tables and figures; returns their paths relative to the external folder."""
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    tables = {"summary.md": summary_markdown(result), "label_numbers.csv": labels_csv(result)}
    for name, text in tables.items():
        atomic_write_text(files.tables / name, text)
        written["tables"][name] = (files.tables / name).relative_to(files.root).as_posix()
    for name, entry in result["models"].items():
        paths: list[Path] = []
        if entry.get("reliability"):
            paths.append(save_figure(reliability_figure(entry, name), files.reliability_figure(name)))
        if any(row["evaluable"] for row in entry["labels"].values()):
            paths.append(save_figure(labels_figure(entry, name), files.labels_figure(name)))
        written["figures"][name] = [p.relative_to(files.root).as_posix() for p in paths]
    return written
