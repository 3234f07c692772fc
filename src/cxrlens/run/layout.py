"""Every path and file name of a run folder: the one place that names them (docs/architecture.md draws it).

```
RUN/
  run.json  config.yaml  splits.csv  labels.csv  predictions.csv
  models/<model>/fold<k>/   model.pt  done.json  predictions.csv  checkpoints/  logs/
  evaluation/               metrics.json  thresholds.json  table2.md  table2.csv  per_label.csv  figures/
  explanations/             index.json  maps/<image id>/<model>/<method>/<label>.npz|.json  overlays/  figures/
  xai/                      metrics.json  per_map.csv  cache.json  maps/  tables/  figures/
  nap/<model>/fold<k>/      nap.npz  summary.json  overview.png  layer_<layer>.png
  external/<name>/          metrics.json  predictions.csv  predictions.key.json  tables/  figures/  errors/
  audit/                    metrics.json  tables/  figures/  cav/
  report/                   index.html  assets/
```
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cxrlens.text import slug

RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
SPLITS_CSV = "splits.csv"
LABELS_CSV = "labels.csv"
PREDICTIONS_CSV = "predictions.csv"
MODEL_FILE = "model.pt"
DONE_JSON = "done.json"
METRICS_JSON = "metrics.json"
THRESHOLDS_JSON = "thresholds.json"
INDEX_JSON = "index.json"
SUMMARY_JSON = "summary.json"
FIGURES = "figures"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (nothing is read or written here)."""

    root: Path

    # -- the run itself ------------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def config_yaml(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_CSV

    @property
    def labels(self) -> Path:
        return self.root / LABELS_CSV

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS_CSV

    # -- trained models ------------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def fold_dir(self, model: str, fold: int) -> Path:
        return self.models_dir / model / f"fold{fold}"

    @staticmethod
    def fold_of_dir(name: str) -> int | None:
        """The fold number of a ``fold<k>`` folder name, None for any other name."""
        return int(name[4:]) if name.startswith("fold") and name[4:].isdigit() else None

    def model_file(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / MODEL_FILE

    def done_file(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / DONE_JSON

    def fold_predictions(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / PREDICTIONS_CSV

    def checkpoints_dir(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / "checkpoints"

    def last_checkpoint(self, model: str, fold: int) -> Path:
        return self.checkpoints_dir(model, fold) / "last.ckpt"

    # -- evaluation ----------------------------------------------------------------------------------------
    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def evaluation_metrics(self) -> Path:
        return self.evaluation_dir / METRICS_JSON

    @property
    def thresholds(self) -> Path:
        return self.evaluation_dir / THRESHOLDS_JSON

    @property
    def table2_md(self) -> Path:
        return self.evaluation_dir / "table2.md"

    @property
    def table2_csv(self) -> Path:
        return self.evaluation_dir / "table2.csv"

    @property
    def per_label_csv(self) -> Path:
        return self.evaluation_dir / "per_label.csv"

    @property
    def evaluation_figures(self) -> Path:
        return self.evaluation_dir / FIGURES

    def bars_figure(self, label: str) -> Path:
        return self.evaluation_figures / f"bars_{slug(label)}.png"

    def confusion_figure(self, entry: str) -> Path:
        return self.evaluation_figures / f"confusion_{slug(entry)}.png"

    def roc_figure(self, entry: str) -> Path:
        return self.evaluation_figures / f"roc_{slug(entry)}.png"

    # -- explanations --------------------------------------------------------------------------------------
    @property
    def explanations(self) -> MapFiles:
        return MapFiles(self.root / "explanations")

    # -- explanation metrics -------------------------------------------------------------------------------
    @property
    def xai_dir(self) -> Path:
        return self.root / "xai"

    @property
    def xai_metrics(self) -> Path:
        return self.xai_dir / METRICS_JSON

    @property
    def xai_per_map(self) -> Path:
        return self.xai_dir / "per_map.csv"

    @property
    def xai_cache(self) -> Path:
        return self.xai_dir / "cache.json"

    @property
    def xai_tables(self) -> Path:
        return self.xai_dir / "tables"

    @property
    def xai_figures(self) -> Path:
        return self.xai_dir / FIGURES

    @property
    def xai_maps(self) -> MapFiles:
        """Maps of the same image by the other folds' models (fold stability), stored like explanations."""
        return MapFiles(self.xai_dir)

    # -- activation profiles -------------------------------------------------------------------------------
    @property
    def nap_root(self) -> Path:
        return self.root / "nap"

    def nap(self, model: str, fold: int) -> NapFiles:
        return NapFiles(self.nap_root / model / f"fold{fold}")

    def nap_summaries(self) -> list[Path]:
        """Every ``nap/<model>/fold<k>/summary.json``, sorted."""
        return sorted(self.nap_root.glob(f"*/fold*/{SUMMARY_JSON}")) if self.nap_root.is_dir() else []

    # -- external validation and the confounder audit -----------------------------------------------------
    @property
    def external_root(self) -> Path:
        return self.root / "external"

    def external(self, name: str) -> ExternalFiles:
        return ExternalFiles(self.external_root / slug(name))

    def external_sets(self) -> list[ExternalFiles]:
        """Every evaluated external set (a folder with a metrics file), sorted."""
        if not self.external_root.is_dir():
            return []
        return [ExternalFiles(p.parent) for p in sorted(self.external_root.glob(f"*/{METRICS_JSON}"))]

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def audit_metrics(self) -> Path:
        return self.audit_dir / METRICS_JSON

    @property
    def audit_tables(self) -> Path:
        return self.audit_dir / "tables"

    @property
    def audit_figures(self) -> Path:
        return self.audit_dir / FIGURES

    @property
    def audit_cavs(self) -> Path:
        """Where captum's TCAV keeps its concept activation vectors."""
        return self.audit_dir / "cav"

    # -- report --------------------------------------------------------------------------------------------
    @property
    def report_dir(self) -> Path:
        return self.root / "report"


@dataclass(frozen=True)
class NapFiles:
    """The files of one activation-profile result (``nap/<model>/fold<k>/``)."""

    root: Path

    @property
    def npz(self) -> Path:
        return self.root / "nap.npz"

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_JSON

    @property
    def overview(self) -> Path:
        return self.root / "overview.png"

    def layer_figure(self, layer: str) -> Path:
        return self.root / f"layer_{slug(layer, 80)}.png"

    def layer_figures(self) -> list[Path]:
        return sorted(self.root.glob("layer_*.png"))


@dataclass(frozen=True)
class ExternalFiles:
    """The files of one external validation (``external/<name>/``)."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_JSON

    @property
    def predictions(self) -> Path:
        """Each model's probabilities on the external images (reused when data and checkpoints are the same)."""
        return self.root / PREDICTIONS_CSV

    @property
    def predictions_key(self) -> Path:
        return self.root / "predictions.key.json"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        return self.root / FIGURES

    def reliability_figure(self, model: str) -> Path:
        return self.figures / f"reliability_{slug(model)}.png"

    def labels_figure(self, model: str) -> Path:
        return self.figures / f"labels_{slug(model)}.png"

    @property
    def errors(self) -> MapFiles:
        """Explanation maps of the most confident external errors."""
        return MapFiles(self.root / "errors")


def image_id(filename: str) -> str:
    """A file-system-safe, unique id for an image: readable stem plus a short hash of the full name."""
    digest = hashlib.sha1(filename.encode("utf-8")).hexdigest()[:8]
    return f"{slug(Path(filename).stem, 40)}-{digest}"


FIGURE_PREFIXES = {"grid": "grid_", "occlusion": "occlusion_models_", "followup": "followup_"}


@dataclass(frozen=True)
class MapFiles:
    """The paths of a folder of attribution maps (``explanations/``, or ``xai/`` for other folds' maps).

    ``maps/<image id>/<model>/<method>/<label>.npz`` and its ``.json`` sidecar, ``overlays/`` (same tree, PNG),
    ``figures/`` and ``index.json``.
    """

    root: Path

    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_JSON

    def map_path(self, image: str, model: str, method: str, label: str) -> Path:
        return self.maps_dir / image_id(image) / slug(model) / slug(method) / f"{slug(label)}.npz"

    def overlay_path(self, image: str, model: str, method: str, label: str) -> Path:
        return self.root / "overlays" / image_id(image) / slug(model) / slug(method) / f"{slug(label)}.png"

    def figure_dir(self) -> Path:
        return self.root / FIGURES

    def grid_figure(self, image: str, label: str) -> Path:
        """Models x methods for one image and label (the paper's Fig. 8-10)."""
        return self.figure_dir() / f"{FIGURE_PREFIXES['grid']}{image_id(image)}_{slug(label)}.png"

    def occlusion_figure(self, image: str, label: str) -> Path:
        """Occlusion across models for one image and label (Fig. 11-12)."""
        return self.figure_dir() / f"{FIGURE_PREFIXES['occlusion']}{image_id(image)}_{slug(label)}.png"

    def followup_figure(self, patient: str, model: str, label: str) -> Path:
        """Occlusion over one patient's follow-up images (Fig. 13)."""
        return self.figure_dir() / f"{FIGURE_PREFIXES['followup']}{slug(patient)}_{slug(model)}_{slug(label)}.png"

    @staticmethod
    def figure_kind(name: str) -> str:
        """``grid``, ``occlusion``, ``followup`` or ``other`` for a figure file name."""
        return next((kind for kind, prefix in FIGURE_PREFIXES.items() if name.startswith(prefix)), "other")
