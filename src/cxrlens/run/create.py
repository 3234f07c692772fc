"""Create (or resume) a run folder: read the data, fill the cache (or open the streaming shards), choose labels,
make or read the splits, and write ``run.json``, ``config.yaml``, ``splits.csv`` and ``labels.csv``. Resuming
checks the labels and splits are the same."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from cxrlens.config import PreprocessConfig, RunConfig, preprocess_differences
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.labels import LabelSpace, choose_labels
from cxrlens.data.records import Dataset
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import SplitRow, make_splits, read_splits, splits_csv, write_splits
from cxrlens.data.streaming import ImageStore, ShardImages
from cxrlens.errors import ConfigError, DataError, RunError
from cxrlens.fileio import atomic_write_text, sha256_text, stable_hash
from cxrlens.run.folder import Run
from cxrlens.run.info import RunInfo, read_info, write_info
from cxrlens.run.layout import RunLayout
from cxrlens.run.predictions import write_labels


@dataclass(frozen=True)
class Study:
    """A run being trained: the run, its config, data, labels, splits and preprocessed-image cache."""

    run: Run
    cfg: RunConfig
    dataset: Dataset
    space: LabelSpace
    splits: tuple[SplitRow, ...]
    cache: ImageStore  # the preprocessed-image cache, or the shards when data.streaming is set

    @property
    def folds(self) -> list[int]:
        available = sorted({r.fold for r in self.splits})
        wanted = self.cfg.cv.folds if self.cfg.cv.folds is not None else available
        unknown = [f for f in wanted if f not in available]
        if unknown:
            raise RunError(f"fold(s) {unknown} not in the splits; folds: {available}")
        return list(wanted)


def create_run(cfg: RunConfig, root: str | Path, progress: Callable[[int], None] | None = None) -> Study:
    """Make ``root`` a run of ``cfg`` (idempotent: an existing run must have the same labels and splits)."""
    layout = RunLayout(Path(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg=cfg.data)
    cache: ImageStore
    if cfg.data.streaming:  # the images come from the shards (cxrlens.data.streaming), not from the cache
        cache = shards = ShardImages(cfg.data.streaming, cfg.data.preprocess, dataset.records)
        if shards.missing and not cfg.data.skip_bad:
            first = shards.missing[0].filename
            why = shards.failed.get(first, "not prepared into them")
            raise DataError(f"{len(shards.missing)} image(s) not in the shards, e.g. {first}: {why} (pass --skip-bad)")
        absent = {r.filename for r in shards.missing}
        dataset.records = [r for r in dataset.records if r.filename not in absent]
    else:
        cache = store = PreprocessCache(cfg.data.preprocess, cfg.data.cache_dir)
        # every usable core (serial for a few dozen images); under DDP each local rank prepares its share and
        # waits for the others' (see cxrlens.data.cache): the first epoch finds every image in the cache
        report = store.prepare(dataset.records, progress=progress)
        if report.failed:
            if not cfg.data.skip_bad:
                raise DataError(f"{report.failed[0]} ({len(report.failed)} image(s) unreadable; pass --skip-bad)")
            bad = {Path(str(err.path)) for err in report.failed}
            dataset.records = [r for r in dataset.records if r.path not in bad]
        store.save_index()

    labels = cfg.data.labels
    space, rare = choose_labels([r.labels for r in dataset.records], labels.preset, labels.names, labels.min_images)

    if cfg.cv.split.external_fraction > 0 and not cfg.cv.splits:
        raise ConfigError(
            "cv.split.external_fraction holds patients out into a folder of their own: make the split with "
            "`cxrlens data split --external-fraction F --external-out DIR --out splits.csv`, then give --splits"
        )
    if cfg.cv.splits:
        splits = read_splits(cfg.cv.splits)
    elif layout.splits.is_file():
        splits = read_splits(layout.splits)
    else:
        try:
            splits = make_splits(dataset, space, cfg.cv.split)  # reads the image files (duplicate patients)
        except FileNotFoundError as err:
            raise ConfigError(
                f"{err.filename}: no such file; with data.streaming on a node without the images, make the splits "
                "where the images are (cxrlens data split --out splits.csv) and give them with --splits"
            ) from None
    known = dataset.by_filename()
    unknown = [r.filename for r in splits if r.filename not in known]
    if unknown:
        raise DataError(f"splits list {len(unknown)} file(s) not in the data, e.g. {unknown[0]!r}")
    splits_sha = sha256_text(splits_csv(splits))[:16]
    if layout.run_json.is_file():  # resuming: refuse before anything is overwritten
        check_same_run(read_info(layout.run_json), space.names, splits_sha, cfg.data.preprocess, layout)
    write_splits(splits, layout.splits)
    write_labels(layout.labels, dataset.subset(sorted({r.filename for r in splits})).records, space)
    info = RunInfo(
        name=cfg.name,
        label_names=space.names,
        preprocess=cfg.data.preprocess,
        splits_sha256=splits_sha,
        rare_labels=rare,
        sources=tuple(cfg.data.sources),
        data_root=str(dataset.root),
        images=len(known),
        config_hash=stable_hash(cfg.model_dump(mode="json", include={"data", "models", "train", "cv"})),
        seed=cfg.train.seed,
    )
    write_info(layout.run_json, info)
    atomic_write_text(layout.config_yaml, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    run = Run(layout.root, read_info(layout.run_json), cfg)
    return Study(run, cfg, dataset, space, tuple(splits), cache)


def check_same_run(
    old: RunInfo, label_names: tuple[str, ...], splits_sha: str, preprocess: PreprocessConfig, layout: RunLayout
) -> None:
    """An existing run folder is resumed only with the same labels, splits and preprocessing."""
    changed = preprocess_differences(old.preprocess, preprocess)
    if changed:
        raise RunError(
            f"{layout.root}: this run folder preprocesses images otherwise ({'; '.join(changed)}); "
            "use a new --run folder"
        )
    if old.label_names != label_names:
        raise RunError(
            f"{layout.root}: this run folder was made with other labels ({list(old.label_names)} vs "
            f"{list(label_names)}); use a new --run folder"
        )
    if old.splits_sha256 != splits_sha:
        raise RunError(
            f"{layout.root}: this run folder was made with other splits (sha256 {old.splits_sha256} vs "
            f"{splits_sha}); use a new --run folder"
        )
