"""Patient-grouped, multi-label-stratified splits.

``kfold``: each fold's test part is one k-th of the patients (every image is tested exactly once).
``holdout``: the paper's repeated random patient split (60/40 by default), ``folds`` repeats.
``by-source``: one fold per source (collection): it tests that source and trains on the others, so the
numbers measure transfer to a collection never seen in training (a patient belongs to the source of most of
its images).
In both, a ``val_fraction`` of each fold's training patients is held out for checkpoint selection,
so the test part is never used before the final evaluation. Stratification works on the patient
label matrix (a patient has a label if any of their images has it) plus the image source. Patients
that share an identical image file are kept together (see :mod:`cxrlens.data.duplicates`).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from cxrlens.config import SplitConfig
from cxrlens.data.duplicates import linked_patients
from cxrlens.data.labels import LabelSpace
from cxrlens.data.readers.base import read_csv_rows
from cxrlens.data.records import Dataset
from cxrlens.errors import DataError
from cxrlens.fileio import atomic_write_text, sha256_text

SUBSETS = ("train", "val", "test")
SPLIT_COLUMNS = ("filename", "patient_id", "fold", "subset")


@dataclass(frozen=True)
class SplitRow:
    filename: str
    patient_id: str
    fold: int
    subset: str


def _unit_matrix(dataset: Dataset, space: LabelSpace, unit_of: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """Split units (patients, joined when they share an identical image) x (labels + sources)."""
    units = sorted(set(unit_of.values()))
    index = {u: i for i, u in enumerate(units)}
    sources = sorted({r.source for r in dataset.records})
    matrix = np.zeros((len(units), len(space) + len(sources)), dtype=np.int64)
    for rec in dataset.records:
        row = index[unit_of[rec.patient_id]]
        matrix[row, : len(space)] |= space.encode(rec.labels).astype(np.int64)
        if len(sources) > 1:
            matrix[row, len(space) + sources.index(rec.source)] = 1
    return units, matrix


def _shuffle_split(matrix: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held-out) row indices, held-out ~ ``fraction`` of the rows, stratified."""
    n = matrix.shape[0]
    if fraction <= 0 or n < 2:
        return np.arange(n), np.array([], dtype=int)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    keep, held = next(splitter.split(np.zeros((n, 1)), matrix))
    if len(held) == 0 or len(keep) == 0:
        raise DataError(f"too few patients ({n}) to hold out {fraction:.0%}")
    return np.sort(keep), np.sort(held)


def make_splits(dataset: Dataset, space: LabelSpace, cfg: SplitConfig) -> list[SplitRow]:
    """Rows for every image and fold. Patients that share an identical image file (a re-posted X-ray
    under another patient id) are split as one unit, so the same pixels never reach train and test."""
    unit_of = linked_patients(dataset.records)
    units, matrix = _unit_matrix(dataset, space, unit_of)
    n = len(units)
    need = cfg.folds if cfg.scheme == "kfold" else 3
    if n < need:
        raise DataError(f"only {n} patient(s); {cfg.scheme} with {cfg.folds} folds needs at least {need}")
    fold_parts: list[tuple[np.ndarray, np.ndarray]] = []  # (train+val rows, test rows)
    if cfg.scheme == "kfold":
        splitter = MultilabelStratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
        fold_parts = list(splitter.split(np.zeros((n, 1)), matrix))
    elif cfg.scheme == "by-source":
        fold_parts = _source_folds(dataset, units, unit_of)
    else:
        for repeat in range(cfg.folds):
            fold_parts.append(_shuffle_split(matrix, cfg.test_fraction, cfg.seed + repeat))

    by_unit: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rec in dataset.records:
        by_unit[unit_of[rec.patient_id]].append((rec.filename, rec.patient_id))

    rows: list[SplitRow] = []
    for fold, (train_val, test) in enumerate(fold_parts):
        train_rows, val_rows = _shuffle_split(matrix[train_val], cfg.val_fraction, cfg.seed + 1000 + fold)
        subset_of: dict[int, str] = {int(i): "test" for i in test}
        subset_of.update({int(train_val[i]): "train" for i in train_rows})
        subset_of.update({int(train_val[i]): "val" for i in val_rows})
        for i, unit in enumerate(units):
            for filename, patient in by_unit[unit]:
                rows.append(SplitRow(filename, patient, fold, subset_of[i]))
    check_splits(rows, kfold=cfg.scheme != "holdout")
    return rows


