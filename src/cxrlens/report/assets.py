"""The report's image files: copied figures, grey X-rays and transparent heatmaps under ``report/assets/``.

Every asset name is made by cxrlens (slugs and short hashes), never taken verbatim from a data file, so
links in the page are plain relative paths. Heatmaps are RGBA PNGs whose alpha follows the map's magnitude
(as in :func:`cxrlens.explain.render.overlay`), so they can be stacked over the grey image with a
user-chosen opacity.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path

import numpy as np

from cxrlens.fileio import atomic_write_bytes

ASSETS = "assets"
ASSET_FOLDERS = ("evaluation", "explanations", "gallery", "xai", "nap")  # what ``prune`` may clean
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text``; a short hash is added when characters were replaced or cut."""
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "x"
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    return f"{cleaned[:limit]}-{digest}"


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 array (H x W grey, H x W x 3 RGB or H x W x 4 RGBA)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fit(values: np.ndarray, max_side: int) -> np.ndarray:
    """Float image shrunk (bilinear, aspect kept) so that its longer side is at most ``max_side``."""
    values = np.asarray(values, dtype=np.float32)
    height, width = values.shape
    longest = max(height, width)
    if longest <= max_side:
        return values
    from PIL import Image

    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(values, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def grey_png(image: np.ndarray, max_side: int) -> bytes:
    """The preprocessed X-ray (floats in [0, 1]) as an 8-bit grey PNG."""
    scaled = fit(image, max_side)
    return png_bytes((np.clip(scaled, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


def heat_rgba(values: np.ndarray, max_side: int, signed: bool | None = None) -> tuple[np.ndarray, bool]:
    """Colour heatmap with transparency (RGBA uint8) and whether the signed colour scale was used.

    Signed maps use the diverging colormap (blue negative, red positive), others the sequential one; the alpha
    channel is the square root of the normalised magnitude, as in the overlays of ``cxrlens explain``.
    """
    from matplotlib import colormaps

    from cxrlens.explain.render import POSITIVE_CMAP, SIGNED_CMAP, is_signed, normalise

    values = np.asarray(values, dtype=np.float32)
    signed = is_signed(values) if signed is None else signed
    norm = fit(normalise(values, signed), max_side)
    if signed:
        colours = colormaps[SIGNED_CMAP]((norm + 1.0) / 2.0)
        weight = np.abs(norm)
    else:
        colours = colormaps[POSITIVE_CMAP](norm)
        weight = np.clip(norm, 0.0, 1.0)
    colours[..., 3] = np.sqrt(np.clip(weight, 0.0, 1.0))
    return (np.clip(colours, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), signed


def legend_png(signed: bool, width: int = 200, height: int = 10) -> bytes:
    """A small colour bar of the heatmap scale (left: negative or zero, right: largest positive)."""
    from matplotlib import colormaps

    from cxrlens.explain.render import POSITIVE_CMAP, SIGNED_CMAP

    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)
    colours = colormaps[SIGNED_CMAP if signed else POSITIVE_CMAP](ramp)[:, :3]
    row = (colours * 255 + 0.5).astype(np.uint8)
    return png_bytes(np.repeat(row[None], height, axis=0))


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
