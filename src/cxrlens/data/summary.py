"""What is in a dataset: counts, labels, views, sizes, rare labels, what each source annotates, and problems."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cxrlens.config import DataConfig
from cxrlens.data.duplicates import identical_files
from cxrlens.data.imageio import read_info
from cxrlens.data.labels import PRESETS, label_counts
from cxrlens.data.records import Dataset, ImageRecord, ProblemLog
from cxrlens.errors import ImageReadError


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {"min": int(arr.min()), "median": float(np.median(arr)), "max": int(arr.max())}


def annotation_table(records: Sequence[ImageRecord], labels: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """source -> label -> {"positive", "negative", "unknown"} image counts: which source annotates which label."""
    images: Counter[str] = Counter()
    positive: dict[str, Counter[str]] = {}
    unknown: dict[str, Counter[str]] = {}
    for r in records:
        images[r.source] += 1
        positive.setdefault(r.source, Counter()).update(r.labels)
        unknown.setdefault(r.source, Counter()).update(r.unknown)
    return {
        source: {
            label: {
                "positive": positive[source][label],
                "negative": images[source] - positive[source][label] - unknown[source][label],
                "unknown": unknown[source][label],
            }
            for label in labels
        }
        for source in sorted(images)
    }


def summarize(
    dataset: Dataset, cfg: DataConfig, check_images: bool = True, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """A JSON-ready summary; with ``check_images`` every file's header is read and checked."""
    records = dataset.records
    log = ProblemLog(cfg.skip_bad)
    widths: list[int] = []
    heights: list[int] = []
    bad_files: set[str] = set()
    if check_images:
        pp = cfg.preprocess
        for rec in records:
            try:
                info = read_info(rec.path, max_pixels=pp.max_pixels, min_side=pp.min_side)
                widths.append(info.width)
                heights.append(info.height)
            except ImageReadError as err:
                log.report(rec.origin, f"{rec.filename}: {err.reason}")
                bad_files.add(rec.filename)
            if progress:
                progress(1)
    usable = [r for r in records if r.filename not in bad_files]
    counts = label_counts(r.labels for r in usable)
    minimum = cfg.labels.min_images
    if cfg.labels.names:
        space = list(cfg.labels.names)
    elif cfg.labels.preset in PRESETS:
        space = list(PRESETS[cfg.labels.preset])
    else:
        space = sorted(n for n, c in counts.items() if c >= minimum)
    rare = {n: counts.get(n, 0) for n in sorted(set(space) | set(counts)) if counts.get(n, 0) < minimum}
    in_space = set(space)
    unknown = label_counts(r.unknown for r in usable)
    shown = [*counts, *(n for n in space if n not in counts)]
    by_source: dict[str, dict[str, int]] = {}
    for source in sorted({r.source for r in usable}):
        part = [r for r in usable if r.source == source]
        by_source[source] = {"images": len(part), "patients": len({r.patient_id for r in part})}
    problems = [str(p) for p in dataset.problems + log.problems]
    notes = list(dataset.notes)
    groups = identical_files(usable) if check_images else []
    identical = [[r.filename for r in group] for group in groups]
    if identical:
        across = sum(1 for group in groups if len({r.patient_id for r in group}) > 1)
        notes.append(
            f"{len(identical)} group(s) of identical image files ({across} across different patient ids; "
            "`data split` keeps those patients together): "
            + "; ".join(" = ".join(g) for g in identical[:5])
            + (" ..." if len(identical) > 5 else "")
        )
    return {
        "root": str(dataset.root),
        "images": len(usable),
        "patients": len({r.patient_id for r in usable}),
        "sources": by_source,
        "labels": counts,
        "findings": dict(Counter(r.finding for r in usable).most_common()),
        "label_space": space,
        "rare_labels": rare,
        "outside_label_space": {n: c for n, c in counts.items() if n not in in_space},
        "images_without_label_in_space": sum(1 for r in usable if not (r.labels & in_space)),
        "unknown_labels": unknown,
        "annotation": annotation_table(usable, shown),
        "label_policy": {
            "tree": cfg.labels.tree,
            "uncertain": cfg.labels.uncertain,
            "unmentioned": cfg.labels.unmentioned,
        },
        "min_images": cfg.labels.min_images,
        "views": dict(Counter(r.view or "unknown" for r in usable).most_common()),
        "lung_masks": sum(1 for r in usable if r.lung_mask is not None),
        "image_sizes": {"width": _stats(widths), "height": _stats(heights)} if check_images else {},
        "problems": problems,
        "skipped": len(problems),
        "identical_files": identical,
        "notes": notes,
    }
