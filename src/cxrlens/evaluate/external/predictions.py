"""Every trained model's probabilities on an external set, as ``predict`` computes them (a model's probability is
the mean over its folds' checkpoints), stored in ``external/<name>/predictions.csv`` and reused while the
images, the checkpoints and the preprocessing stay the same."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cxrlens.data.cache import PreprocessCache
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError
from cxrlens.fileio import atomic_write_text, csv_text, read_json, stable_hash, write_json
from cxrlens.run import ModelBank, Run
from cxrlens.run.layout import ExternalFiles
from cxrlens.run.models import FoldAverage
from cxrlens.run.predictions import probability_text
from cxrlens.run.stream import batch_size_for, stream_images

COLUMNS = ("filename", "patient_id", "model")


@dataclass(frozen=True)
class ExternalPredictions:
    """``probs[model]``: (images, labels) probabilities, rows in the order of ``filenames``."""

    filenames: tuple[str, ...]
    probs: dict[str, np.ndarray]
    reused: bool


def _key(run: Run, records: Sequence[ImageRecord], cache: PreprocessCache) -> str:
    checkpoints = [(m, f, run.checkpoint_sha(m, f)) for m, f in run.trained()]
    images = [(r.filename, cache.content_hash(r.path)) for r in records]
    return stable_hash([checkpoints, images, run.preprocess.key(), list(run.label_names)])


def _read(
    files: ExternalFiles, key: str, records: Sequence[ImageRecord], labels: Sequence[str]
) -> dict[str, np.ndarray] | None:
    """The stored probabilities if they were made from the same images, checkpoints and preprocessing."""
    if not (files.predictions.is_file() and files.predictions_key.is_file()):
        return None
    stored = read_json(files.predictions_key)
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    index = {r.filename: i for i, r in enumerate(records)}
    probs: dict[str, np.ndarray] = {}
    with files.predictions.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != [*COLUMNS, *labels]:
            return None
        for cells in reader:
            rows = probs.setdefault(cells[2], np.full((len(records), len(labels)), np.nan))
            rows[index[cells[0]]] = [float(v) for v in cells[3:]]
    if not probs or any(np.isnan(p).any() for p in probs.values()):
        return None  # an incomplete file: compute again
    return probs


def predict_external(
    run: Run,
    records: Sequence[ImageRecord],
    files: ExternalFiles,
    cache: PreprocessCache,
    memory_gib: float,
    progress: Callable[[int], None] | None = None,
) -> ExternalPredictions:
    """The probabilities of every trained model (mean over its folds) on ``records``, streamed through the
    run's loader (through ``cache``: a second evaluation of the same images does not decode them again)."""
    labels = run.label_names
    key = _key(run, records, cache)
    stored = _read(files, key, records, labels)
    if stored is not None:
        return ExternalPredictions(tuple(r.filename for r in records), stored, reused=True)
    average = FoldAverage(ModelBank(run), sorted({m for m, _ in run.trained()}))
    size = batch_size_for(average.models(), run.preprocess.size, memory_gib)
    probs = {name: np.zeros((len(records), len(labels))) for name in average.nets}
    for batch in stream_images([r.path for r in records], run.preprocess, size, cache=cache):
        if batch.failed:
            index, reason = batch.failed[0]
            raise DataError(f"{records[index].path}: {reason}")
        for name, values in average(batch.images).items():
            probs[name][batch.indices] = values
        if progress:
            progress(len(batch.indices))
    rows = [
        [rec.filename, rec.patient_id, name, *(probability_text(v) for v in probs[name][i])]
        for name in probs
        for i, rec in enumerate(records)
    ]
    atomic_write_text(files.predictions, csv_text([*COLUMNS, *labels], rows))
    write_json(files.predictions_key, {"key": key})
    cache.save_index()
    return ExternalPredictions(tuple(r.filename for r in records), probs, reused=False)
