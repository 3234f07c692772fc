"""Section 6 of the report: how the run was made (``run.json``: hashes, seed, versions, commands, preprocessing)
and its config file as written."""

from __future__ import annotations

from typing import Any

from cxrlens.report.common import texts
from cxrlens.run.folder import Run
from cxrlens.version import __version__


def provenance_section(run: Run) -> dict[str, Any]:
    info = run.info
    return {
        "available": True,
        "name": info.name,
        "created": info.created,
        "seed": info.seed,
        "splits_sha256": info.splits_sha256,
        "config_hash": info.config_hash,
        "run_version": info.environment.get("cxrlens"),
        "report_version": __version__,
        "environment": texts(info.environment),
        "commands": list(info.commands),
        "config_name": run.layout.config_yaml.name,
        "config_yaml": run.config_text(),
        "preprocess": texts(info.preprocess.model_dump()),
        "sources": list(info.sources),
        "data_root": info.data_root,
        "run_dir": str(run.root.resolve()),
    }
