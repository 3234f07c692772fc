"""Every trained model's probabilities on an external set, as ``predict`` computes them (a model's probability is
the mean over its folds' checkpoints), stored in ``external/<name>/predictions.csv`` and reused while the
images, the checkpoints and the preprocessing stay the same."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cxrlens.data.cache import PreprocessCache
from cxrlens.data.records import ImageRecord
from cxrlens.fileio import atomic_write_text, csv_text, read_json, stable_hash, write_json
from cxrlens.run import ModelBank, Run
from cxrlens.run.layout import ExternalFiles
from cxrlens.run.predictions import probability_text

BATCH = 16
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
    progress: Callable[[int], None] | None = None,
) -> ExternalPredictions:
    """The probabilities of every trained model (mean over its folds) on ``records`` (read from ``cache``)."""
    labels = run.label_names
    key = _key(run, records, cache)
    stored = _read(files, key, records, labels)
    if stored is not None:
        return ExternalPredictions(tuple(r.filename for r in records), stored, reused=True)
    bank = ModelBank(run)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for fold, names in run.trained_by_fold().items():  # one fold's models in memory at a time
        for start in range(0, len(records), BATCH):
            chunk = records[start : start + BATCH]
            batch = torch.from_numpy(np.stack([cache.load(r.path) for r in chunk]))[:, None]
            with torch.no_grad():
                for name in names:
                    probs = torch.sigmoid(bank.model(name, fold)(batch).double()).numpy()
                    total = sums.setdefault(name, np.zeros((len(records), len(labels))))
                    total[start : start + len(chunk)] += probs
            if progress:
                progress(len(chunk))
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    means = {name: sums[name] / counts[name] for name in sorted(sums)}
    rows = [
        [rec.filename, rec.patient_id, name, *(probability_text(v) for v in means[name][i])]
        for name in means
        for i, rec in enumerate(records)
    ]
    atomic_write_text(files.predictions, csv_text([*COLUMNS, *labels], rows))
    write_json(files.predictions_key, {"key": key})
    cache.save_index()
    return ExternalPredictions(tuple(r.filename for r in records), means, reused=False)
