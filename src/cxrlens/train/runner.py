"""Train one model on one fold, or every model on every fold (resumable), and write predictions."""

from __future__ import annotations

import csv
import io
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlens.config import RunConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.labels import LabelSpace, choose_labels
from cxrlens.data.records import Dataset
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import SplitRow, fold_files, make_splits, read_splits, write_splits
from cxrlens.errors import DataError, RunError
from cxrlens.fileio import atomic_open, atomic_write_json, atomic_write_text, sha256_file, stable_hash
from cxrlens.models.checkpoint import save_model
from cxrlens.models.registry import CxrClassifier, create_model
from cxrlens.run.folder import RunDir, write_labels_csv, write_run_info
from cxrlens.train.data import CachedImages, make_loader

PREDICTION_COLUMNS = ("filename", "patient_id", "fold", "model", "subset")


@dataclass
class Study:
    """Everything a command needs about a run: config, data, labels, splits."""

    run: RunDir
    cfg: RunConfig
    dataset: Dataset
    space: LabelSpace
    splits: list[SplitRow]
    cache: PreprocessCache

    @property
    def folds(self) -> list[int]:
        available = sorted({r.fold for r in self.splits})
        wanted = self.cfg.cv.folds if self.cfg.cv.folds is not None else available
        unknown = [f for f in wanted if f not in available]
        if unknown:
            raise RunError(f"fold(s) {unknown} not in the splits; folds: {available}")
        return list(wanted)


def open_study(cfg: RunConfig, run_dir: str | Path, progress: Any = None) -> Study:
    """Load data, choose labels, make or read splits, fill the cache, write run.json (idempotent)."""
    run = RunDir(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg=cfg.data)
    cache = PreprocessCache(cfg.data.preprocess, cfg.data.cache_dir)

    report = cache.prepare(dataset.records, progress=progress)
    if report.failed:
        if not cfg.data.skip_bad:
            raise DataError(f"{report.failed[0]} ({len(report.failed)} image(s) unreadable; pass --skip-bad)")
        bad = {Path(str(err.path)) for err in report.failed}
        dataset.records = [r for r in dataset.records if r.path not in bad]
    cache.save_index()

    labels = cfg.data.labels
    space, rare = choose_labels([r.labels for r in dataset.records], labels.preset, labels.names, labels.min_images)

    if cfg.cv.splits:
        splits = read_splits(cfg.cv.splits)
    elif run.splits.is_file():
        splits = read_splits(run.splits)
    else:
        splits = make_splits(dataset, space, cfg.cv.split)
    known = dataset.by_filename()
    unknown = [r.filename for r in splits if r.filename not in known]
    if unknown:
        raise DataError(f"splits list {len(unknown)} file(s) not in the data, e.g. {unknown[0]!r}")
    write_splits(splits, run.splits)
    write_labels_csv(run.labels_csv, dataset.subset(sorted({r.filename for r in splits})), space)
    info = {
        "name": cfg.name,
        "label_names": list(space.names),
        "rare_labels": rare,
        "preprocess": cfg.data.preprocess.model_dump(),
        "sources": list(cfg.data.sources),
        "data_root": str(dataset.root),
        "images": len(known),
        "splits_sha256": sha256_file(run.splits)[:16],
        "config_hash": stable_hash(cfg.model_dump(mode="json", exclude={"explain", "report", "evaluate"})),
        "seed": cfg.train.seed,
    }
    write_run_info(run, cfg, info)
    return Study(run, cfg, dataset, space, splits, cache)


class _AtomicCheckpointIO:
    """Lightning CheckpointIO whose saves are temp-file + rename (never a half-written checkpoint)."""

    @staticmethod
    def make() -> Any:
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        class AtomicTorchCheckpointIO(TorchCheckpointIO):
            def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
                with atomic_open(path, "wb", encoding=None) as handle:
                    torch.save(checkpoint, handle)

        return AtomicTorchCheckpointIO()


