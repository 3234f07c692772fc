"""`cxrlens report`: one self-contained static HTML page over a run folder, opened from disk.

```
run/report/
  index.html          the page: inline CSS and script, data embedded as JSON (no fetch: works on file://)
  assets/evaluation/  copies of evaluation/figures/*.png
  assets/explanations/ copies of explanations/figures/*.png (grids, occlusion across models, follow-ups)
  assets/gallery/<image id>/image.png                          the preprocessed X-ray (grey)
  assets/gallery/<image id>/<model>/<method>/<label>.png       the heatmap (RGBA, transparent where ~0)
  assets/xai/         copies of xai/figures/*.png and the shortcut audit's overlays
  assets/nap/<model>/fold<k>/  overview.png and layer_*.png
```

Every text from the data (file names, findings, labels, patient ids, config values, command lines) is escaped
by Jinja2's autoescape; the JSON the page's script reads sits in a ``<script type="application/json">`` with
``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e`` and ``\\u0026``, and the page's Content-Security-Policy
only runs the one inline script whose hash it names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cxrlens.errors import RunError
from cxrlens.fileio import atomic_write_text
from cxrlens.report.assets import AssetWriter, data_uri, legend_png, safe_name
from cxrlens.report.gallery import build_gallery, figure_groups
from cxrlens.report.sections import (
    as_dict,
    dataset_section,
    metrics_section,
    missing,
    nap_runs,
    provenance_section,
    xai_section,
)
from cxrlens.run.folder import RunDir

FORMAT = "cxrlens-report/1"
DEFAULT_MAX_SIDE = 256
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

SECTIONS = (
    ("dataset", "Data"),
    ("metrics", "Metrics"),
    ("gallery", "Explanations"),
    ("xai", "Explanation metrics"),
    ("nap", "Activation profiles"),
    ("provenance", "Provenance"),
)


def json_island(obj: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` can end the element."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in _JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return Markup(text)  # escaped above for this context


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("cxrlens.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _evaluation_figures(root: Path, metrics: dict[str, Any], assets: AssetWriter) -> None:
    from cxrlens.evaluate.plots import slug

    folder = metrics.pop("figures_dir", None)
    metrics["bars"], metrics["per_entry"], metrics["other_figures"] = [], [], []
    if folder is None:
        return
    links = {p.name: assets.copy(p, f"evaluation/{safe_name(p.stem, 100)}.png") for p in sorted(folder.glob("*.png"))}
    used: set[str] = set()
    for label in metrics["label_names"]:
        name = f"bars_{slug(label)}.png"
        if name in links:
            metrics["bars"].append({"label": label, "src": links[name]})
            used.add(name)
    for entry in metrics["entry_names"]:
        confusion, roc = f"confusion_{slug(entry)}.png", f"roc_{slug(entry)}.png"
        if confusion in links or roc in links:
            metrics["per_entry"].append({"name": entry, "confusion": links.get(confusion), "roc": links.get(roc)})
            used.update({confusion, roc})
    metrics["other_figures"] = [{"name": n, "src": s} for n, s in links.items() if n not in used]


def _xai_assets(root: Path, xai: dict[str, Any], assets: AssetWriter) -> None:
    figures = root / "xai" / "figures"
    xai["figures"] = []
    if figures.is_dir():
        for path in sorted(figures.glob("*.png")):
            xai["figures"].append({"name": path.name, "src": assets.copy(path, f"xai/{safe_name(path.stem, 100)}.png")})
    for row in xai.get("shortcut", {}).get("top_images", []):
        row["src"] = None
        value = row.get("overlay")
        if not value:
            continue
        candidate = Path(str(value))
        options = [candidate] if candidate.is_absolute() else [root / candidate, root / "xai" / candidate]
        options += [] if candidate.is_absolute() else [root / "explanations" / candidate]
        found = next((p for p in options if p.is_file() and p.suffix.lower() == ".png"), None)
        if found is not None:
            digest = hashlib.sha1(str(found.resolve()).encode("utf-8")).hexdigest()[:12]
            row["src"] = assets.copy(found, f"xai/overlays/{safe_name(found.stem, 40)}-{digest}.png")


def _nap_section(root: Path, assets: AssetWriter) -> dict[str, Any]:
    runs = nap_runs(root)
    if not runs:
        return missing(f"not computed yet: run `cxrlens nap --run {root} --model MODEL`")
    out: list[dict[str, Any]] = []
    for folder, summary in runs:
        model, fold = folder.parent.name, folder.name
        base = f"nap/{safe_name(model)}/{safe_name(fold)}"
        if isinstance(summary, str):
            out.append({"model": model, "fold": fold.removeprefix("fold"), "problem": summary})
            continue
        files = as_dict(summary.get("files"))
        overview_name = str(files.get("overview") or "overview.png")
        overview = folder / Path(overview_name).name
        layer_figures = as_dict(files.get("figures"))
        layers = []
        for layer in summary.get("layers") or []:
            if not isinstance(layer, dict):
                continue
            figure_name = layer_figures.get(str(layer.get("name")))
            figure = folder / Path(str(figure_name)).name if figure_name else None
            src = None
            if figure is not None and figure.is_file():
                src = assets.copy(figure, f"{base}/{safe_name(figure.stem, 100)}.png")
            layers.append(
                {
                    "name": layer.get("name"),
                    "channels": layer.get("channels"),
                    "dead": layer.get("dead"),
                    "live": layer.get("live"),
                    "src": src,
                }
            )
        dead = [layer["dead"] for layer in layers if isinstance(layer["dead"], int)]
        channels = [layer["channels"] for layer in layers if isinstance(layer["channels"], int)]
        out.append(
            {
                "model": str(summary.get("model", model)),
                "fold": str(summary.get("fold", fold.removeprefix("fold"))),
                "images": summary.get("images"),
                "n_images": summary.get("n_images"),
                "groups": [g for g in summary.get("groups") or [] if isinstance(g, dict)],
                "empty_groups": [str(g) for g in summary.get("empty_groups") or []],
                "ranking": summary.get("ranking"),
                "layers": layers,
                "dead_total": sum(dead),
                "channels_total": sum(channels),
                "overview": assets.copy(overview, f"{base}/overview.png") if overview.is_file() else None,
                "problem": None,
            }
        )
    return {"available": True, "runs": out}


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, max_side: int = DEFAULT_MAX_SIDE) -> Path:
    """Write ``index.html`` and its ``assets/`` for a run folder; returns the path of ``index.html``.

    ``out_dir`` defaults to ``<run>/report``. Parts of the run that are not computed yet (evaluation,
    explanations, explanation metrics, activation profiles) get a section naming the command that computes
    them. ``max_side`` caps the side of the gallery's X-rays and heatmaps (pixels).
    """
    run = RunDir(Path(run_dir))
    info = run.read_info()
    root = run.root
    out = Path(out_dir) if out_dir is not None else root / "report"
    if out.resolve() == root.resolve():
        raise RunError(f"{out}: the report needs its own folder, not the run folder itself")
    if max_side < 16:
        raise RunError(f"max_side must be at least 16 pixels, not {max_side}")
    min_images = None
    if run.config_yaml.is_file():
        min_images = run.read_config().data.labels.min_images
    assets = AssetWriter(out)

    dataset = dataset_section(root, info, min_images)
    if not (root / "labels.csv").is_file() and not (root / "splits.csv").is_file():
        dataset["missing"] = f"not computed yet: run `cxrlens cv --run {root}` (writes splits.csv and labels.csv)"
    metrics = metrics_section(root)
    if metrics["available"]:
        _evaluation_figures(root, metrics, assets)
    gallery = build_gallery(root, info, dataset["truth"], assets, max_side)
    gallery["figure_groups"] = figure_groups(gallery.get("figures", []))
    xai = xai_section(root)
    if xai["available"]:
        _xai_assets(root, xai, assets)
    nap = _nap_section(root, assets)
    provenance = provenance_section(root, info)

    env = _environment()
    css = env.loader.get_source(env, "style.css")[0]
    script = env.loader.get_source(env, "report.js")[0]
    page_data = {"format": FORMAT, "gallery": gallery.get("data")}
    status = {
        "dataset": "labels" in dataset,
        "metrics": metrics["available"],
        "gallery": gallery["available"],
        "xai": xai["available"],
        "nap": nap["available"],
        "provenance": True,
    }
    html = env.get_template("index.html.j2").render(
        title=f"cxrlens report: {info.get('name') or root.name}",
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sections=SECTIONS,
        status=status,
        dataset=dataset,
        metrics=metrics,
        gallery=gallery,
        xai=xai,
        nap=nap,
        provenance=provenance,
        css=Markup(css),  # our own template file
        script=Markup(script),  # our own template file
        csp_style=csp_hash(css),
        csp_script=csp_hash(script),
        page_data=json_island(page_data),
        legend={"signed": data_uri(legend_png(True)), "positive": data_uri(legend_png(False))},
    )
    index = out / "index.html"
    atomic_write_text(index, html)
    assets.prune()
    return index
