"""Section 5 of the report: the neuron activation profiles of ``cxrlens nap``, one block per model and fold.

Each result is a :class:`~cxrlens.run.layout.NapFiles` folder (``run.layout.nap_summaries()`` finds them):
its ``summary.json`` (groups, layers with their dead and live feature maps), the overview figure and one
figure per layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlens.errors import RunError
from cxrlens.report.assets import AssetWriter
from cxrlens.report.common import missing, rows_of
from cxrlens.run.folder import Run
from cxrlens.run.layout import NapFiles, RunLayout
from cxrlens.text import slug


def nap_section(run: Run, assets: AssetWriter) -> dict[str, Any]:
    summaries = run.layout.nap_summaries()
    if not summaries:
        return missing(f"not computed yet: run `cxrlens nap --run {run.root} --model MODEL`")
    return {"available": True, "runs": [_nap_run(run, path, assets) for path in summaries]}


def _nap_run(run: Run, summary_path: Path, assets: AssetWriter) -> dict[str, Any]:
    files = NapFiles(summary_path.parent)
    model = files.root.parent.name
    number = RunLayout.fold_of_dir(files.root.name)
    fold = files.root.name if number is None else str(number)
    try:
        summary = run.read_result(summary_path) or {}
    except RunError as err:  # damaged: the message names the file
        return {"model": model, "fold": fold, "problem": f"{err}: run `cxrlens nap --run {run.root} --model {model}`"}
    base = f"nap/{slug(model)}/{slug(files.root.name)}"
    layers = []
    for layer in rows_of(summary.get("layers")):
        name = str(layer.get("name"))
        figure = files.layer_figure(name)
        src = assets.copy(figure, f"{base}/{slug(figure.stem, 100)}.png") if figure.is_file() else None
        layers.append(
            {
                "name": layer.get("name"),
                "channels": layer.get("channels"),
                "dead": layer.get("dead"),
                "live": layer.get("live"),
                "src": src,
            }
        )
    dead = [layer["dead"] for layer in layers if _count(layer["dead"])]
    channels = [layer["channels"] for layer in layers if _count(layer["channels"])]
    return {
        "model": str(summary.get("model", model)),
        "fold": str(summary.get("fold", fold)),
        "images": summary.get("images"),
        "n_images": summary.get("n_images"),
        "groups": rows_of(summary.get("groups")),
        "empty_groups": [str(g) for g in summary.get("empty_groups") or []],
        "ranking": summary.get("ranking"),
        "layers": layers,
        "dead_total": sum(dead),
        "channels_total": sum(channels),
        "overview": assets.copy(files.overview, f"{base}/overview.png") if files.overview.is_file() else None,
        "problem": None,
    }


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