def quiet_lightning() -> None:
    """Lightning's start-up notes (GPU/TPU availability, tips) are noise for our users; warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_devices(value: str) -> Any:
    if value == "auto":
        return "auto"
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    try:
        return int(value)
    except ValueError:
        raise RunError(f"--devices must be 'auto', a count or a list like 0,1 (got {value!r})") from None


def _loggers(cfg: RunConfig, out: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(out), name="", version="logs")]
    if cfg.train.tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(out), name="", version="tensorboard"))
        except ModuleNotFoundError:
            raise RunError(
                "train.tensorboard is on but tensorboard is not installed (pip install tensorboard)"
            ) from None
    return loggers


def predict_probs(model: CxrClassifier, loader: Any) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for x, _ in loader:
            outputs.append(torch.sigmoid(model(x)).float().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.num_labels), dtype=np.float32)


def predictions_csv(rows: Sequence[tuple[Any, ...]], label_names: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*PREDICTION_COLUMNS, *label_names])
    writer.writerows(rows)
    return buffer.getvalue()


def train_fold(
    study: Study,
    model_name: str,
    fold: int,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    enable_progress_bar: bool = True,
) -> dict[str, Any]:
    """Train ``model_name`` on one fold, pick the best epoch on validation, predict val + test.

    Writes ``model.pt``, the fold's ``predictions.csv`` and ``done.json`` (atomic writes).
    """
    with warnings.catch_warnings():  # lightning's own deprecation notices about torch internals
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*treespec.*")
        import lightning as L
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        from cxrlens.train.module import CxrLitModule

    cfg, run, space = study.cfg, study.run, study.space
    files = fold_files(study.splits, fold)
    index = study.dataset.by_filename()
    parts = {s: CachedImages([index[f] for f in files[s]], space, study.cache) for s in ("train", "val", "test")}
    if len(parts["train"]) == 0:
        raise RunError(f"fold {fold} has no training images")
    has_val = len(parts["val"]) > 0

    out = run.fold_dir(model_name, fold)
    ckpt_dir = out / "checkpoints"
    L.seed_everything(cfg.train.seed + fold, workers=True, verbose=False)
    model = create_model(
        model_name,
        label_names=space.names,
        weights=cfg.models.weights,
        in_chans=cfg.models.in_chans,
        input_norm=cfg.models.input_norm,
    )
    module = CxrLitModule(model, cfg.train)
    train_loader = make_loader(parts["train"], cfg.train.batch_size, cfg.train.seed + fold, cfg.train.num_workers)
    module.sampler = train_loader.sampler  # type: ignore[assignment]
    val_loader = make_loader(parts["val"], cfg.train.batch_size, None, cfg.train.num_workers) if has_val else None

    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss" if has_val else None,
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    all_callbacks: list[Any] = [checkpoint, *callbacks]
    if has_val and cfg.train.patience > 0:
        all_callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.train.patience))
    quiet_lightning()
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=parse_devices(cfg.train.devices),
        num_nodes=cfg.train.num_nodes,
        strategy=cfg.train.strategy,
        precision=cfg.train.precision,  # type: ignore[arg-type]
        callbacks=all_callbacks,
        logger=_loggers(cfg, out),
        plugins=[_AtomicCheckpointIO.make()],
        enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        limit_train_batches=cfg.train.limit_batches,
        limit_val_batches=cfg.train.limit_batches,
        num_sanity_val_steps=0,
        deterministic=False,
        log_every_n_steps=1,
    )
    last = ckpt_dir / "last.ckpt"
    start = time.perf_counter()
    with warnings.catch_warnings():
        # lightning's hints about worker counts and small logging intervals are noise here
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=r".*treespec.*")  # lightning vs newer torch internals
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.is_file() else None)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    best_path = checkpoint.best_model_path or str(last)
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    model = module.model.to(memory_format=torch.contiguous_format).cpu().eval()  # type: ignore[call-overload]
    best_epoch = int(best.get("epoch", trainer.current_epoch))
    best_score = checkpoint.best_model_score
    digest = save_model(
        model,
        run.model_file(model_name, fold),
        preprocess=cfg.data.preprocess.model_dump(),
        fold=fold,
        epoch=best_epoch,
        val_loss=float(best_score) if best_score is not None else None,
        splits_sha256=run.read_info()["splits_sha256"],
    )

    rows: list[tuple[Any, ...]] = []
    for subset in ("val", "test"):
        probs = predict_probs(model, make_loader(parts[subset], cfg.train.batch_size))
        for rec, p in zip(parts[subset].records, probs, strict=True):
            rows.append((rec.filename, rec.patient_id, fold, model_name, subset, *(f"{v:.6f}" for v in p)))
    atomic_write_text(out / "predictions.csv", predictions_csv(rows, space.names))
    done = {
        "model": model_name,
        "fold": fold,
        "best_epoch": best_epoch,
        "epochs_run": trainer.current_epoch,
        "val_loss": float(best_score) if best_score is not None else None,
        "train_images": len(parts["train"]),
        "val_images": len(parts["val"]),
        "test_images": len(parts["test"]),
        "seconds": round(seconds, 1),
        "model_sha256": digest,
    }
    atomic_write_json(run.done_file(model_name, fold), done)
    return done


def collect_predictions(run: RunDir, label_names: Sequence[str]) -> int:
    """Concatenate every finished fold's predictions into ``run/predictions.csv``; returns the row count."""
    header = [*PREDICTION_COLUMNS, *label_names]
    lines: list[str] = []
    for model_name, fold in run.trained():
        path = run.fold_dir(model_name, fold) / "predictions.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != header:
                raise RunError(f"{path}: columns differ from the run's labels")
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(reader)
            lines.append(buffer.getvalue())
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(header)
    atomic_write_text(run.predictions, buffer.getvalue() + "".join(lines))
    return sum(chunk.count("\n") for chunk in lines)


def run_cv(
    study: Study,
    models: Sequence[str] | None = None,
    resume: bool = True,
    enable_progress_bar: bool = True,
    on_start: Any = None,
) -> list[dict[str, Any]]:
    """Every model x fold; finished pairs are skipped, interrupted ones resume from their last epoch."""
    from cxrlens.models.registry import get_spec

    names = list(models or study.cfg.models.names)
    for name in names:
        get_spec(name)  # unknown names fail before any training
    results = []
    for name in names:
        for fold in study.folds:
            if study.run.is_done(name, fold):
                results.append({"model": name, "fold": fold, "skipped": True})
                continue
            if on_start is not None:
                on_start(name, fold)
            results.append(train_fold(study, name, fold, resume=resume, enable_progress_bar=enable_progress_bar))
    collect_predictions(study.run, study.space.names)
    return results
