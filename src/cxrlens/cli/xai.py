"""`cxrlens evaluate-explanations`: faithfulness, localisation, sanity, stability and a shortcut audit of the maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.fileio import json_text
from cxrlens.text import fmt, fmt_ci

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="run folder with explanations (`cxrlens explain`)")]


def _metric_table(name: str, block: dict[str, Any], direction: str) -> Table | None:
    rows = block["rows"]
    if not rows:
        return None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = Table(title=f"{name} ({direction}): mean [95% CI]", title_justify="left")
    table.add_column("model")
    for method in methods:
        table.add_column(method, justify="right")
    cells = {(r["model"], r["method"]): r for r in rows}
    for model in models:
        values = []
        for method in methods:
            r = cells.get((model, method))
            values.append("–" if r is None else fmt_ci(r["mean"], r["ci_low"], r["ci_high"]))
        table.add_row(model, *values)
    return table


def _no_positive_table(counts: dict[str, dict[str, int]]) -> Table | None:
    """Maps with no positive attribution per model and method (not evaluable for the relevance shares)."""
    rows = [(model, method, n) for model, row in counts.items() for method, n in row.items()]
    if not any(n for _, _, n in rows):
        return None
    table = Table(
        title="maps with no positive attribution (lung share, pointing game, border and padding: not evaluable)",
        title_justify="left",
    )
    for column in ("model", "method", "maps"):
        table.add_column(column)
    for model, method, n in rows:
        table.add_row(model, method, str(n))
    return table


def print_result(result: dict[str, Any]) -> None:
    """The tables of an explanation evaluation, as rich tables on stdout; notes on stderr."""
    from cxrlens.xai.files import direction  # torch-heavy: imported when a result is printed

    for name, block in result["metrics"].items():
        table = _metric_table(name, block, direction(name, block["higher_is_better"]))
        if table is not None:
            console.print(table)
    no_positive = _no_positive_table(result.get("no_positive_maps") or {})
    if no_positive is not None:
        console.print(no_positive)
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
                f"{layer.rsplit('.', 1)[-1]} {fmt(v, 2)}" for layer, v in zip(r["layers"], r["spearman"], strict=True)
            )
            table.add_row(r["model"], r["method"], steps, "yes" if r["flagged"] else "no", str(r["n"]))
        console.print(table)
    shortcut = result["shortcut"]
    if shortcut["rows"]:
        table = Table(title="shortcut audit: share of attribution", title_justify="left")
        for column in ("model", "outside lungs [95% CI]", "border frame", "zero padding", "maps"):
            table.add_column(column)
        for r in shortcut["rows"]:
            outside = fmt_ci(r["outside_lung_share"], r["ci_low"], r["ci_high"])
            table.add_row(
                r["model"],
                outside,
                fmt(r["border_share"]),
                fmt(r["padding_share"]),
                str(r.get("n_maps", r["n"])),
            )
        console.print(table)
    if shortcut["top_images"]:
        table = Table(title="images relying most on attribution outside the lungs", title_justify="left")
        for column in ("model", "image", "label", "method", "outside lungs", "overlay"):
            table.add_column(column)
        for t in shortcut["top_images"]:
            table.add_row(t["model"], t["image"], t["label"], t["method"], fmt(t["outside_lung_share"]), t["overlay"])
        console.print(table)
    ranking = result["ranking"]
    for key in ("methods", "models"):
        if ranking[key]:
            table = Table(title=f"ranking of {key} (score 1 = best in every comparison)", title_justify="left")
            for column in ("rank", key[:-1], "score"):
                table.add_column(column)
            for r in ranking[key]:
                table.add_row(str(r["rank"]), r[key[:-1]], fmt(r["score"]))
            console.print(table)
    console.print(ranking["verdict"])
    for note in result["notes"]:
        err_console.print(f"note: {note}")


def evaluate_explanations_cmd(
    ctx: typer.Context,
    run: RunOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print metrics.json instead of tables")] = False,
    images_max: Annotated[int | None, typer.Option("--images-max", help="evaluate at most this many images")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="deletion / insertion steps (16)")] = None,
    bootstrap: Annotated[int | None, typer.Option("--bootstrap", help="bootstrap resamples for the CIs")] = None,
    xai_seed: Annotated[int | None, typer.Option("--seed", help="pixel orders, bootstrap, randomisation")] = None,
    xai_memory_gib: Annotated[float | None, typer.Option("--memory-gib", help="memory budget")] = None,
    sanity: Annotated[bool | None, typer.Option("--sanity/--no-sanity", help="model-randomisation test")] = None,
    stability: Annotated[bool | None, typer.Option("--stability/--no-stability", help="fold stability")] = None,
    sanity_images: Annotated[int | None, typer.Option("--sanity-images", help="images per model/method")] = None,
    stability_images: Annotated[
        int | None, typer.Option("--stability-images", help="images per model/method (fold stability)")
    ] = None,
    insertion_start: Annotated[str | None, typer.Option("--insertion-start", help="blur or black")] = None,
    xai_figures: Annotated[bool | None, typer.Option("--figures/--no-figures", help="draw the figures")] = None,
    xai_accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu or auto")] = None,
    assignments: SetOpt = None,
) -> None:
    """Measure the explanation maps: faithfulness, lung localisation, sanity, fold stability, shortcut audit."""
    # torch-heavy: the explanation-metrics stage is imported when the command runs
    from cxrlens.run import open_run
    from cxrlens.xai.study import evaluate_explanations

    opened = open_run(run)
    cfg = resolve(ctx, None, run)
    xai = cfg.xai if cfg.xai.memory_gib else cfg.xai.model_copy(update={"memory_gib": cfg.explain.memory_gib})
    with progress_bar("measuring explanations", None) as advance:
        result = evaluate_explanations(opened, xai, progress=advance)
    opened.record_command()
    if as_json:
        print(json_text(result.to_dict()))
        return
    print_result(result.to_dict())
    err_console.print(f"wrote {opened.layout.xai_dir}")
