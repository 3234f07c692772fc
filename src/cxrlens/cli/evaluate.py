"""`cxrlens evaluate`: the paper's metrics, per label, per fold, for every model and the ensembles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import console, err_console


def evaluate_cmd(
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    threshold: Annotated[str | None, typer.Option("--threshold", help="0.5, another number, or tuned")] = None,
    min_support: Annotated[int | None, typer.Option("--min-support", help="test positives to average a label")] = None,
    models: Annotated[list[str] | None, typer.Option("--model", "-m", help="models (default: all trained)")] = None,
    ensembles: Annotated[bool | None, typer.Option("--ensembles/--no-ensembles", help="mean and vote")] = None,
) -> None:
    """Micro/macro and per-label metrics, mean ± std over folds, Table 2, charts; writes run/evaluation/."""
    from cxrlens.evaluate import evaluate_run, markdown_table, write_evaluation
    from cxrlens.run.folder import RunDir, append_command

    rundir = RunDir(run)
    cfg = rundir.read_config().evaluate
    result = evaluate_run(
        run,
        threshold=threshold if threshold is not None else cfg.threshold,
        min_support=min_support if min_support is not None else cfg.min_support,
        models=models,
        ensembles=ensembles if ensembles is not None else cfg.ensembles,
    )
    written = write_evaluation(run, result)
    append_command(rundir)
    if as_json:
        print(result.to_json())
        return
    console.print(markdown_table(result), markup=False)
    err_console.print(f"wrote {len(written)} files to {run / 'evaluation'}")
