"""Train one model on one fold, or every model on every fold (resumable), and write the predictions.

The paper's recipe (reference: README "Models and training"): the validation part picks the best epoch and
stops early, the test part is predicted once at the end (the paper chose checkpoints on the test set).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from cxrlens.config import RunConfig, TrainConfig
from cxrlens.data.splits import fold_files
from cxrlens.errors import RunError
from cxrlens.fileio import write_json
from cxrlens.lightning_setup import AtomicCheckpointIO, parse_devices, quiet_lightning
from cxrlens.models.checkpoint import save_model
from cxrlens.models.registry import CxrClassifier, create_model, get_spec
from cxrlens.run import Study
from cxrlens.run.images import LabelledImages
from cxrlens.run.predictions import concatenate_predictions, prediction_rows, write_predictions
from cxrlens.train.data import make_loader
from cxrlens.train.module import RECIPE_KEY, CxrLitModule
from cxrlens.train.recipe import Recipe, resolve_recipe


@dataclass(frozen=True)
class FoldResult:
    """One trained (or already finished) model x fold; the fields of ``done.json``."""

    model: str
    fold: int
    best_epoch: int | None = None
    epochs_run: int | None = None
    val_loss: float | None = None
    train_images: int = 0
    val_images: int = 0
    test_images: int = 0
    seconds: float = 0.0
    model_sha256: str = ""
    precision: str = ""  # the resolved recipe (train.precision / train.channels_last may say "auto")
    channels_last: bool | None = None
    recipe: str = ""  # what the recipe chose and why (train/recipe.py)
    skipped: bool = False  # finished earlier: nothing was trained


def _loggers(cfg: RunConfig, out: Any) -> list[Any]:
    loggers: list[Any] = [CSVLogger(save_dir=str(out), name="", version="logs")]
    if cfg.train.tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger  # needs the optional tensorboard package

            loggers.append(TensorBoardLogger(save_dir=str(out), name="", version="tensorboard"))
        except ModuleNotFoundError:
            raise RunError(
                "train.tensorboard is on but tensorboard is not installed (pip install tensorboard)"
            ) from None
    return loggers


def build_trainer(
    cfg: TrainConfig,
    recipe: Recipe,
    callbacks: Sequence[Any] = (),
    loggers: Sequence[Any] | bool = False,
    enable_progress_bar: bool = True,
    max_epochs: int | None = None,
) -> L.Trainer:
    """The Lightning trainer of ``train_fold`` (the throughput benchmark times this same trainer).

    Per step it does the work and little else: no per-step metric (the losses are epoch means), a progress bar
    that redraws once a second (Lightning's default rich bar polls 100 times a second: a thread waking on a
    2-core machine takes turns with the compute threads), checkpoints once per epoch.
    """
    extra: list[Any] = [RichProgressBar(refresh_rate=1)] if enable_progress_bar else []
    return L.Trainer(
        max_epochs=max_epochs or cfg.epochs,
        accelerator=cfg.accelerator,
        devices=parse_devices(cfg.devices),
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=recipe.precision,  # type: ignore[arg-type]
        callbacks=[*callbacks, *extra],
        logger=list(loggers) if not isinstance(loggers, bool) else loggers,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        limit_train_batches=cfg.limit_batches,
        limit_val_batches=cfg.limit_batches,
        num_sanity_val_steps=0,
        deterministic=False,
        log_every_n_steps=50,
    )


def recorded_recipe(checkpoint: Any) -> dict[str, Any]:
    """The recipe an interrupted fold started with (from its last Lightning checkpoint), or {}."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, EOFError):
        return {}  # unreadable: Lightning says so when it resumes from it
    recorded = state.get(RECIPE_KEY) if isinstance(state, dict) else None
    return dict(recorded) if isinstance(recorded, dict) else {}


