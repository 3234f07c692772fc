"""The report's image files under ``report/assets/``: copied figures, grey X-rays and transparent heatmaps.

Every asset name is made by the report (slugs and short hashes), never taken verbatim from a data file, so
links in the page are plain relative paths. The pixels are drawn by :mod:`cxrlens.figures`.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cxrlens.fileio import atomic_write_bytes

ASSETS = "assets"
ASSET_FOLDERS = ("trust", "evaluation", "explanations", "gallery", "xai", "nap")  # what ``prune`` may clean


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class AssetWriter:
    """Writes files under ``<report>/assets`` (atomically, skipping identical content) and returns their links."""

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir
        self.root = report_dir / ASSETS
        self.written: dict[str, int] = {}  # relative link -> size in bytes

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` to ``assets/<relative>``; returns the link relative to the report folder."""
        target = self.root / relative
        link = f"{ASSETS}/{relative}"
        if not (target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data):
            atomic_write_bytes(target, data)
        self.written[link] = len(data)
        return link

    def copy(self, source: Path, relative: str) -> str:
        return self.write(relative, source.read_bytes())

    def prune(self) -> list[Path]:
        """Delete PNGs in the report's asset folders that this build did not write (left from an earlier report)."""
        removed: list[Path] = []
        keep = {self.report_dir / link for link in self.written}
        for part in ASSET_FOLDERS:
            folder = self.root / part
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*.png")):
                if path not in keep:
                    path.unlink()
                    removed.append(path)
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                if not any(sub.iterdir()):
                    sub.rmdir()
        return removed

    @property
    def total_bytes(self) -> int:
        return sum(self.written.values())
