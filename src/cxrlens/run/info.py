"""``run.json``: what a run is (labels, preprocessing, data, splits hash) and how it was made (versions, commands).

The run's preprocessing and label names are read from here only: checkpoints, the image source and every stage
compare against these.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from cxrlens.config import PreprocessConfig, validate
from cxrlens.errors import DamagedFileError, RunError
from cxrlens.fileio import read_json, write_json
from cxrlens.version import __version__

FORMAT = "cxrlens-run/1"
_PACKAGES = ("torch", "torchvision", "timm", "captum", "lightning", "numpy", "scikit-learn", "pillow")


@dataclass(frozen=True)
class RunInfo:
    """The content of ``run.json``."""

    name: str
    label_names: tuple[str, ...]
    preprocess: PreprocessConfig
    splits_sha256: str
    rare_labels: Mapping[str, int] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    data_root: str = ""
    images: int = 0
    config_hash: str = ""
    seed: int = 0
    created: str = ""
    commands: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "label_names": list(self.label_names),
            "rare_labels": dict(self.rare_labels),
            "preprocess": self.preprocess.model_dump(),
            "sources": list(self.sources),
            "data_root": self.data_root,
            "images": self.images,
            "splits_sha256": self.splits_sha256,
            "config_hash": self.config_hash,
            "seed": self.seed,
            "created": self.created,
            "commands": list(self.commands),
            "environment": dict(self.environment),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunInfo:
        if not isinstance(data, dict):
            raise DamagedFileError(f"{where}: expected a JSON object")
        names = data.get("label_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise DamagedFileError(f"{where}: 'label_names' must be a non-empty list of label names")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DamagedFileError(f"{where}: duplicate label names {duplicates}")
        preprocess = validate(PreprocessConfig, dict(data.get("preprocess") or {}), f"{where}: preprocess")
        return cls(
            name=str(data.get("name") or ""),
            label_names=tuple(names),
            preprocess=preprocess,
            splits_sha256=str(data.get("splits_sha256") or ""),
            rare_labels={str(k): int(v) for k, v in (data.get("rare_labels") or {}).items()},
            sources=tuple(str(s) for s in data.get("sources") or ()),
            data_root=str(data.get("data_root") or ""),
            images=int(data.get("images") or 0),
            config_hash=str(data.get("config_hash") or ""),
            seed=int(data.get("seed") or 0),
            created=str(data.get("created") or ""),
            commands=tuple(str(c) for c in data.get("commands") or ()),
            environment={str(k): str(v) for k, v in (data.get("environment") or {}).items()},
        )


def read_info(path: Path) -> RunInfo:
    if not path.is_file():
        raise RunError(f"{path.parent}: not a cxrlens run folder (no {path.name}); create one with `cxrlens cv`")
    return RunInfo.from_dict(read_json(path), str(path))


def write_info(path: Path, info: RunInfo) -> None:
    """Write ``run.json``; an existing one must have the same labels and splits (its history is kept)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if path.is_file():
        old = read_info(path)
        for key in ("label_names", "splits_sha256"):
            if getattr(old, key) != getattr(info, key):
                raise RunError(
                    f"{path.parent}: this run folder was made with other {key.replace('_', ' ')} "
                    f"({getattr(old, key)} vs {getattr(info, key)}); use a new --run folder"
                )
        info = replace(info, created=old.created or now, commands=(*old.commands, command_line()))
    else:
        info = replace(info, created=now, commands=(command_line(),))
    write_json(path, replace(info, environment=environment()).to_dict())


def append_command(path: Path) -> None:
    """Record a later command (evaluate, explain, report, ...) in ``run.json`` for provenance."""
    info = read_info(path)
    write_json(path, replace(info, commands=(*info.commands, command_line())).to_dict())


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv if argv is None else argv)
    return " ".join([Path(args[0]).name, *args[1:]]) if args else ""


def environment() -> dict[str, str]:
    """Versions of what the results depend on (from package metadata: no slow imports)."""
    out = {"cxrlens": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
