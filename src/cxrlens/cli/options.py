"""From command-line options to the config a stage receives: one declarative table and one resolver.

Every option that sets a config value is listed once in :data:`CONFIG_KEYS` (its Python parameter name ->
the dotted key of :class:`~cxrlens.config.RunConfig`, or a function giving several keys). An option counts only
when it was given on the command line; ``--set key=value`` (repeatable) reaches any key, after the options.
The stage then receives its section of the resolved config.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cxrlens.config import RunConfig, load_run_config, parse_assignments
from cxrlens.errors import ConfigError
from cxrlens.run.layout import RunLayout


def _explain_params(values: list[str]) -> dict[str, Any]:
    """``--param occlusion.window=16`` -> ``{"explain.params.occlusion.window": 16}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method.strip() or not option.strip():
            raise ConfigError(f"--param {value!r}: expected METHOD.OPTION=VALUE, e.g. occlusion.window=16")
        out[f"explain.params.{method.strip()}.{option.strip()}"] = yaml.safe_load(raw)
    return out


def _nap_groups(values: list[str]) -> dict[str, Any]:
    """``--group NAME=EXPRESSION`` (a bare expression names itself) -> ``{"nap.groups": {...}}``."""
    groups: dict[str, str] = {}
    for option in values:
        name, sep, expression = option.partition("=")
        if not sep:
            name = expression = option
        if not name.strip() or not expression.strip():
            raise ConfigError(f"group {option!r}: write NAME=EXPRESSION, e.g. 'viral=Viral Pneumonia & !COVID-19'")
        groups[name.strip()] = expression.strip()
    return {"nap.groups": groups}


def _text(key: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {key: str(value)}


Target = str | Callable[[Any], dict[str, Any]]

#: parameter name of a command -> the config key it sets (one meaning per name across all commands)
CONFIG_KEYS: dict[str, Target] = {
    # data
    "data": "data.sources",
    "size": "data.preprocess.size",
    "cache": _text("data.cache_dir"),
    "streaming": _text("data.streaming"),
    "skip_bad": "data.skip_bad",
    "labels": "data.labels.preset",
    "min_images": "data.labels.min_images",
    # models and training
    "models": "models.names",
    "weights": "models.weights",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "precision": "train.precision",
    "accelerator": "train.accelerator",
    "devices": _text("train.devices"),
    "num_nodes": "train.num_nodes",
    "strategy": "train.strategy",
    "seed": "train.seed",
    "limit_batches": "train.limit_batches",
    "channels_last": "train.channels_last",
    # splits
    "splits": _text("cv.splits"),
    "folds": "cv.split.folds",
    "scheme": "cv.split.scheme",
    "test_fraction": "cv.split.test_fraction",
    "val_fraction": "cv.split.val_fraction",
    "split_seed": "cv.split.seed",
    "external_fraction": "cv.split.external_fraction",
    # evaluate
    "threshold": "evaluate.threshold",
    "min_support": "evaluate.min_support",
    "ensembles": "evaluate.ensembles",
    # explain
    "explain_images": "explain.images",
    "n_images": "explain.n_images",
    "explain_models": "explain.models",
    "methods": "explain.methods",
    "explain_labels": "explain.labels",
    "explain_fold": "explain.fold",
    "param": _explain_params,
    "memory_gib": "explain.memory_gib",
    "figures": "explain.figures",
    "explain_accelerator": "explain.accelerator",
    "explain_devices": _text("explain.devices"),
    "explain_num_nodes": "explain.num_nodes",
    "explain_strategy": "explain.strategy",
    # explanation metrics
    "images_max": "xai.images_max",
    "steps": "xai.steps",
    "bootstrap": "xai.bootstrap",
    "xai_seed": "xai.seed",
    "xai_memory_gib": "xai.memory_gib",
    "sanity": "xai.sanity",
    "stability": "xai.stability",
    "sanity_images": "xai.sanity_images",
    "stability_images": "xai.stability_images",
    "insertion_start": "xai.insertion_start",
    "xai_figures": "xai.figures",
    "xai_accelerator": "xai.accelerator",
    # activation profiles
    "nap_model": "nap.model",
    "nap_fold": "nap.fold",
    "layers": "nap.layers",
    "group": _nap_groups,
    "nap_images": "nap.images",
    "top_k": "nap.top_k",
    "nap_accelerator": "nap.accelerator",
    # predict, report
    "predict_model": "predict.model",
    "predict_fold": "predict.fold",
    "predict_workers": "predict.workers",
    "predict_memory_gib": "predict.memory_gib",
    "predict_accelerator": "predict.accelerator",
    "external_name": "external.name",
    "audit_by": "audit.by",
    "report_out": _text("report.out"),
}

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="KEY=VALUE: set any config key (dotted, e.g. train.epochs=2); repeatable"),
]


def _given(ctx: typer.Context, name: str) -> bool:
    """Given on the command line (or by its environment variable), not a default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def overrides(ctx: typer.Context) -> dict[str, Any]:
    """The dotted config keys set by this command's given options, then by its ``--set`` assignments."""
    out: dict[str, Any] = {}
    for name, value in ctx.params.items():
        target = CONFIG_KEYS.get(name)
        if target is None or value is None or not _given(ctx, name):
            continue
        out.update({target: value} if isinstance(target, str) else target(value))
    out.update(parse_assignments(ctx.params.get("assignments") or []))
    return out


def default_sources() -> list[str]:
    """$CXRLENS_DATA, else the embedded sample."""
    env = os.environ.get("CXRLENS_DATA")
    return [env] if env else ["@sample"]


def resolve(ctx: typer.Context, config: Path | None, run: Path | None = None) -> RunConfig:
    """The config of a command: ``config``, else the run folder's ``config.yaml``, else the defaults (data from
    $CXRLENS_DATA or the embedded sample); the given options and ``--set`` on top."""
    source = config
    if source is None and run is not None and RunLayout(run).config_yaml.is_file():
        source = RunLayout(run).config_yaml
    changes = overrides(ctx)
    if source is None and "data.sources" not in changes:
        changes["data.sources"] = default_sources()
    return load_run_config(source, changes)
