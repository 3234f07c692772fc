"""`cxrlens evaluate`: the paper's metrics, per label, per fold, for every model and the ensembles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import console, err_console
from cxrlens.cli.options import SetOpt, resolve


def evaluate_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    threshold: Annotated[str | None, typer.Option("--threshold", help="0.5, another number, or tuned")] = None,
    min_support: Annotated[int | None, typer.Option("--min-support", help="test positives to average a label")] = None,
    evaluated: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="models to evaluate (default: all trained)")
    ] = None,
    ensembles: Annotated[bool | None, typer.Option("--ensembles/--no-ensembles", help="mean and vote")] = None,
    assignments: SetOpt = None,
) -> None:
    """Micro/macro and per-label metrics, mean ± std over folds, Table 2, charts; writes run/evaluation/."""
    # torch-heavy: the evaluate stage is imported when the command runs
    from cxrlens.evaluate import evaluate_run, markdown_table, write_evaluation
    from cxrlens.run import open_run

    opened = open_run(run)
    result = evaluate_run(opened, resolve(ctx, None, run).evaluate, models=evaluated)
    written = write_evaluation(opened, result)
    opened.record_command()
    if as_json:
        print(result.to_json())
        return
    console.print(markdown_table(result), markup=False)
    err_console.print(f"wrote {len(written)} files to {opened.layout.evaluation_dir}")
