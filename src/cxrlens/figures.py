"""Drawing helpers every stage shares: figures (matplotlib's object API, no pyplot), PNG writing, heatmap colours.

Heatmaps: a *signed* map (a real negative part) uses a diverging colour scale centred on zero, any other map a
sequential one; both are scaled by a robust maximum (the 99.5th percentile of the magnitude) and drawn with an
opacity that follows the square root of the normalised magnitude, so weak attribution stays transparent.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from cxrlens.fileio import atomic_write_bytes

DPI = 120
SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "inferno"


def new_figure(width: float, height: float, constrained: bool = False) -> Figure:
    """A figure of ``width`` x ``height`` inches (no global state: safe in threads and worker processes)."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)


def save_figure(fig: Figure, path: Path, dpi: int = DPI, tight: bool = False) -> Path:
    """Render to PNG in memory, then write atomically; returns ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def png_bytes(array: np.ndarray, optimize: bool = True) -> bytes:
    """PNG of a uint8 array (H x W grey, H x W x 3 RGB or H x W x 4 RGBA)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write a uint8 image array as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(array, optimize=False))
    return path


def normalise(values: np.ndarray, signed: bool, percentile: float = 99.5) -> np.ndarray:
    """Map to [-1, 1] (signed) or [0, 1] by a robust maximum; an all-zero map stays zero."""
    values = np.asarray(values, dtype=np.float32)
    magnitude = np.abs(values) if signed else np.clip(values, 0, None)
    top = float(np.percentile(magnitude, percentile)) if magnitude.size else 0.0
    if top <= 0:
        top = float(magnitude.max()) if magnitude.size else 0.0
    if top <= 0:
        return np.zeros_like(values)
    scaled = values / top
    return np.clip(scaled, -1.0, 1.0) if signed else np.clip(scaled, 0.0, 1.0)


def is_signed(values: np.ndarray) -> bool:
    """True when the map has a real negative part (more than 1% of its mass)."""
    negative = float(np.clip(-values, 0, None).sum())
    return negative > 0.01 * float(np.abs(values).sum())


def _colours(norm: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """RGBA colours and the magnitude in [0, 1] of a normalised map."""
    if signed:
        return colormaps[SIGNED_CMAP]((norm + 1.0) / 2.0), np.abs(norm)
    return colormaps[POSITIVE_CMAP](norm), np.clip(norm, 0.0, 1.0)


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.55, signed: bool | None = None) -> np.ndarray:
    """RGB uint8: the grey X-ray with the map in colour on top; opacity follows the map's magnitude."""
    signed = is_signed(values) if signed is None else signed
    colours, weight = _colours(normalise(values, signed), signed)
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    mix = alpha * np.sqrt(weight)[..., None]
    return (np.clip(grey * (1 - mix) + colours[..., :3] * mix, 0, 1) * 255).astype(np.uint8)


def fit(values: np.ndarray, max_side: int) -> np.ndarray:
    """Float image shrunk (bilinear, aspect kept) so that its longer side is at most ``max_side``."""
    values = np.asarray(values, dtype=np.float32)
    height, width = values.shape
    longest = max(height, width)
    if longest <= max_side:
        return values
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(values, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def heat_rgba(values: np.ndarray, max_side: int, signed: bool | None = None) -> tuple[np.ndarray, bool]:
    """Colour heatmap with transparency (RGBA uint8, at most ``max_side`` px) and whether it is signed."""
    values = np.asarray(values, dtype=np.float32)
    signed = is_signed(values) if signed is None else signed
    colours, weight = _colours(fit(normalise(values, signed), max_side), signed)
    colours[..., 3] = np.sqrt(np.clip(weight, 0.0, 1.0))
    return (np.clip(colours, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), signed


def grey_png(image: np.ndarray, max_side: int) -> bytes:
    """A preprocessed X-ray (floats in [0, 1]) as an 8-bit grey PNG of at most ``max_side`` px."""
    scaled = fit(image, max_side)
    return png_bytes((np.clip(scaled, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


def legend_png(signed: bool, width: int = 200, height: int = 10) -> bytes:
    """A small colour bar of the heatmap scale (left: negative or zero, right: largest positive)."""
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)
    colours = colormaps[SIGNED_CMAP if signed else POSITIVE_CMAP](ramp)[:, :3]
    row = (colours * 255 + 0.5).astype(np.uint8)
    return png_bytes(np.repeat(row[None], height, axis=0))
