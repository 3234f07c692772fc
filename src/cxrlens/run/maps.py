"""How attribution maps are written and read back (the paths are :class:`~cxrlens.run.layout.MapFiles`).

A map is stored as ``.npz`` (float16 scaled by its largest magnitude, so small attributions keep three
significant digits; ``scale`` restores it) with a ``.json`` sidecar saying what it is: image, model, fold,
checkpoint hash, method, parameters, label, probability, threshold, runtime, convergence delta. ``index.json``
lists every map and is rebuilt from the sidecars, so an interrupted run loses nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.errors import DamagedFileError, RunError
from cxrlens.fileio import atomic_write_bytes, read_json, write_json
from cxrlens.run.layout import MapFiles


@dataclass(frozen=True)
class MapStore(MapFiles):
    """Write, find and list the maps of one folder."""

    def has(self, image: str, model: str, method: str, label: str, params_hash: str) -> bool:
        """True when the map exists with a sidecar made with ``params_hash`` (a damaged sidecar: False)."""
        path = self.map_path(image, model, method, label)
        sidecar = path.with_suffix(".json")
        if not (path.is_file() and sidecar.is_file()):
            return False
        try:
            meta = read_json(sidecar)
        except DamagedFileError:
            return False  # the map is recomputed and both files are rewritten
        return isinstance(meta, dict) and meta.get("params_hash") == params_hash

    def write(self, image: str, model: str, method: str, label: str, values: np.ndarray, meta: dict[str, Any]) -> Path:
        path = self.map_path(image, model, method, label)
        values = np.asarray(values, dtype=np.float32)
        if not np.isfinite(values).all():
            raise RunError(f"{method} produced non-finite values for {image} / {label} ({model})")
        scale = float(np.abs(values).max()) if values.size else 0.0
        stored = (values / scale if scale > 0 else values).astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, map=stored, scale=np.float32(scale))
        atomic_write_bytes(path, buffer.getvalue())
        write_json(path.with_suffix(".json"), {**meta, "map_file": path.name, "scale": scale})
        return path

    def sidecars(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        if not self.maps_dir.is_dir():
            return
        for sidecar in sorted(self.maps_dir.rglob("*.json")):
            meta = read_json(sidecar)
            if isinstance(meta, dict):
                yield sidecar, meta

    def write_index(self) -> list[dict[str, Any]]:
        entries = [self._entry(sidecar, meta) for sidecar, meta in self.sidecars()]
        write_json(self.index_path, {"maps": entries})
        return entries

    def _entry(self, sidecar: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return {**meta, "map": sidecar.with_suffix(".npz").relative_to(self.root).as_posix()}

    def read_index(self) -> list[dict[str, Any]]:
        """The map records of ``index.json``; raises :class:`RunError` when there is none."""
        if not self.index_path.is_file():
            raise RunError(f"{self.root}: no explanations yet; run `cxrlens explain` first")
        data = read_json(self.index_path)
        maps = data.get("maps") if isinstance(data, dict) else None
        if not isinstance(maps, list):
            raise DamagedFileError(f"{self.index_path}: has no list of maps; rerun `cxrlens explain`")
        return [m for m in maps if isinstance(m, dict)]

    def entries(self) -> tuple[list[dict[str, Any]], bool]:
        """(map records, whether they come from ``index.json``): the sidecars when an interrupted run left no
        index. Nothing is written."""
        if self.index_path.is_file():
            return self.read_index(), True
        return [self._entry(sidecar, meta) for sidecar, meta in self.sidecars()], False

    def load(self, entry: dict[str, Any]) -> np.ndarray:
        """The map of an index record."""
        return load_map(self.root / str(entry["map"]))


def load_map(path: str | Path) -> np.ndarray:
    with np.load(path) as data:
        return data["map"].astype(np.float32) * float(data["scale"])
