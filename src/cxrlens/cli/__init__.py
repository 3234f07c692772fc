"""The `cxrlens` command: a thin typer app over the library functions."""

from __future__ import annotations

import sys

import typer

from cxrlens.cli import audit, data, evaluate, explain, report, train, xai
from cxrlens.cli.common import err_console, tune_allocator
from cxrlens.errors import CxrlensError

app = typer.Typer(
    help="Train, compare and explain chest X-ray classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(data.app, name="data")
app.command("models")(train.models_cmd)
app.command("train")(train.train_cmd)
app.command("cv")(train.cv_cmd)
app.command("predict")(train.predict_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("evaluate-external")(evaluate.evaluate_external_cmd)
app.command("audit")(audit.audit_cmd)
app.command("methods")(explain.methods_cmd)
app.command("explain")(explain.explain_cmd)
app.command("nap")(explain.nap_cmd)
app.command("evaluate-explanations")(xai.evaluate_explanations_cmd)
app.command("report")(report.report_cmd)


def main() -> None:
    tune_allocator()
    try:
        app()
    except CxrlensError as err:
        err_console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # disk full, permission denied, ...: the message names the file
        err_console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved, rerun the command to resume")
        sys.exit(130)
