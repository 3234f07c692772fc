"""The run's tables: ``labels.csv`` (ground truth) and ``predictions.csv`` (out-of-fold probabilities).

``labels.csv``: ``filename, patient_id`` and one 0/1 column per label; an empty cell is an *unknown* value (a
label the image's source does not annotate, or an uncertain one under ``labels.uncertain: ignore``): it is
missing, not negative, and is left out of every loss and metric. A run without unknown values has no empty
cell (the file of older runs). ``predictions.csv``: ``filename,
patient_id, fold, model, subset`` and one probability column per label (``subset`` is ``test`` or ``val``),
written at full precision (shortest round-trip text of the float64 sigmoid of the logit: no rounding, no ties
made up). Every problem raises :class:`~cxrlens.errors.RunError` with one line naming the file and, where it
applies, the line number.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrlens.data.labels import LabelSpace
from cxrlens.data.records import ImageRecord
from cxrlens.errors import RunError
from cxrlens.fileio import atomic_write_text, csv_text

SUBSETS = ("test", "val")
#: a row of :func:`read_truth` (patient_id, 0/1 vector, known mask) or of :func:`read_labels` (no mask)
TruthRow = tuple[str, np.ndarray, np.ndarray] | tuple[str, np.ndarray]
LABEL_KEY_COLUMNS = ("filename", "patient_id")
PREDICTION_KEY_COLUMNS = ("filename", "patient_id", "fold", "model", "subset")


@dataclass(frozen=True)
class Predictions:
    """Probabilities and ground truth of one model (or ensemble) on one fold's test or val images.

    ``probs`` and ``truth`` have shape (images, labels); row ``i`` belongs to ``filenames[i]``. ``known`` (bool,
    same shape) is False where the truth is unknown (its ``truth`` is 0 there, and means nothing); None: all known.
    """

    filenames: tuple[str, ...]
    probs: np.ndarray
    truth: np.ndarray
    known: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.filenames)

    @property
    def known_mask(self) -> np.ndarray:
        """``known``, or all True."""
        return np.ones(self.truth.shape, dtype=bool) if self.known is None else self.known

    def take(self, filenames: Sequence[str]) -> Predictions:
        """The rows of the given filenames, in that order (KeyError if one is missing)."""
        index = {name: i for i, name in enumerate(self.filenames)}
        rows = np.asarray([index[name] for name in filenames], dtype=np.int64)
        known = None if self.known is None else self.known[rows]
        return Predictions(tuple(filenames), self.probs[rows], self.truth[rows], known)


@dataclass(frozen=True)
class RunData:
    """The checked out-of-fold predictions of a run: (model, fold, subset) -> :class:`Predictions`."""

    path: Path  # predictions.csv, for messages
    label_names: tuple[str, ...]
    blocks: Mapping[tuple[str, int, str], Predictions]

    def models(self) -> list[str]:
        """Every model with predictions, sorted."""
        return sorted({model for model, _, _ in self.blocks})

    def folds(self, model: str) -> list[int]:
        """Folds in which ``model`` has test predictions, sorted."""
        return sorted({fold for m, fold, subset in self.blocks if m == model and subset == "test"})

    def get(self, model: str, fold: int, subset: str) -> Predictions | None:
        return self.blocks.get((model, fold, subset))


def read_run_data(labels_csv: Path, predictions_csv: Path, label_names: Sequence[str]) -> RunData:
    """Read ``labels.csv`` and ``predictions.csv`` and check them against each other."""
    truth = read_truth(labels_csv, label_names)
    blocks = read_predictions(predictions_csv, label_names, truth)
    return RunData(path=predictions_csv, label_names=tuple(label_names), blocks=blocks)


def _rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file whose header holds every required column."""
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise RunError(f"{path}: empty file (no header)")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise RunError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise RunError(f"{path}: line {reader.line_num}: expected {len(header)} fields, found {len(values)}")
            yield reader.line_num, dict(zip(header, (v.strip() for v in values), strict=True))


