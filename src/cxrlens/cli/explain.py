"""`cxrlens methods | explain | nap`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.fileio import json_text

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="trained run folder")]


def methods_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    size: Annotated[int, typer.Option("--size", help="image size for the cost column")] = 512,
) -> None:
    """List the attribution methods with their parameters and cost (passes per image)."""
    from cxrlens.attribution.methods import METHODS  # torch-heavy: imported when the command runs

    rows = [METHODS.get(name).describe(size) for name in METHODS.names()]
    if as_json:
        print(json_text(rows))
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


def explain_cmd(
    ctx: typer.Context,
    run: RunOpt,
    explain_images: Annotated[
        list[str] | None, typer.Option("--images", "-i", help="filenames of the run's data or paths")
    ] = None,
    n_images: Annotated[int | None, typer.Option("--n-images", help="test images to pick when none named")] = None,
    explain_models: Annotated[
        list[str] | None, typer.Option("--models", "-m", help="model names and/or ensemble")
    ] = None,
    methods: Annotated[list[str] | None, typer.Option("--methods", help="methods (default: all)")] = None,
    explain_labels: Annotated[
        list[str] | None, typer.Option("--labels", "-l", help="labels (default: predicted+true)")
    ] = None,
    explain_fold: Annotated[
        int | None, typer.Option("--fold", "-f", help="use this fold's models for every image")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="METHOD.OPTION=VALUE")] = None,
    memory_gib: Annotated[float | None, typer.Option("--memory-gib", help="memory budget (batch sizes)")] = None,
    figures: Annotated[bool | None, typer.Option("--figures/--no-figures", help="draw the figures")] = None,
    explain_accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, auto")] = None,
    explain_devices: Annotated[
        str | None, typer.Option("--devices", help="count or list; shards images over them")
    ] = None,
    explain_num_nodes: Annotated[int | None, typer.Option("--num-nodes")] = None,
    explain_strategy: Annotated[str | None, typer.Option("--strategy", help="e.g. ddp on a cluster")] = None,
    assignments: SetOpt = None,
) -> None:
    """Explain images with every chosen method, model and label; maps, overlays and figures (resumable)."""
    # torch-heavy: the explain stage is imported when the command runs
    from cxrlens.explain.runner import run_explain
    from cxrlens.run import open_run

    opened = open_run(run)
    result = run_explain(opened, resolve(ctx, None, run).explain)
    if result is None:
        return
    opened.record_command()
    console.print(
        f"{result.images} image(s) x {len(result.models)} model(s) x {len(result.methods)} method(s): "
        f"{result.maps_written} map(s) computed, {result.maps_total} in {result.index} "
        f"({result.seconds} s); {len(result.figures)} figure(s)"
    )
    for note in result.not_applicable:
        err_console.print(f"not applicable, not computed: {note}")


def nap_cmd(
    ctx: typer.Context,
    run: RunOpt,
    nap_model: Annotated[
        str | None, typer.Option("--model", "-m", help="trained model name (default: the first trained)")
    ] = None,
    nap_fold: Annotated[int | None, typer.Option("--fold", "-f", help="fold (default: the first trained)")] = None,
    layers: Annotated[list[str] | None, typer.Option("--layers", help="module names (default per backbone)")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="NAME=EXPRESSION, e.g. 'covid=COVID-19'")
    ] = None,
    nap_images: Annotated[str | None, typer.Option("--images", help="test (the fold's test images) or all")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="maps shown per layer")] = None,
    nap_accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu or auto")] = None,
    assignments: SetOpt = None,
) -> None:
    """Neuron activation profiles: per layer, group-mean feature-map activations minus the mean over groups."""
    # torch-heavy: the activation-profile stage is imported when the command runs
    from cxrlens.nap.runner import run_nap
    from cxrlens.run import open_run

    opened = open_run(run)
    cfg = resolve(ctx, None, run).nap
    with progress_bar("activation profiles", None) as advance:
        result = run_nap(opened, cfg, progress=advance)
    opened.record_command()
    table = Table(title=f"neuron activation profiles: {result.model}, fold {result.fold}, {result.n_images} images")
    for column in ("layer", "feature maps", "dead", "most discriminative maps"):
        table.add_column(column)
    for layer in result.summary["layers"]:
        top = ", ".join(str(t["channel"]) for t in layer["top"][:5])
        table.add_row(layer["name"], str(layer["channels"]), str(layer["dead"]), top)
    console.print(table)
    err_console.print(f"wrote {result.dir}")
