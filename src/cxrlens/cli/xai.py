"""`cxrlens evaluate-explanations`: faithfulness, localisation, sanity, stability and a shortcut audit of the maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="run folder with explanations (`cxrlens explain`)")]


def _number(value: Any, digits: int = 3) -> str:
    from cxrlens.xai.files import format_number

    return format_number(value, digits)


def _metric_table(name: str, block: dict[str, Any]) -> Table | None:
    rows = block["rows"]
    if not rows:
        return None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    from cxrlens.xai.files import direction

    table = Table(title=f"{name} ({direction(name, block['higher_is_better'])}): mean [95% CI]", title_justify="left")
    table.add_column("model")
    for method in methods:
        table.add_column(method, justify="right")
    cells = {(r["model"], r["method"]): r for r in rows}
    for model in models:
        values = []
        for method in methods:
            r = cells.get((model, method))
            values.append(
                "–" if r is None else f"{_number(r['mean'])} [{_number(r['ci_low'])}, {_number(r['ci_high'])}]"
            )
        table.add_row(model, *values)
    return table


def print_result(result: dict[str, Any]) -> None:
    """The tables of an explanation evaluation, as rich tables on stdout; notes on stderr."""
    for name, block in result["metrics"].items():
        table = _metric_table(name, block)
        if table is not None:
            console.print(table)
    sanity = result["sanity"]["rows"]
    if sanity:
        table = Table(
            title=f"randomisation test (Spearman after randomising down to each block; flagged above "
            f"{result['sanity']['threshold']})",
            title_justify="left",
        )
        for column in ("model", "method", "Spearman by block (head first)", "flagged", "maps"):
            table.add_column(column)
        for r in sanity:
            steps = ", ".join(
                f"{layer.rsplit('.', 1)[-1]} {_number(v, 2)}"
                for layer, v in zip(r["layers"], r["spearman"], strict=True)
            )
            table.add_row(r["model"], r["method"], steps, "yes" if r["flagged"] else "no", str(r["n"]))
        console.print(table)
    shortcut = result["shortcut"]
    if shortcut["rows"]:
        table = Table(title="shortcut audit: share of attribution", title_justify="left")
        for column in ("model", "outside lungs [95% CI]", "border frame", "zero padding", "maps"):
            table.add_column(column)
        for r in shortcut["rows"]:
            outside = f"{_number(r['outside_lung_share'])} [{_number(r['ci_low'])}, {_number(r['ci_high'])}]"
            table.add_row(
                r["model"],
                outside,
                _number(r["border_share"]),
                _number(r["padding_share"]),
                str(r.get("n_maps", r["n"])),
            )
        console.print(table)
    if shortcut["top_images"]:
        table = Table(title="images relying most on attribution outside the lungs", title_justify="left")
        for column in ("model", "image", "label", "method", "outside lungs", "overlay"):
            table.add_column(column)
        for t in shortcut["top_images"]:
            table.add_row(
                t["model"], t["image"], t["label"], t["method"], _number(t["outside_lung_share"]), t["overlay"]
            )
        console.print(table)
    ranking = result["ranking"]
    for key in ("methods", "models"):
        if ranking[key]:
            table = Table(title=f"ranking of {key} (score 1 = best in every comparison)", title_justify="left")
            for column in ("rank", key[:-1], "score"):
                table.add_column(column)
            for r in ranking[key]:
                table.add_row(str(r["rank"]), r[key[:-1]], _number(r["score"]))
            console.print(table)
    console.print(ranking["verdict"])
    for note in result["notes"]:
        err_console.print(f"note: {note}")


def evaluate_explanations_cmd(
    run: RunOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print metrics.json instead of tables")] = False,
    images_max: Annotated[int | None, typer.Option("--images-max", help="evaluate at most this many images")] = None,
    steps: Annotated[int, typer.Option("--steps", help="deletion / insertion steps")] = 16,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples for the 95% CIs")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="random pixel orders, bootstrap, randomisation")] = 0,
    memory_gib: Annotated[float | None, typer.Option("--memory-gib", help="memory budget (batch sizes)")] = None,
    no_sanity: Annotated[bool, typer.Option("--no-sanity", help="skip the model-randomisation test")] = False,
    no_stability: Annotated[bool, typer.Option("--no-stability", help="skip the fold-stability maps")] = False,
    sanity_images: Annotated[int, typer.Option("--sanity-images", help="images per model/method (sanity)")] = 4,
    stability_images: Annotated[
        int, typer.Option("--stability-images", help="images per model/method (fold stability)")
    ] = 4,
    insertion_start: Annotated[str, typer.Option("--insertion-start", help="blur or black")] = "blur",
    no_figures: Annotated[bool, typer.Option("--no-figures", help="tables and JSON only")] = False,
) -> None:
    """Measure the explanation maps: faithfulness, lung localisation, sanity, fold stability, shortcut audit."""
    from cxrlens.run.folder import RunDir, append_command
    from cxrlens.xai.study import evaluate_explanations

    rundir = RunDir(run)
    budget = memory_gib if memory_gib is not None else rundir.read_config().explain.memory_gib
    with progress_bar("measuring explanations", None) as advance:
        result = evaluate_explanations(
            run,
            images_max=images_max,
            steps=steps,
            bootstrap=bootstrap,
            seed=seed,
            memory_gib=budget,
            sanity=not no_sanity,
            stability=not no_stability,
            progress=advance,
            sanity_images=sanity_images,
            stability_images=stability_images,
            insertion_start=insertion_start,
            figures=not no_figures,
        )
    append_command(rundir)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print_result(result)
    err_console.print(f"wrote {run / 'xai'}")
