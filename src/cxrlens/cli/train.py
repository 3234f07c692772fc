"""`cxrlens models | train | cv | predict`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.errors import ConfigError
from cxrlens.fileio import json_text
from cxrlens.text import fmt

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="run folder (created if missing)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="study config YAML")]
DataOpt = Annotated[list[str] | None, typer.Option("--data", "-d", help="data folder, CSV or @sample")]
SplitsOpt = Annotated[Path | None, typer.Option("--splits", help="splits CSV (default: made in the run)")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="image size N")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="preprocessed-image cache folder")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="none, imagenet or a state-dict path")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="maximum epochs")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision", help="auto (default: bf16-mixed where the hardware has bf16), 32-true, bf16-mixed, 16-mixed"
    ),
]
AcceleratorOpt = Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, auto")]
DevicesOpt = Annotated[str | None, typer.Option("--devices", help="auto, a count, or 0,1")]
NodesOpt = Annotated[int | None, typer.Option("--num-nodes")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="e.g. ddp")]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
LimitOpt = Annotated[int | None, typer.Option("--limit-batches", help="batches per epoch (quick runs)")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad", help="skip unreadable images")]


def models_cmd(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
    """List the registered models with their parameter counts (14 labels, 3-channel input)."""
    # torch-heavy: imported when the command runs
    from cxrlens.models.registry import count_parameters, create_model, get_spec, model_names

    rows = []
    for name in model_names():
        spec = get_spec(name)
        model = create_model(name, num_labels=14)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model),
                "description": spec.description,
                "gradcam_layer": model.gradcam_layer_name,
                "nap_layers": model.nap_layer_names(),
                "min_size": spec.min_size,
                "in_paper": spec.paper,
            }
        )
    if as_json:
        print(json_text(rows))
        return
    table = Table(title="models (trainable parameters with a 14-label head, 3-channel input)")
    for column in ("name", "parameters", "description", "Grad-CAM layer"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for row in rows:
        table.add_row(str(row["name"]), f"{row['parameters']:,}", str(row["description"]), str(row["gradcam_layer"]))
    console.print(table)


def train_cmd(
    ctx: typer.Context,
    run: RunOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="registered model name")] = "resnet18",
    fold: Annotated[int, typer.Option("--fold", "-f", help="fold of the splits")] = 0,
    config: ConfigOpt = None,
    data: DataOpt = None,
    splits: SplitsOpt = None,
    size: SizeOpt = None,
    cache: CacheOpt = None,
    weights: WeightsOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    precision: PrecisionOpt = None,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    num_nodes: NodesOpt = None,
    strategy: StrategyOpt = None,
    seed: SeedOpt = None,
    limit_batches: LimitOpt = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels-last memory format")] = False,
    skip_bad: SkipOpt = False,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="continue from the last epoch")] = True,
    assignments: SetOpt = None,
) -> None:
    """Train one model on one fold; the validation part picks the epoch, the test part is predicted."""
    # torch-heavy: the training stage is imported when the command runs
    from cxrlens.models.registry import get_spec
    from cxrlens.run import create_run
    from cxrlens.train.runner import collect_predictions, train_fold

    cfg = resolve(ctx, config, run)
    get_spec(model)  # an unknown name fails before any data work
    with progress_bar("preparing images", None) as advance:
        study = create_run(cfg, run, progress=advance)
    if resume is False:
        _restart(study.run.layout.fold_dir(model, fold))
    result = train_fold(study, model, fold, resume=resume)
    collect_predictions(study)
    if result is not None:
        console.print(
            f"{model} fold {fold}: best epoch {result.best_epoch} (val loss {result.val_loss}), "
            f"{result.seconds} s -> {study.run.layout.model_file(model, fold)}\nrecipe: {result.recipe}",
            highlight=False,
        )


def _restart(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def cv_cmd(
    ctx: typer.Context,
    run: RunOpt,
    config: ConfigOpt = None,
    data: DataOpt = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="models (default: config)")] = None,
    splits: SplitsOpt = None,
    folds: Annotated[int | None, typer.Option("--folds", help="folds for a new split")] = None,
    size: SizeOpt = None,
    cache: CacheOpt = None,
    weights: WeightsOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    num_nodes: NodesOpt = None,
    strategy: StrategyOpt = None,
    seed: SeedOpt = None,
    limit_batches: LimitOpt = None,
    skip_bad: SkipOpt = False,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="skip finished pairs, continue others")] = True,
    assignments: SetOpt = None,
) -> None:
    """Cross-validation: every model x fold of the splits (resumable), out-of-fold predictions."""
    # torch-heavy: the training stage is imported when the command runs
    from cxrlens.models.registry import get_spec
    from cxrlens.run import create_run
    from cxrlens.train.runner import run_cv

    cfg = resolve(ctx, config, run)
    for name in cfg.models.names:
        get_spec(name)  # unknown names fail before any data work
    with progress_bar("preparing images", None) as advance:
        study = create_run(cfg, run, progress=advance)
    if not resume:
        for name in cfg.models.names:
            for fold in study.folds:
                _restart(study.run.layout.fold_dir(name, fold))
    pairs = [(m, f) for m in cfg.models.names for f in study.folds]
    err_console.print(f"{len(pairs)} model/fold pair(s); {sum(study.run.is_done(m, f) for m, f in pairs)} done")
    results = run_cv(
        study, on_start=lambda m, f: err_console.print(f"[bold]training {m}, fold {f}[/]", highlight=False)
    )
    table = Table(title=f"cross-validation in {run}")
    for column in ("model", "fold", "best epoch", "val loss", "seconds", "recipe", "status"):
        table.add_column(column)
    for r in results:
        if r.skipped:
            table.add_row(r.model, str(r.fold), "", "", "", "", "already done")
        else:
            loss = "-" if r.val_loss is None else f"{r.val_loss:.4f}"
            recipe = f"{r.precision}{', channels-last' if r.channels_last else ''}"
            table.add_row(r.model, str(r.fold), str(r.best_epoch), loss, str(r.seconds), recipe, "trained")
    console.print(table)
    console.print(f"out-of-fold predictions: {study.run.layout.predictions}")


def predict_cmd(
    ctx: typer.Context,
    images: Annotated[
        list[Path] | None, typer.Argument(help="image files or folders of images (PNG, JPEG, DICOM, ...)")
    ] = None,
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")] = Path(),
    predict_data: Annotated[
        list[str] | None, typer.Option("--data", "-d", help="a data folder or CSV of any layout; repeatable")
    ] = None,
    predict_out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write CSV (or JSON: *.json) as it goes; resumes")
    ] = None,
    predict_model: Annotated[
        str | None, typer.Option("--model", "-m", help="model name or 'ensemble' (default)")
    ] = None,
    predict_fold: Annotated[int | None, typer.Option("--fold", "-f", help="one fold's model (default: mean)")] = None,
    predict_workers: Annotated[int | None, typer.Option("--workers", help="image-decoding processes")] = None,
    predict_memory_gib: Annotated[float | None, typer.Option("--memory-gib", help="budget for the batch size")] = None,
    predict_accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu or auto")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip unreadable images (listed)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    assignments: SetOpt = None,
) -> None:
    """Per-label probabilities and decisions for image files, folders or a data set, with the run's
    preprocessing; streamed (flat memory), written as it goes with --out, resumed after an interruption."""
    # torch-heavy: the predict stage is imported when the command runs
    from cxrlens.predict import inputs_of, predict_images, predict_to_file
    from cxrlens.run import open_run

    if not images and not predict_data:
        raise ConfigError("give image files or folders, or --data DIR")
    opened = open_run(run)
    cfg = resolve(ctx, None, run)
    inputs = inputs_of(opened, images or [], predict_data or [], skip_bad)
    with progress_bar("predicting", len(inputs)) as advance:
        if predict_out is not None:
            written = predict_to_file(opened, inputs, cfg.predict, predict_out, skip_bad, advance)
        else:
            result = predict_images(opened, inputs, cfg.predict, skip_bad, advance)
    if predict_out is not None:
        for reason in written.skipped:
            err_console.print(f"skipped: {reason}", markup=False)
        if as_json:
            print(json_text(written))
        else:
            err_console.print(f"wrote {written.images} image(s) to {written.path} ({written.computed} computed now)")
        return
    for reason in result.skipped:
        err_console.print(f"skipped: {reason}", markup=False)
    if as_json:
        print(json_text(result.to_dict()))
        return
    for item in result.images:
        table = Table(title=f"{item.image} ({result.model}, folds {list(result.folds)})")
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("threshold", justify="right")
        table.add_column("decision")
        for label, p in item.probabilities.items():
            decision = "[bold]positive[/]" if label in item.positive else "-"
            table.add_row(label, fmt(p), fmt(result.thresholds[label], 2), decision)
        console.print(table)
