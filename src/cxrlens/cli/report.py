"""`cxrlens report`: a static HTML report of a run folder, opened from disk."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import err_console
from cxrlens.cli.options import SetOpt, resolve


def report_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", "-r", help="run folder")],
    report_out: Annotated[Path | None, typer.Option("--out", help="report folder (default: RUN/report)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open the report in the web browser")] = False,
    assignments: SetOpt = None,
) -> None:
    """Data, metrics, explanation gallery, explanation metrics, NAP and provenance in one offline HTML page."""
    # torch-heavy: the report stage is imported when the command runs
    from cxrlens.report.builder import build_report
    from cxrlens.run import open_run

    opened = open_run(run)
    index = build_report(opened, resolve(ctx, None, run).report)
    opened.record_command()
    err_console.print("report written; open it from disk (no server needed):")
    print(index.resolve())
    if open_browser and not webbrowser.open(index.resolve().as_uri()):
        err_console.print("no web browser found; open the path above yourself")
