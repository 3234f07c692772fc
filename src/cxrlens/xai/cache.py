"""The per-map result cache of the explanation metrics (``RunLayout.xai_cache``).

Results (deletion / insertion curves, the random-order curves of an image and model, the randomisation
cascade of a map) are stored under a hash of everything they depend on: the map, its checkpoint, the
settings that change the numbers. A rerun, or a run with more images, only computes what is new. A damaged
cache costs recomputation only. The file is compact JSON (no indentation: it holds many curves); NaN is
stored as null.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlens.errors import DamagedFileError
from cxrlens.fileio import atomic_write_text, json_text, read_json

SECTIONS = ("faithfulness", "random", "sanity")
SAVE_EVERY = 200  # results put between two saves, so an interrupted run keeps most of its work


class ResultCache:
    """Per-map results in sections (``faithfulness``, ``random``, ``sanity``), keyed by a content hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        self._dirty = 0
        if not path.is_file():
            return
        try:
            loaded = read_json(path)
        except DamagedFileError:
            return  # a damaged cache only costs recomputation
        if isinstance(loaded, dict):
            for section in SECTIONS:
                if isinstance(loaded.get(section), dict):
                    self.data[section] = loaded[section]

    def get(self, section: str, key: str) -> Any:
        return self.data[section].get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        self.data[section][key] = value
        self._dirty += 1
        if self._dirty >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Write the cache if anything changed (atomic; NaN-safe)."""
        if self._dirty:
            atomic_write_text(self.path, json_text(self.data, indent=None))
            self._dirty = 0
