"""`cxrlens nap`: activation profiles of one trained model of a run, written to ``nap/<model>/fold<k>/``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cxrlens.config import NapConfig
from cxrlens.data.labels import LabelSpace
from cxrlens.data.splits import fold_files
from cxrlens.errors import DataError, LabelError, RunError
from cxrlens.models.registry import device_for
from cxrlens.nap.expressions import DEFAULT_GROUPS, parse_expression
from cxrlens.nap.files import write_nap
from cxrlens.nap.profiles import compute_nap
from cxrlens.run import ImageSource, LabelledImages, ModelBank, Run
from cxrlens.run.stream import batch_size_for, stream_images


@dataclass(frozen=True)
class NapSummary:
    model: str
    fold: int
    n_images: int
    summary: dict[str, Any]  # what summary.json holds (groups, layers with their top maps, files)
    dir: str  # the output folder
    paths: tuple[str, ...]  # every written file


def _choose(run: Run, model: str | None, fold: int | None) -> tuple[str, int]:
    trained = run.trained()
    listing = ", ".join(f"{m} fold {f}" for m, f in trained) or "nothing"
    if not trained:
        raise RunError(f"{run.root}: no trained models (trained: {listing}); run `cxrlens cv`")
    name = model or trained[0][0]
    folds = sorted(f for m, f in trained if m == name)
    if not folds:
        raise RunError(f"{run.root}: model {name!r} is not trained in this run (trained: {listing}); run `cxrlens cv`")
    if fold is None:
        return name, folds[0]
    if fold not in folds:
        raise RunError(f"{run.root}: {name} fold {fold} is not trained (trained folds of {name}: {folds})")
    return name, fold


def _batches(dataset: LabelledImages, size: int, source: ImageSource) -> Iterator[torch.Tensor]:
    """The dataset's images in order, streamed through the run's loader (an unreadable one stops with its name)."""
    records = dataset.records
    for batch in stream_images([r.path for r in records], source.preprocess, size, cache=source.cache):
        if batch.failed:
            index, reason = batch.failed[0]
            raise DataError(f"{records[index].path}: {reason}")
        yield batch.images


def run_nap(run: Run, cfg: NapConfig, progress: Callable[[int], None] | None = None) -> NapSummary:
    """Activation profiles of ``cfg.model`` (default: the first trained) on ``cfg.fold`` (default: its lowest).

    ``cfg.images``: ``test`` (that fold's test images) or ``all`` (every image of the splits). Groups use the
    ground-truth labels; an unknown label makes an image a member only where the expression is still certain.
    """
    groups = dict(cfg.groups) or DEFAULT_GROUPS
    for name, expression in groups.items():
        try:
            parse_expression(expression, run.label_names)
        except LabelError as err:
            raise type(err)(f"group {name!r}: {err}") from None
    model_name, fold = _choose(run, cfg.model, cfg.fold)
    splits = run.splits()
    if cfg.images == "test":
        files = fold_files(splits, fold)["test"]
    else:
        files = list(dict.fromkeys(row.filename for row in splits))
    if not files:
        raise RunError(f"{run.root}: fold {fold} has no {cfg.images} images")
    space = LabelSpace(run.label_names)
    source = ImageSource(run)
    dataset = source.labelled(files, space)
    model = ModelBank(run, device=device_for(cfg.accelerator)).model(model_name, fold)
    size = batch_size_for([model], run.preprocess.size, cfg.memory_gib)
    truth = np.where(dataset.known, dataset.targets, np.nan)  # unknown labels stay unknown in the groups
    result = compute_nap(model, _batches(dataset, size, source), truth, space.names, groups,
                         cfg.layers or None, progress)  # fmt: skip
    source.close()

    out = run.layout.nap(model_name, fold)
    summary = write_nap(result, out, cfg.top_k, {"model": model_name, "fold": fold, "images": cfg.images})
    files_written = summary["files"]
    paths = [out.npz, out.summary, *(out.root / name for name in files_written["figures"].values()), out.overview]
    return NapSummary(model_name, fold, result.n_images, summary, str(out.root), tuple(str(p) for p in paths))