def predict_probs(model: CxrClassifier, loader: Any) -> np.ndarray:
    """Probabilities (images, labels) as float64: the sigmoid of the float logits, at full precision."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for x, _ in loader:
            outputs.append(torch.sigmoid(model(x).double()).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.num_labels), dtype=np.float64)


def train_fold(
    study: Study,
    model_name: str,
    fold: int,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    enable_progress_bar: bool = True,
) -> FoldResult | None:
    """Train ``model_name`` on one fold, pick the best epoch on validation, predict val + test.

    Writes ``model.pt``, the fold's ``predictions.csv`` and ``done.json`` (atomic writes). Returns None on the
    ranks other than 0 of a distributed run.
    """
    cfg, layout, space = study.cfg, study.run.layout, study.space
    files = fold_files(study.splits, fold)
    index = study.dataset.by_filename()
    parts = {s: LabelledImages([index[f] for f in files[s]], space, study.cache) for s in ("train", "val", "test")}
    if len(parts["train"]) == 0:
        raise RunError(f"fold {fold} has no training images")
    has_val = len(parts["val"]) > 0

    out = layout.fold_dir(model_name, fold)
    last = layout.last_checkpoint(model_name, fold)
    resuming = resume and last.is_file()
    recipe = resolve_recipe(cfg.train, model_name, recorded=recorded_recipe(last) if resuming else None)
    L.seed_everything(cfg.train.seed + fold, workers=True, verbose=False)
    model = create_model(
        model_name,
        label_names=space.names,
        weights=cfg.models.weights,
        in_chans=cfg.models.in_chans,
        input_norm=cfg.models.input_norm,
    )
    module = CxrLitModule(model, cfg.train, recipe)
    train_loader = make_loader(parts["train"], cfg.train.batch_size, cfg.train.seed + fold, cfg.train.num_workers)
    module.sampler = train_loader.sampler  # type: ignore[assignment]
    val_loader = make_loader(parts["val"], cfg.train.batch_size, None, cfg.train.num_workers) if has_val else None

    checkpoint = ModelCheckpoint(
        dirpath=layout.checkpoints_dir(model_name, fold),
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
    trainer = build_trainer(cfg.train, recipe, all_callbacks, _loggers(cfg, out), enable_progress_bar)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # lightning's hints about worker counts and small logging intervals are noise here
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=r".*treespec.*")  # lightning vs newer torch internals
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resuming else None)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None

    best_path = checkpoint.best_model_path or str(last)
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    model = module.model.to(memory_format=torch.contiguous_format).cpu().eval()  # type: ignore[call-overload]
    best_epoch = int(best.get("epoch", trainer.current_epoch))
    best_score = checkpoint.best_model_score
    val_loss = float(best_score) if best_score is not None else None
    digest = save_model(
        model,
        layout.model_file(model_name, fold),
        preprocess=cfg.data.preprocess.model_dump(),
        fold=fold,
        epoch=best_epoch,
        val_loss=val_loss,
        splits_sha256=study.run.info.splits_sha256,
        **recipe.meta(),
    )

    rows: list[list[Any]] = []
    for subset in ("val", "test"):
        probs = predict_probs(model, make_loader(parts[subset], cfg.train.batch_size))
        rows += prediction_rows(parts[subset].records, probs, fold, model_name, subset)
    write_predictions(layout.fold_predictions(model_name, fold), rows, space.names)
    result = FoldResult(
        model=model_name,
        fold=fold,
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
        val_loss=val_loss,
        train_images=len(parts["train"]),
        val_images=len(parts["val"]),
        test_images=len(parts["test"]),
        seconds=round(seconds, 1),
        model_sha256=digest,
        precision=recipe.precision,
        channels_last=recipe.channels_last,
        recipe=recipe.reason,
    )
    write_json(layout.done_file(model_name, fold), {k: v for k, v in asdict(result).items() if k != "skipped"})
    return result


def collect_predictions(study: Study) -> int:
    """Concatenate every finished fold's predictions into ``predictions.csv``; returns the row count."""
    layout = study.run.layout
    parts = [layout.fold_predictions(model, fold) for model, fold in study.run.trained()]
    return concatenate_predictions(parts, layout.predictions, study.space.names)


def run_cv(
    study: Study,
    models: Sequence[str] | None = None,
    resume: bool = True,
    enable_progress_bar: bool = True,
    on_start: Callable[[str, int], None] | None = None,
) -> list[FoldResult]:
    """Every model x fold; finished pairs are skipped, interrupted ones resume from their last epoch."""
    names = list(models or study.cfg.models.names)
    for name in names:
        get_spec(name)  # unknown names fail before any training
    results: list[FoldResult] = []
    for name in names:
        for fold in study.folds:
            if study.run.is_done(name, fold):
                results.append(FoldResult(model=name, fold=fold, skipped=True))
                continue
            if on_start is not None:
                on_start(name, fold)
            result = train_fold(study, name, fold, resume=resume, enable_progress_bar=enable_progress_bar)
            if result is not None:
                results.append(result)
    collect_predictions(study)
    return results
