"""Where explanation maps live, and how they are written and read back.

``run/explanations/maps/<image id>/<model>/<method>/<label>.npz`` holds the raw map (float16 scaled
by its largest magnitude, so small attributions keep three significant digits; ``scale`` restores
it) and ``.json`` beside it says what it is: image, model, fold, checkpoint hash, method, parameters,
label, probability, runtime, convergence delta. ``index.json`` lists every map (rebuilt from the
sidecars, so an interrupted run loses nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.errors import RunError
from cxrlens.fileio import atomic_write_bytes, atomic_write_json

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, limit: int = 60) -> str:
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "x"
    return cleaned[:limit]


def image_id(filename: str) -> str:
    """A file-system-safe, unique id for an image: readable stem plus a short hash of the full name."""
    digest = hashlib.sha1(filename.encode("utf-8")).hexdigest()[:8]
    stem = Path(filename).stem
    return f"{slug(stem, 40)}-{digest}"


@dataclass(frozen=True)
class MapStore:
    root: Path  # run/explanations

    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def map_path(self, image: str, model: str, method: str, label: str) -> Path:
        return self.maps_dir / image_id(image) / slug(model) / slug(method) / f"{slug(label)}.npz"

    def overlay_path(self, image: str, model: str, method: str, label: str) -> Path:
        return self.root / "overlays" / image_id(image) / slug(model) / slug(method) / f"{slug(label)}.png"

    def figure_dir(self) -> Path:
        return self.root / "figures"

    def has(self, image: str, model: str, method: str, label: str, params_hash: str) -> bool:
        path = self.map_path(image, model, method, label)
        sidecar = path.with_suffix(".json")
        if not (path.is_file() and sidecar.is_file()):
            return False
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False  # damaged sidecar: the map is recomputed and both are rewritten
        return meta.get("params_hash") == params_hash

    def write(self, image: str, model: str, method: str, label: str, values: np.ndarray, meta: dict[str, Any]) -> Path:
        path = self.map_path(image, model, method, label)
        values = np.asarray(values, dtype=np.float32)
        scale = float(np.abs(values).max()) if values.size and np.isfinite(values).all() else 0.0
        if not np.isfinite(values).all():
            raise RunError(f"{method} produced non-finite values for {image} / {label} ({model})")
        stored = (values / scale if scale > 0 else values).astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, map=stored, scale=np.float32(scale))
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_json(path.with_suffix(".json"), {**meta, "map_file": path.name, "scale": scale})
        return path

    def sidecars(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        if not self.maps_dir.is_dir():
            return
        for sidecar in sorted(self.maps_dir.rglob("*.json")):
            try:
                yield sidecar, json.loads(sidecar.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise RunError(f"{sidecar}: damaged ({err.msg}); delete it to recompute that map") from None

    def write_index(self) -> list[dict[str, Any]]:
        entries = []
        for sidecar, meta in self.sidecars():
            entries.append({**meta, "map": sidecar.with_suffix(".npz").relative_to(self.root).as_posix()})
        atomic_write_json(self.index_path, {"maps": entries})
        return entries

    def read_index(self) -> list[dict[str, Any]]:
        if not self.index_path.is_file():
            raise RunError(f"{self.root}: no explanations yet; run `cxrlens explain` first")
        return list(json.loads(self.index_path.read_text(encoding="utf-8"))["maps"])


def load_map(path: str | Path) -> np.ndarray:
    with np.load(path) as data:
        return data["map"].astype(np.float32) * float(data["scale"])
