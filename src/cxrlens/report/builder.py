"""`cxrlens report`: one self-contained static HTML page over a run folder, opened from disk.

```
<report>/                default RUN/report (``run.layout.report_dir``)
  index.html             the page: inline CSS and script, data embedded as JSON (no fetch: works on file://)
  assets/trust/          the confounder audit's figure, the external sets' figures and their errors' overlays,
                         the shortcut audit's overlays
  assets/evaluation/     copies of the evaluation's figures
  assets/explanations/   copies of the explanation figures (grids, occlusion across models, follow-ups)
  assets/gallery/<image id>/image.png                          the preprocessed X-ray (grey)
  assets/gallery/<image id>/<model>/<method>/<label>.png       the heatmap (RGBA, transparent where ~0)
  assets/xai/            copies of the explanation-metric figures
  assets/nap/<model>/fold<k>/  the activation profiles' overview and per-layer figures
```

The run is read only through :mod:`cxrlens.run` (its layout, readers and image source); each section is built
by its own module (``trust_section``, ``data_section``, ``metrics_section``, ``gallery``, ``xai_section``,
``nap_section``, ``provenance``) and assembled here. Section 0, "Can these numbers be trusted?" (the confounder
audit, the external validations and the shortcut audit), comes first: the page says it before any metric.

Every text from the data (file names, findings, labels, patient ids, config values, command lines) is escaped
by Jinja2's autoescape; the JSON the page's script reads sits in a ``<script type="application/json">`` with
``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e`` and ``\\u0026``, and the page's Content-Security-Policy
only runs the one inline script whose hash it names.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from cxrlens.config import ReportConfig
from cxrlens.errors import RunError
from cxrlens.figures import legend_png
from cxrlens.fileio import atomic_write_text, json_text
from cxrlens.report.assets import AssetWriter, data_uri
from cxrlens.report.data_section import dataset_section
from cxrlens.report.gallery import build_gallery, figure_groups
from cxrlens.report.metrics_section import metrics_section
from cxrlens.report.nap_section import nap_section
from cxrlens.report.provenance import provenance_section
from cxrlens.report.trust_section import trust_section
from cxrlens.report.xai_section import xai_section
from cxrlens.run.folder import Run

FORMAT = "cxrlens-report/1"
PACKAGE = "cxrlens.report"
TEMPLATES = "templates"  # the page, its CSS and script (package data of PACKAGE)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

SECTIONS = (  # numbered from 0 in the nav: section 0 is the trust section
    ("trust", "Can these numbers be trusted?"),
    ("dataset", "Data"),
    ("metrics", "Metrics"),
    ("gallery", "Explanations"),
    ("xai", "Explanation metrics"),
    ("nap", "Activation profiles"),
    ("provenance", "Provenance"),
)


def json_island(obj: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` can end the element."""
    text = json_text(obj, indent=None)
    for char, escaped in _JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return Markup(text)  # escaped above for this context


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader(PACKAGE, TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def report_dir(run: Run, cfg: ReportConfig) -> Path:
    """The report folder: ``cfg.out``, else ``run.layout.report_dir``; never the run folder itself."""
    out = Path(cfg.out) if cfg.out else run.layout.report_dir
    if out.resolve() == run.root.resolve():
        raise RunError(f"{out}: the report needs its own folder, not the run folder itself")
    return out


def build_report(run: Run, cfg: ReportConfig) -> Path:
    """Write ``index.html`` and its ``assets/`` for a run; returns the path of ``index.html``.

    The folder is ``cfg.out`` (default ``RUN/report``). Parts of the run that are not computed yet (evaluation,
    explanations, explanation metrics, activation profiles, the confounder audit, external validation) get a
    section naming the command that computes them; a damaged part says which file is damaged. ``cfg.max_side``
    caps the side of the gallery's X-rays and heatmaps (pixels).
    """
    out = report_dir(run, cfg)
    assets = AssetWriter(out)
    trust = trust_section(run, assets)
    dataset = dataset_section(run)
    metrics = metrics_section(run, assets)
    gallery = build_gallery(run, dataset["truth"], assets, cfg.max_side)
    gallery["figure_groups"] = figure_groups(gallery.get("figures", []))
    xai = xai_section(run, assets)
    nap = nap_section(run, assets)
    provenance = provenance_section(run)

    env = _environment()
    css = _source("style.css")
    script = _source("report.js")
    status = {
        "trust": trust["available"],
        "dataset": "labels" in dataset,
        "metrics": metrics["available"],
        "gallery": gallery["available"],
        "xai": xai["available"],
        "nap": nap["available"],
        "provenance": True,
    }
    html = env.get_template("index.html.j2").render(
        title=f"cxrlens report: {run.info.name or run.root.name}",
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sections=SECTIONS,
        status=status,
        trust=trust,
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
        page_data=json_island({"format": FORMAT, "gallery": gallery.get("data")}),
        legend={"signed": data_uri(legend_png(True)), "positive": data_uri(legend_png(False))},
    )
    index = out / "index.html"
    atomic_write_text(index, html)
    assets.prune()
    return index


def _source(name: str) -> str:
    """The text of one of the report's own template files (the page's CSS and script)."""
    return files(PACKAGE).joinpath(TEMPLATES, name).read_text(encoding="utf-8")
