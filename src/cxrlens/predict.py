"""The predict stage: per-label probabilities and decisions for any images, with the run's models.

A model's probability is the mean over its folds' checkpoints (or one fold's with ``fold``); the ensemble's is
the mean over the models. Decisions use the thresholds of the run's last ``cxrlens evaluate``. Images stream
through the run's loader (decoded in worker processes, batches sized by the memory budget), so memory stays flat
in the number of images; :func:`predict_to_file` writes rows as they come and resumes an interrupted file.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrlens.config import PredictConfig
from cxrlens.data.sources import IMAGE_SUFFIXES
from cxrlens.errors import DataError, RunError
from cxrlens.fileio import atomic_open, read_json, stable_hash, write_json
from cxrlens.models.names import ENSEMBLE
from cxrlens.models.registry import device_for
from cxrlens.run import ModelBank, Run
from cxrlens.run.models import FoldAverage
from cxrlens.run.predictions import probability_text
from cxrlens.run.stream import batch_size_for, stream_images

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class InputImage:
    """An image to predict: how it is named in the output, its file, and its patient when known."""

    name: str
    path: Path
    patient_id: str = ""


@dataclass(frozen=True)
class ImagePrediction:
    image: str
    probabilities: dict[str, float]
    positive: tuple[str, ...]
    patient_id: str = ""


@dataclass(frozen=True)
class PredictionResult:
    model: str  # a model name or "ensemble"
    models: tuple[str, ...]  # the trained models averaged
    folds: tuple[int, ...]
    thresholds: dict[str, float]
    images: tuple[ImagePrediction, ...]
    skipped: tuple[str, ...] = ()  # "<image>: <reason>" of unreadable images (with skip_bad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "models": list(self.models),
            "folds": list(self.folds),
            "thresholds": dict(self.thresholds),
            "images": [
                {"image": p.image, "probabilities": dict(p.probabilities), "positive": list(p.positive)}
                for p in self.images
            ],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class PredictionFile:
    """What :func:`predict_to_file` did."""

    path: str
    images: int  # rows in the file
    computed: int  # rows computed now (the rest came from an interrupted earlier call)
    skipped: tuple[str, ...]


def inputs_of(run: Run, paths: Sequence[Path], data: Sequence[str], skip_bad: bool = False) -> list[InputImage]:
    """Files as given, folders as every image file under them (sorted), and the images of data sets of any
    layout (``data``, read with the run's label hierarchy; named by their file name in the set)."""
    out: list[InputImage] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{path}: no image files in this folder")
            out += [InputImage(str(f), f) for f in files]
        elif path.is_file():
            out.append(InputImage(str(path), path))
        else:
            raise DataError(f"{path}: no such file or folder")
    if data:
        out += [InputImage(r.filename, r.path, r.patient_id) for r in run.data_from(data, skip_bad).records]
    return out


def select_models(run: Run, model: str = ENSEMBLE, fold: int | None = None) -> list[tuple[str, int]]:
    """Trained (model, fold) pairs matching ``model`` ('ensemble' = all models) and ``fold``."""
    pairs = run.trained()
    if not pairs:
        raise RunError(f"{run.root}: no trained models yet (run `cxrlens cv` or `cxrlens train`)")
    names = sorted({m for m, _ in pairs})
    if model != ENSEMBLE:
        if model not in names:
            raise RunError(f"model {model!r} is not trained in {run.root}; trained: {', '.join(names)}, ensemble")
        pairs = [p for p in pairs if p[0] == model]
    if fold is not None:
        folds = sorted({f for _, f in pairs})
        pairs = [p for p in pairs if p[1] == fold]
        if not pairs:
            raise RunError(f"fold {fold} has no trained {model} model; folds: {folds}")
    return pairs


class _Predictor:
    """The chosen models (every fold at once), their thresholds and batch size."""

    def __init__(self, run: Run, cfg: PredictConfig) -> None:
        pairs = select_models(run, cfg.model, cfg.fold)
        self.names = sorted({m for m, _ in pairs})
        self.average = FoldAverage(ModelBank(run, device=device_for(cfg.accelerator)), self.names, cfg.fold)
        self.thresholds = run.thresholds(cfg.model, cfg.fold, members=self.names)
        self.label_names = run.label_names
        self.batch_size = batch_size_for(self.average.models(), run.preprocess.size, cfg.memory_gib)
        self.key = stable_hash(
            [cfg.model, cfg.fold, [(m, f, run.checkpoint_sha(m, f)) for m, f in pairs], self.thresholds]
        )

    def predictions(
        self, run: Run, images: Sequence[InputImage], workers: int | None, skip_bad: bool, progress: Progress
    ) -> Iterator[ImagePrediction | tuple[str, str]]:
        """Each image's prediction in order, or (image, reason) for an unreadable one (with ``skip_bad``)."""
        paths = [image.path for image in images]
        for batch in stream_images(paths, run.preprocess, self.batch_size, workers):
            if batch.failed and not skip_bad:
                index, reason = batch.failed[0]
                raise DataError(f"{images[index].path}: {reason} (pass --skip-bad to skip unreadable images)")
            by_model = self.average(batch.images) if batch.indices else {}
            for row, index in enumerate(batch.indices):
                probs = sum(by_model[name][row] for name in self.names) / len(self.names)
                named = {label: float(p) for label, p in zip(self.label_names, probs, strict=True)}
                positive = tuple(label for label, p in named.items() if p >= self.thresholds[label])
                yield ImagePrediction(images[index].name, named, positive, images[index].patient_id)
            for index, reason in batch.failed:
                yield images[index].name, reason
            if progress:
                progress(len(batch.indices) + len(batch.failed))


def predict_images(
    run: Run,
    images: Sequence[str | Path | InputImage],
    cfg: PredictConfig,
    skip_bad: bool = False,
    progress: Progress = None,
) -> PredictionResult:
    """Probabilities and decisions of ``cfg.model`` (and ``cfg.fold``) for images, kept in memory."""
    inputs = [i if isinstance(i, InputImage) else InputImage(str(i), Path(i)) for i in images]
    predictor = _Predictor(run, cfg)
    done: list[ImagePrediction] = []
    skipped: list[str] = []
    for item in predictor.predictions(run, inputs, cfg.workers, skip_bad, progress):
        if isinstance(item, ImagePrediction):
            done.append(item)
        else:
            skipped.append(f"{item[0]}: {item[1]}")
    return PredictionResult(
        cfg.model,
        tuple(predictor.names),
        tuple(predictor.average.folds),
        predictor.thresholds,
        tuple(done),
        tuple(skipped),
    )


def _partial(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")


def _done_rows(partial: Path, header: list[str]) -> list[list[str]]:
    """The complete rows of an interrupted file (a torn last line is dropped)."""
    with partial.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0] != header:
        return []
    return [row for row in rows[1:] if len(row) == len(header)]


def predict_to_file(
    run: Run,
    images: Sequence[InputImage],
    cfg: PredictConfig,
    out: Path,
    skip_bad: bool = False,
    progress: Progress = None,
) -> PredictionFile:
    """Stream predictions into ``out`` (CSV, or JSON when it ends in ``.json``), row by row into a partial file
    renamed at the end; a partial file left by an interrupted call with the same models is resumed."""
    predictor = _Predictor(run, cfg)
    header = ["image", "patient_id", "positive", *run.label_names]
    partial, key_file = _partial(out)
    done: list[list[str]] = []
    if partial.is_file() and key_file.is_file() and (read_json(key_file) or {}).get("key") == predictor.key:
        done = _done_rows(partial, header)
    finished = {row[0] for row in done}
    todo = [image for image in images if image.name not in finished]
    skipped: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(key_file, {"key": predictor.key})
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerows([header, *done])
        for item in predictor.predictions(run, todo, cfg.workers, skip_bad, progress):
            if isinstance(item, ImagePrediction):
                probabilities = [probability_text(item.probabilities[label]) for label in run.label_names]
                writer.writerow([item.image, item.patient_id, ";".join(item.positive), *probabilities])
                handle.flush()
            else:
                skipped.append(f"{item[0]}: {item[1]}")
    rows = _done_rows(partial, header)
    if out.suffix.lower() == ".json":
        document = {
            "model": cfg.model,
            "models": predictor.names,
            "folds": predictor.average.folds,
            "thresholds": predictor.thresholds,
            "images": [
                {
                    "image": row[0],
                    "patient_id": row[1],
                    "positive": [p for p in row[2].split(";") if p],
                    "probabilities": {label: float(v) for label, v in zip(run.label_names, row[3:], strict=True)},
                }
                for row in rows
            ],
            "skipped": skipped,
        }
        write_json(out, document)
        partial.unlink()
    else:
        with atomic_open(out, "w") as handle:
            handle.write(partial.read_text(encoding="utf-8"))
        partial.unlink()
    key_file.unlink()
    return PredictionFile(str(out), len(rows), len(rows) - len(done), tuple(skipped))