def read_labels(path: Path, label_names: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """filename -> (patient_id, 0/1 vector in ``label_names`` order; 0 also where unknown: see :func:`read_truth`)."""
    return {name: (patient, vector) for name, (patient, vector, _) in read_truth(path, label_names).items()}


def read_truth(path: Path, label_names: Sequence[str]) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """filename -> (patient_id, 0/1 vector, known mask) in ``label_names`` order (an empty cell: unknown, 0)."""
    truth: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for line, row in _rows(path, [*LABEL_KEY_COLUMNS, *label_names]):
        name = row["filename"]
        if not name:
            raise RunError(f"{path}: line {line}: empty filename")
        if name in truth:
            raise RunError(f"{path}: line {line}: duplicate filename {name!r}")
        vector = np.zeros(len(label_names), dtype=np.int8)
        known = np.ones(len(label_names), dtype=bool)
        for j, label in enumerate(label_names):
            text = row[label]
            if not text:
                known[j] = False
                continue
            bad = f"{path}: line {line}: {label!r} is {text!r}, expected 0 or 1 (or empty: unknown)"
            try:
                value = float(text)
            except ValueError:
                raise RunError(bad) from None
            if value not in (0.0, 1.0):
                raise RunError(bad)
            vector[j] = int(value)
        truth[name] = (row["patient_id"], vector, known)
    if not truth:
        raise RunError(f"{path}: no rows")
    return truth


def _probability(path: Path, line: int, label: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RunError(f"{path}: line {line}: probability of {label!r} is {text!r}, not a number") from None
    if math.isnan(value):
        raise RunError(f"{path}: line {line}: probability of {label!r} is NaN")
    if not 0.0 <= value <= 1.0:
        raise RunError(f"{path}: line {line}: probability of {label!r} is {text}, outside [0, 1]")
    return value


def read_predictions(
    path: Path, label_names: Sequence[str], truth: Mapping[str, TruthRow]
) -> dict[tuple[str, int, str], Predictions]:
    """(model, fold, subset) -> :class:`Predictions`, checked against the ground truth of ``labels.csv``
    (:func:`read_truth`, whose known mask the blocks carry, None when every value is known; or
    :func:`read_labels`: every value known)."""
    names: dict[tuple[str, int, str], list[str]] = {}
    probs: dict[tuple[str, int, str], list[list[float]]] = {}
    seen: set[tuple[str, int, str, str]] = set()
    for line, row in _rows(path, [*PREDICTION_KEY_COLUMNS, *label_names]):
        name = row["filename"]
        if name not in truth:
            raise RunError(f"{path}: line {line}: filename {name!r} is not in the run's labels")
        patient = truth[name][0]
        if row["patient_id"] != patient:
            raise RunError(
                f"{path}: line {line}: patient_id {row['patient_id']!r} of {name!r} differs from {patient!r} "
                "in the run's labels"
            )
        model = row["model"]
        if not model:
            raise RunError(f"{path}: line {line}: empty model name")
        try:
            fold = int(row["fold"])
        except ValueError:
            raise RunError(f"{path}: line {line}: fold {row['fold']!r} is not an integer") from None
        subset = row["subset"]
        if subset not in SUBSETS:
            raise RunError(f"{path}: line {line}: subset {subset!r} must be one of {', '.join(SUBSETS)}")
        if (model, fold, subset, name) in seen:
            raise RunError(f"{path}: line {line}: {name!r} appears twice for model {model!r} fold {fold} {subset}")
        seen.add((model, fold, subset, name))
        key = (model, fold, subset)
        names.setdefault(key, []).append(name)
        probs.setdefault(key, []).append([_probability(path, line, lab, row[lab]) for lab in label_names])
    if not names:
        raise RunError(f"{path}: no rows")
    for model, fold, subset, name in seen:
        if subset == "test" and (model, fold, "val", name) in seen:
            raise RunError(f"{path}: {name!r} is in both test and val of model {model!r} fold {fold}")
    return {
        key: Predictions(
            filenames=tuple(files),
            probs=np.asarray(probs[key], dtype=np.float64).reshape(len(files), len(label_names)),
            truth=np.stack([truth[f][1] for f in files]),
            known=_known_or_none(np.stack([_known_of(truth[f]) for f in files])),
        )
        for key, files in names.items()
    }


def _known_or_none(known: np.ndarray) -> np.ndarray | None:
    return None if known.all() else known


def _known_of(row: TruthRow) -> np.ndarray:
    return row[2] if len(row) > 2 else np.ones(len(row[1]), dtype=bool)


# -- writers --------------------------------------------------------------------------------------------------


def label_cells(record: ImageRecord, space: LabelSpace) -> list[int | str]:
    """One image's label cells: 1, 0, or "" where the value is unknown (never for a positive label)."""
    values = space.encode(record.labels)
    return [int(v) if v or name not in record.unknown else "" for name, v in zip(space.names, values, strict=True)]


def labels_csv_text(records: Iterable[ImageRecord], space: LabelSpace) -> str:
    rows = ([r.filename, r.patient_id, *label_cells(r, space)] for r in records)
    return csv_text([*LABEL_KEY_COLUMNS, *space.names], rows)


def write_labels(path: Path, records: Iterable[ImageRecord], space: LabelSpace) -> None:
    atomic_write_text(path, labels_csv_text(records, space))


def probability_text(value: float) -> str:
    """Full precision: the shortest text that reads back as the same float64."""
    return repr(float(value))


def prediction_rows(
    records: Sequence[ImageRecord], probs: np.ndarray, fold: int, model: str, subset: str
) -> list[list[str | int]]:
    """Rows of ``predictions.csv`` for one model, fold and subset (``probs``: images x labels)."""
    if len(records) != len(probs):
        raise ValueError(f"{len(records)} records but {len(probs)} probability rows")
    return [
        [rec.filename, rec.patient_id, fold, model, subset, *(probability_text(v) for v in row)]
        for rec, row in zip(records, probs, strict=True)
    ]


def write_predictions(path: Path, rows: Iterable[Sequence[str | int]], label_names: Sequence[str]) -> None:
    atomic_write_text(path, csv_text([*PREDICTION_KEY_COLUMNS, *label_names], rows))


def concatenate_predictions(parts: Sequence[Path], out: Path, label_names: Sequence[str]) -> int:
    """Write the rows of every fold's ``predictions.csv`` into ``out`` (same header); returns the row count."""
    header = [*PREDICTION_KEY_COLUMNS, *label_names]
    rows: list[list[str]] = []
    for path in parts:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != header:
                raise RunError(f"{path}: columns differ from the run's labels")
            rows.extend(reader)
    atomic_write_text(out, csv_text(header, rows))
    return len(rows)
