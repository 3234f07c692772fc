"""A run folder opened read-only: :func:`open_run` and everything a stage reads from a run.

Opening a run writes nothing; the only write of this module is :meth:`Run.record_command`, which a stage calls
after it has written its own results. Creating a run (data, labels, splits) is :func:`cxrlens.run.create_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from cxrlens.config import PreprocessConfig, RunConfig, load_run_config
from cxrlens.data.labels import Hierarchy
from cxrlens.data.records import Dataset
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import SplitRow, read_splits
from cxrlens.errors import RunError
from cxrlens.fileio import read_json
from cxrlens.run.info import RunInfo, append_command, read_info
from cxrlens.run.layout import RunLayout
from cxrlens.run.predictions import RunData, read_run_data
from cxrlens.run.thresholds import RunThresholds, decision_thresholds, read_thresholds


class Run:
    """What a stage reads from a run folder (see :mod:`cxrlens.run.layout` for the files)."""

    def __init__(self, root: Path, info: RunInfo, config: RunConfig) -> None:
        self.layout = RunLayout(root)
        self.info = info
        self.config = config

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.info.label_names

    @property
    def preprocess(self) -> PreprocessConfig:
        """The run's preprocessing (from ``run.json``; checkpoints and image sources are checked against it)."""
        return self.info.preprocess

    @cached_property
    def hierarchy(self) -> Hierarchy:
        labels = self.config.data.labels
        return Hierarchy.build(labels.extra_nodes, labels.aliases)

    # -- trained models ------------------------------------------------------------------------------------
    def is_done(self, model: str, fold: int) -> bool:
        return self.layout.done_file(model, fold).is_file() and self.layout.model_file(model, fold).is_file()

    def trained(self) -> list[tuple[str, int]]:
        """(model, fold) pairs with a finished model, sorted."""
        pairs: list[tuple[str, int]] = []
        if not self.layout.models_dir.is_dir():
            return pairs
        for model_dir in sorted(p for p in self.layout.models_dir.iterdir() if p.is_dir()):
            for fold_dir in sorted(model_dir.iterdir()):
                fold = self.layout.fold_of_dir(fold_dir.name)
                if fold is not None and self.is_done(model_dir.name, fold):
                    pairs.append((model_dir.name, fold))
        return sorted(pairs, key=lambda p: (p[0], p[1]))

    def trained_by_fold(self) -> dict[int, list[str]]:
        """Fold -> its trained model names (sorted)."""
        out: dict[int, list[str]] = {}
        for model, fold in self.trained():
            out.setdefault(fold, []).append(model)
        return dict(sorted(out.items()))

    def done(self, model: str, fold: int) -> dict[str, Any]:
        """The ``done.json`` record of a trained model (best epoch, losses, checkpoint hash)."""
        path = self.layout.done_file(model, fold)
        if not path.is_file():
            raise RunError(f"{self.root}: {model} fold {fold} is not trained")
        data = read_json(path)
        return data if isinstance(data, dict) else {}

    def checkpoint_sha(self, model: str, fold: int) -> str:
        return str(self.done(model, fold).get("model_sha256", "")) if self.is_done(model, fold) else ""

    # -- data, splits, predictions -------------------------------------------------------------------------
    def splits(self) -> list[SplitRow]:
        return read_splits(self.layout.splits)

    @cached_property
    def dataset(self) -> Dataset:
        """The run's data, read again from its sources (``config.yaml``'s ``data:``).

        Read leniently: a row or file that has gone since the run was made is left out and listed in
        ``dataset.problems``, so one missing image does not hide the others (asking for it names it).
        """
        return load_dataset(cfg=self.config.data.model_copy(update={"skip_bad": True}))

    def data_from(self, sources: Sequence[str], skip_bad: bool = False) -> Dataset:
        """Other data (any layout) read as the run reads its own: its label hierarchy, aliases, frontal views."""
        cfg = self.config.data.model_copy(update={"sources": [str(s) for s in sources], "skip_bad": skip_bad})
        return load_dataset(cfg=cfg)

    def config_text(self) -> str | None:
        """The run's ``config.yaml`` as written (for provenance), or None if it is gone."""
        path = self.layout.config_yaml
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def test_fold(self) -> dict[str, int]:
        """filename -> the lowest fold in which it is a test image."""
        out: dict[str, int] = {}
        for row in sorted(self.splits(), key=lambda r: r.fold):
            if row.subset == "test":
                out.setdefault(row.filename, row.fold)
        return out

    def predictions(self) -> RunData:
        """The checked out-of-fold predictions (``labels.csv`` + ``predictions.csv``)."""
        return read_run_data(self.layout.labels, self.layout.predictions, self.label_names)

    # -- decisions -----------------------------------------------------------------------------------------
    def stored_thresholds(self) -> RunThresholds | None:
        return read_thresholds(self.layout.thresholds)

    def thresholds(self, model: str, fold: int | None = None, members: Sequence[str] = ()) -> dict[str, float]:
        """The decision thresholds of the last ``cxrlens evaluate`` for ``model`` (and ``fold``)."""
        try:
            return decision_thresholds(
                self.stored_thresholds(), self.config.evaluate.threshold, self.label_names, model, fold, members
            )
        except RunError as err:
            raise RunError(f"{self.root}: {err}") from None

    # -- results of the stages -----------------------------------------------------------------------------
    def read_result(self, path: Path) -> dict[str, Any] | None:
        """A stage's JSON result (``evaluation/metrics.json``, ``xai/metrics.json``, ...) or None if absent."""
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunError(f"{path}: expected a JSON object; recompute it")
        return data

    def record_command(self) -> None:
        """Append the current command line to ``run.json`` (provenance of the run's later stages)."""
        append_command(self.layout.run_json)


def open_run(root: str | Path) -> Run:
    """Open an existing run folder read-only (``run.json`` and ``config.yaml`` are read and checked)."""
    layout = RunLayout(Path(root))
    if not layout.root.is_dir():
        raise RunError(f"{layout.root}: run folder not found")
    info = read_info(layout.run_json)
    if not layout.config_yaml.is_file():
        raise RunError(f"{layout.root}: no {layout.config_yaml.name}; not a cxrlens run folder")
    return Run(layout.root, info, load_run_config(layout.config_yaml))
