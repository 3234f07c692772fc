"""`cxrlens evaluate`: the paper's metrics, per label, per fold, for every model and the ensembles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.fileio import json_text


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


def evaluate_external_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")],
    external_data: Annotated[
        list[str], typer.Option("--data", "-d", help="external data: folder or CSV of any layout; repeat to combine")
    ],
    external_name: Annotated[str | None, typer.Option("--name", help="name of the set (default: folder names)")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip unreadable rows/images (counted)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as one JSON object")] = False,
    assignments: SetOpt = None,
) -> None:
    """The run's models on another data set: Table 2 and per-label numbers with patient-bootstrap intervals,
    calibration, the in-domain numbers beside them, and the most confident errors with their maps."""
    # torch-heavy: the evaluate stage is imported when the command runs
    from cxrlens.evaluate.external.files import summary_markdown
    from cxrlens.evaluate.external.runner import evaluate_external
    from cxrlens.run import open_run

    opened = open_run(run)
    cfg = resolve(ctx, None, run)
    with progress_bar("external images", None) as advance:
        result = evaluate_external(opened, external_data, cfg.external, skip_bad=skip_bad, progress=advance)
    opened.record_command()
    if as_json:
        print(json_text(result.to_dict()))
        return
    console.print(summary_markdown(result.to_dict()), markup=False)
    err_console.print(f"wrote {result.folder}")
