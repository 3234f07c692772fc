"""`cxrlens models | train | cv | predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="run folder (created if missing)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="study config YAML")]
DataOpt = Annotated[list[str] | None, typer.Option("--data", "-d", help="data folder, CSV or @sample")]
SplitsOpt = Annotated[Path | None, typer.Option("--splits", help="splits CSV (default: made in the run)")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="image size N")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="preprocessed-image cache folder")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="none, imagenet or a state-dict path")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="maximum epochs")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed")]
AcceleratorOpt = Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, auto")]
DevicesOpt = Annotated[str | None, typer.Option("--devices", help="auto, a count, or 0,1")]
NodesOpt = Annotated[int | None, typer.Option("--num-nodes")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="e.g. ddp")]
SeedOpt = Annotated[int | None, typer.Option("--seed")]
LimitOpt = Annotated[int | None, typer.Option("--limit-batches", help="batches per epoch (quick runs)")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad", help="skip unreadable images")]


def models_cmd(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
    """List the registered models with their parameter counts (14 labels, 3-channel input)."""
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
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="models (trainable parameters with a 14-label head, 3-channel input)")
    for column in ("name", "parameters", "description", "Grad-CAM layer"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for row in rows:
        table.add_row(row["name"], f"{row['parameters']:,}", row["description"], row["gradcam_layer"])
    console.print(table)


_OPTION_KEYS = {
    "data": "data.sources",
    "size": "data.preprocess.size",
    "cache": "data.cache_dir",
    "skip_bad": "data.skip_bad",
    "labels": "data.labels.preset",
    "weights": "models.weights",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "precision": "train.precision",
    "accelerator": "train.accelerator",
    "devices": "train.devices",
    "num_nodes": "train.num_nodes",
    "strategy": "train.strategy",
    "seed": "train.seed",
    "limit_batches": "train.limit_batches",
    "channels_last": "train.channels_last",
    "splits": "cv.splits",
    "folds": "cv.split.folds",
}


def _overrides(**options: Any) -> dict[str, Any]:
    """Command-line options that were given, as dotted config keys."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or (value is False and key in {"skip_bad", "channels_last"}):
            continue
        out[_OPTION_KEYS[key]] = str(value) if key in {"cache", "splits", "devices"} else value
    return out


def study_config(config: Path | None, run: Path, overrides: dict[str, Any]) -> Any:
    """--config, else the run folder's own config.yaml (to resume), else defaults; options on top."""
    from cxrlens.cli.common import default_sources
    from cxrlens.config import load_run_config

    source = config
    if source is None and (run / "config.yaml").is_file():
        source = run / "config.yaml"
    if source is None and "data.sources" not in overrides:
        overrides["data.sources"] = default_sources(None)
    return load_run_config(source, overrides)


EngineOpts = dict[str, Any]


def train_cmd(
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
) -> None:
    """Train one model on one fold; the validation part picks the epoch, the test part is predicted."""
    from cxrlens.models.registry import get_spec
    from cxrlens.train.runner import collect_predictions, open_study, train_fold

    overrides = _overrides(**{k: v for k, v in locals().items() if k in _OPTION_KEYS})
    cfg = study_config(config, run, overrides)
    get_spec(model)  # an unknown name fails before any data work
    with progress_bar("preparing images", None) as advance:
        study = open_study(cfg, run, progress=advance)
    if resume is False:
        _restart(study.run, model, fold)
    result = train_fold(study, model, fold, resume=resume)
    collect_predictions(study.run, study.space.names)
    if result:
        console.print(
            f"{model} fold {fold}: best epoch {result['best_epoch']} (val loss {result['val_loss']}), "
            f"{result['seconds']} s -> {study.run.model_file(model, fold)}"
        )


def _restart(run: Any, model: str, fold: int) -> None:
    import shutil

    folder = run.fold_dir(model, fold)
    if folder.exists():
        shutil.rmtree(folder)


def cv_cmd(
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
) -> None:
    """Cross-validation: every model x fold of the splits (resumable), out-of-fold predictions."""
    from cxrlens.models.registry import get_spec
    from cxrlens.train.runner import open_study, run_cv

    overrides = _overrides(**{k: v for k, v in locals().items() if k in _OPTION_KEYS})
    if models:
        overrides["models.names"] = models
    cfg = study_config(config, run, overrides)
    for name in cfg.models.names:
        get_spec(name)  # unknown names fail before any data work
    with progress_bar("preparing images", None) as advance:
        study = open_study(cfg, run, progress=advance)
    if not resume:
        for name in cfg.models.names:
            for fold in study.folds:
                _restart(study.run, name, fold)
    pairs = [(m, f) for m in cfg.models.names for f in study.folds]
    err_console.print(f"{len(pairs)} model/fold pair(s); {sum(study.run.is_done(m, f) for m, f in pairs)} done")
    results = run_cv(
        study, on_start=lambda m, f: err_console.print(f"[bold]training {m}, fold {f}[/]", highlight=False)
    )
    table = Table(title=f"cross-validation in {run}")
    for column in ("model", "fold", "best epoch", "val loss", "seconds", "status"):
        table.add_column(column)
    for r in results:
        if r.get("skipped"):
            table.add_row(r["model"], str(r["fold"]), "", "", "", "already done")
        elif r:
            table.add_row(
                r["model"],
                str(r["fold"]),
                str(r["best_epoch"]),
                f"{r['val_loss']:.4f}" if r["val_loss"] else "-",
                str(r["seconds"]),
                "trained",
            )
    console.print(table)
    console.print(f"out-of-fold predictions: {study.run.predictions}")


def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG, DICOM, ...)")],
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="model name or 'ensemble' (default)")] = None,
    fold: Annotated[int | None, typer.Option("--fold", "-f", help="one fold's model (default: mean)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per-label probabilities and decisions for any image files, with the run's preprocessing."""
    from cxrlens.predict import predict_images

    result = predict_images(run, images, model=model or "ensemble", fold=fold)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for item in result["images"]:
        table = Table(title=f"{item['image']} ({result['model']}, folds {result['folds']})")
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("threshold", justify="right")
        table.add_column("decision")
        for label, p in item["probabilities"].items():
            positive = label in item["positive"]
            table.add_row(
                label, f"{p:.3f}", f"{result['thresholds'][label]:.2f}", "[bold]positive[/]" if positive else "-"
            )
        console.print(table)
