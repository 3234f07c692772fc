"""The run folder: one study's config, splits, checkpoints, predictions, evaluation and explanations.

```
run/
  run.json            label names, preprocessing, splits hash, versions, command lines
  config.yaml         the resolved study config
  splits.csv          filename,patient_id,fold,subset
  labels.csv          filename,patient_id,<one 0/1 column per label>
  predictions.csv     out-of-fold test and validation probabilities of every model/fold
  models/<model>/fold<k>/  checkpoints/ (lightning, for --resume), model.pt, predictions.csv, done.json, logs/
  evaluation/  explanations/  nap/  report/
```
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

import cxrlens
from cxrlens.config import RunConfig
from cxrlens.data.labels import LabelSpace
from cxrlens.data.records import Dataset
from cxrlens.errors import RunError
from cxrlens.fileio import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def labels_csv(self) -> Path:
        return self.root / "labels.csv"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    def fold_dir(self, model: str, fold: int) -> Path:
        return self.root / "models" / model / f"fold{fold}"

    def model_file(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / "model.pt"

    def done_file(self, model: str, fold: int) -> Path:
        return self.fold_dir(model, fold) / "done.json"

    def is_done(self, model: str, fold: int) -> bool:
        return self.done_file(model, fold).is_file() and self.model_file(model, fold).is_file()

    def read_info(self) -> dict[str, Any]:
        if not self.run_json.is_file():
            raise RunError(f"{self.root}: not a cxrlens run folder (no run.json); create one with `cxrlens cv`")
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RunError(f"{self.run_json}: damaged ({err.msg} at line {err.lineno})") from None

    def read_config(self) -> RunConfig:
        from cxrlens.config import load_run_config

        if not self.config_yaml.is_file():
            raise RunError(f"{self.root}: no config.yaml; not a cxrlens run folder")
        return load_run_config(self.config_yaml)

    def label_names(self) -> list[str]:
        return list(self.read_info()["label_names"])

    def trained(self) -> list[tuple[str, int]]:
        """(model, fold) pairs with a finished model."""
        pairs = []
        models_dir = self.root / "models"
        if not models_dir.is_dir():
            return pairs
        for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
            for fold_dir in sorted(model_dir.glob("fold*")):
                fold = int(fold_dir.name[4:])
                if self.is_done(model_dir.name, fold):
                    pairs.append((model_dir.name, fold))
        return pairs


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def write_labels_csv(path: Path, dataset: Dataset, space: LabelSpace) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filename", "patient_id", *space.names])
    for rec in dataset.records:
        writer.writerow([rec.filename, rec.patient_id, *(int(v) for v in space.encode(rec.labels))])
    atomic_write_text(path, buffer.getvalue())


def environment() -> dict[str, str]:
    """Versions of what the results depend on (from package metadata: no slow imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"cxrlens": cxrlens.__version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "torchvision", "timm", "captum", "lightning", "numpy", "scikit-learn", "pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def write_run_info(run: RunDir, cfg: RunConfig, info: dict[str, Any]) -> None:
    """Write run.json and config.yaml; an existing run must have the same labels and splits."""
    if run.run_json.is_file():
        old = run.read_info()
        for key in ("label_names", "splits_sha256"):
            if old.get(key) != info.get(key):
                raise RunError(
                    f"{run.root}: this run folder was made with other {key.replace('_', ' ')} "
                    f"({old.get(key)} vs {info.get(key)}); use a new --run folder"
                )
        info["commands"] = [*old.get("commands", []), command_line()]
        info["created"] = old.get("created", info.get("created"))
    else:
        info["commands"] = [command_line()]
        info["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info["environment"] = environment()
    atomic_write_text(run.config_yaml, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    atomic_write_json(run.run_json, info)


def append_command(run: RunDir) -> None:
    """Record a later command (evaluate, explain, report, ...) in run.json for provenance."""
    info = run.read_info()
    info["commands"] = [*info.get("commands", []), command_line()]
    atomic_write_json(run.run_json, info)
