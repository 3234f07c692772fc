"""`cxrlens report`: a static HTML report of a run folder, opened from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import err_console


def report_cmd(
    run: Annotated[Path, typer.Option("--run", "-r", help="run folder")],
    out: Annotated[Path | None, typer.Option("--out", help="report folder (default: RUN/report)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open the report in the web browser")] = False,
) -> None:
    """Data, metrics, explanation gallery, explanation metrics, NAP and provenance in one offline HTML page."""
    from cxrlens.report.builder import build_report
    from cxrlens.run.folder import RunDir, append_command

    index = build_report(run, out)
    append_command(RunDir(run))
    err_console.print("report written; open it from disk (no server needed):")
    print(index.resolve())
    if open_browser:
        import webbrowser

        if not webbrowser.open(index.resolve().as_uri()):
            err_console.print("no web browser found; open the path above yourself")
