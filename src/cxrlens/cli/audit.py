"""`cxrlens audit`: can each label be told apart from where an image comes from (source, view, sex, age)?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.fileio import json_text


def audit_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", "-r", help="trained run folder")],
    audit_by: Annotated[
        list[str] | None,
        typer.Option("--by", help="metadata columns, comma-separated or repeated: source, view, sex, age"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the audit as one JSON object")] = False,
    assignments: SetOpt = None,
) -> None:
    """Is each label confounded with the image's source, view, sex or age group — in the data, in the models'
    out-of-fold scores, and in their features (probe, TCAV)? Writes run/audit/."""
    # torch-heavy: the audit is imported when the command runs
    from cxrlens.evaluate.audit.files import flags_text, label_table
    from cxrlens.evaluate.audit.runner import run_audit
    from cxrlens.run import open_run

    opened = open_run(run)
    cfg = resolve(ctx, None, run).audit
    with progress_bar("audited images", None) as advance:
        result = run_audit(opened, cfg, progress=advance)
    opened.record_command()
    if as_json:
        print(json_text(result.to_dict()))
        return
    console.print(label_table(result.to_dict()), markup=False)
    console.print("")
    console.print(flags_text(result.to_dict()), markup=False)
    err_console.print(f"wrote {len(result.metrics['files'])} files to {result.folder}")
