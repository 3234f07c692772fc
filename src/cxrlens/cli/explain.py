"""`cxrlens methods | explain | nap`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.errors import ConfigError

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="trained run folder")]


def methods_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    size: Annotated[int, typer.Option("--size", help="image size for the cost column")] = 512,
) -> None:
    """List the attribution methods with their parameters and cost (passes per image)."""
    from cxrlens.attribution.methods import METHODS

    rows = [METHODS.get(name).describe(size) for name in METHODS.names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"attribution methods (cost at {size} px)")
    for column in ("method", "family", "forward/backward passes per image", "parameters (defaults)"):
        table.add_column(column)
    for row in rows:
        cost = row["cost_per_image"]
        scope = "per label" if row["cost_is_per_label"] else "all labels at once"
        params = ", ".join(f"{k}={v}" for k, v in row["parameters"].items())
        table.add_row(row["name"], row["family"], f"{cost['forward']}/{cost['backward']} {scope}", params)
    console.print(table)


def _parse_params(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--param occlusion.window=16`` -> {"occlusion": {"window": 16}} (values read as YAML scalars)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for value in values or []:
        key, sep, raw = value.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method or not option:
            raise ConfigError(f"--param {value!r}: expected METHOD.OPTION=VALUE, e.g. occlusion.window=16")
        out.setdefault(method.strip(), {})[option.strip()] = yaml.safe_load(raw)
    return out


def explain_cmd(
    run: RunOpt,
    images: Annotated[
        list[str] | None, typer.Option("--images", "-i", help="filenames of the run's data or paths")
    ] = None,
    n_images: Annotated[int | None, typer.Option("--n-images", help="test images to pick when none named")] = None,
    models: Annotated[list[str] | None, typer.Option("--models", "-m", help="model names and/or ensemble")] = None,
    methods: Annotated[list[str] | None, typer.Option("--methods", help="methods (default: all)")] = None,
    labels: Annotated[list[str] | None, typer.Option("--labels", "-l", help="labels (default: predicted+true)")] = None,
    fold: Annotated[int | None, typer.Option("--fold", "-f", help="use this fold's models for every image")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="METHOD.OPTION=VALUE")] = None,
    memory_gib: Annotated[float | None, typer.Option("--memory-gib", help="memory budget (batch sizes)")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="maps and overlays only")] = False,
    accelerator: Annotated[str, typer.Option("--accelerator", help="cpu, gpu, auto")] = "cpu",
    devices: Annotated[str, typer.Option("--devices", help="count or list; shards images over them")] = "1",
    num_nodes: Annotated[int, typer.Option("--num-nodes")] = 1,
    strategy: Annotated[str, typer.Option("--strategy", help="e.g. ddp on a cluster")] = "auto",
) -> None:
    """Explain images with every chosen method, model and label; maps, overlays and figures (resumable)."""
    from cxrlens.explain.runner import explain_config, run_explain
    from cxrlens.run.folder import RunDir
    from cxrlens.train.runner import open_study, parse_devices

    rundir = RunDir(run)
    cfg = rundir.read_config()
    params = {**cfg.explain.params}
    for method, options in _parse_params(param).items():
        params[method] = {**params.get(method, {}), **options}
    explain = explain_config(
        cfg.explain.model_dump(),
        images=images,
        n_images=n_images,
        models=models,
        methods=methods,
        labels=labels,
        fold=fold,
        params=params,
        memory_gib=memory_gib,
        figures=False if no_figures else None,
    )
    with progress_bar("opening run", None) as advance:
        study = open_study(cfg, run, progress=advance)
    result = run_explain(
        study, explain, accelerator=accelerator, devices=parse_devices(devices), num_nodes=num_nodes, strategy=strategy
    )
    if not result:
        return
    console.print(
        f"{result['images']} image(s) x {len(result['models'])} model(s) x {len(result['methods'])} method(s): "
        f"{result['maps_written']} map(s) computed, {result['maps_total']} in {result['index']} "
        f"({result['seconds']} s); {len(result['figures'])} figure(s)"
    )
    for note in result["not_applicable"]:
        err_console.print(f"not applicable, not computed: {note}")


def nap_cmd(
    run: RunOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="trained model name")],
    fold: Annotated[int | None, typer.Option("--fold", "-f", help="fold (default: the first trained)")] = None,
    layers: Annotated[list[str] | None, typer.Option("--layers", help="module names (default per backbone)")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="NAME=EXPRESSION, e.g. 'covid=COVID-19'")
    ] = None,
    images: Annotated[str, typer.Option("--images", help="test (the fold's test images) or all")] = "test",
    top_k: Annotated[int, typer.Option("--top-k", help="maps shown per layer")] = 20,
) -> None:
    """Neuron activation profiles: per layer, group-mean feature-map activations minus the mean over groups."""
    from cxrlens.nap.profiles import parse_group_option, run_nap

    groups = dict(parse_group_option(g) for g in group) if group else None
    with progress_bar("activation profiles", None) as advance:
        summary = run_nap(run, model, fold=fold, layers=layers, groups=groups, images=images, top_k=top_k,
                          progress=advance)  # fmt: skip
    table = Table(title=f"neuron activation profiles: {model}, fold {summary['fold']}, {summary['n_images']} images")
    for column in ("layer", "feature maps", "dead", "most discriminative maps"):
        table.add_column(column)
    for layer in summary["layers"]:
        top = ", ".join(str(t["channel"]) for t in layer["top"][:5])
        table.add_row(layer["name"], str(layer["channels"]), str(layer["dead"]), top)
    console.print(table)
    err_console.print(f"wrote {summary['dir']}")