def unit_sources(dataset: Dataset, units: Sequence[str], unit_of: dict[str, str]) -> list[str]:
    """The source of each split unit: the source of most of its images (ties: the first by name)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in dataset.records:
        counts[unit_of[rec.patient_id]][rec.source] += 1
    return [min(counts[u].items(), key=lambda kv: (-kv[1], kv[0]))[0] for u in units]


def fold_sources(dataset: Dataset) -> list[str]:
    """The sources in the order of the by-source folds (fold k tests source k)."""
    return sorted({r.source for r in dataset.records})


def _source_folds(
    dataset: Dataset, units: Sequence[str], unit_of: dict[str, str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    sources = fold_sources(dataset)
    if len(sources) < 2:
        raise DataError(
            f"by-source splits need at least two sources; the data has {len(sources)} ({', '.join(sources)}): "
            "combine collections with repeated --data"
        )
    of_unit = np.asarray(unit_sources(dataset, units, unit_of))
    return [(np.flatnonzero(of_unit != source), np.flatnonzero(of_unit == source)) for source in sources]


def hold_out(dataset: Dataset, space: LabelSpace, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(kept, held out): a share of the patients (stratified on labels and source; patients sharing an
    identical image stay together) set aside from every fold, for use as an external test set."""
    unit_of = linked_patients(dataset.records)
    units, matrix = _unit_matrix(dataset, space, unit_of)
    _, held = _shuffle_split(matrix, fraction, seed + 7919)
    held_units = {units[i] for i in held}
    kept = [r.filename for r in dataset.records if unit_of[r.patient_id] not in held_units]
    gone = [r.filename for r in dataset.records if unit_of[r.patient_id] in held_units]
    return dataset.subset(kept), dataset.subset(gone)


def absent_training_labels(rows: Sequence[SplitRow], dataset: Dataset, space: LabelSpace) -> dict[int, list[str]]:
    """Fold -> labels without a single training image in that fold (its model cannot learn them)."""
    index = dataset.by_filename()
    out: dict[int, list[str]] = {}
    for fold in sorted({r.fold for r in rows}):
        seen = set().union(*(index[r.filename].labels for r in rows if r.fold == fold and r.subset == "train"))
        missing = [name for name in space.names if name not in seen]
        if missing:
            out[fold] = missing
    return out


def check_splits(rows: Sequence[SplitRow], kfold: bool = False) -> None:
    """No patient in two subsets of one fold; for k-fold, every image tested exactly once."""
    seen: dict[tuple[int, str], str] = {}
    for row in rows:
        if row.subset not in SUBSETS:
            raise DataError(f"split row for {row.filename}: subset {row.subset!r} is not one of {SUBSETS}")
        key = (row.fold, row.patient_id)
        if seen.setdefault(key, row.subset) != row.subset:
            raise DataError(f"patient {row.patient_id} is in both {seen[key]} and {row.subset} of fold {row.fold}")
    if kfold:
        tested: dict[str, int] = defaultdict(int)
        for row in rows:
            if row.subset == "test":
                tested[row.filename] += 1
        files = {row.filename for row in rows}
        bad = [f for f in files if tested.get(f, 0) != 1]
        if bad:
            raise DataError(f"{len(bad)} image(s) are not tested exactly once, e.g. {bad[0]}")


def splits_csv(rows: Sequence[SplitRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for row in rows:
        writer.writerow([row.filename, row.patient_id, row.fold, row.subset])
    return buffer.getvalue()


def write_splits(rows: Sequence[SplitRow], path: str | Path) -> str:
    """Write atomically; returns the content hash (recorded in run provenance)."""
    text = splits_csv(rows)
    atomic_write_text(path, text)
    return sha256_text(text)[:16]


def read_splits(path: str | Path) -> list[SplitRow]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: splits file not found (make one with `cxrlens data split`)")
    header, raw = read_csv_rows(path)
    missing = [c for c in SPLIT_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing required column(s) {', '.join(missing)}")
    rows = []
    for line, row in raw:
        try:
            fold = int(row["fold"])
        except ValueError:
            raise DataError(f"{path}:{line}: fold {row['fold']!r} is not an integer") from None
        rows.append(SplitRow(row["filename"], row["patient_id"], fold, row["subset"]))
    check_splits(rows)
    return rows


def fold_files(rows: Sequence[SplitRow], fold: int) -> dict[str, list[str]]:
    """subset -> filenames of one fold."""
    out: dict[str, list[str]] = {s: [] for s in SUBSETS}
    for row in rows:
        if row.fold == fold:
            out[row.subset].append(row.filename)
    if not any(out.values()):
        folds = sorted({r.fold for r in rows})
        raise DataError(f"fold {fold} is not in the splits; folds: {folds}")
    return out


def split_counts(rows: Sequence[SplitRow], dataset: Dataset, space: LabelSpace) -> list[dict[str, object]]:
    """One row per fold and subset: images, patients and per-label image counts."""
    index = dataset.by_filename()
    table: list[dict[str, object]] = []
    for fold in sorted({r.fold for r in rows}):
        for subset in SUBSETS:
            part = [r for r in rows if r.fold == fold and r.subset == subset]
            if not part:
                continue
            counts = {name: 0 for name in space.names}
            for r in part:
                for name in index[r.filename].labels & set(space.names):
                    counts[name] += 1
            table.append(
                {
                    "fold": fold,
                    "subset": subset,
                    "images": len(part),
                    "patients": len({r.patient_id for r in part}),
                    **counts,
                }
            )
    return table
