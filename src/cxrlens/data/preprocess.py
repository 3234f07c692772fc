"""The paper's preprocessing (§3.2), done per image and exactly.

1. resize (bicubic) so the longer side is ``size``, keeping the aspect ratio;
2. clip to the 1st and 95th percentile of the image content (computed before padding);
3. scale to [0, 1];
4. zero-pad the shorter side to ``size`` x ``size``.
A constant image becomes all zeros (no NaN). Masks follow the same geometry with nearest-neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlens.config import PreprocessConfig
from cxrlens.data.imageio import read_image

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Geometry:
    """Where the resized content sits inside the square output."""

    size: int
    content_height: int
    content_width: int
    top: int
    left: int

    @classmethod
    def for_shape(cls, height: int, width: int, size: int, pad: str = "center") -> Geometry:
        scale = size / max(height, width)
        new_h = max(1, min(size, round(height * scale)))
        new_w = max(1, min(size, round(width * scale)))
        if pad == "center":
            top, left = (size - new_h) // 2, (size - new_w) // 2
        else:
            top, left = 0, 0
        return cls(size, new_h, new_w, top, left)

    def place(self, content: np.ndarray) -> np.ndarray:
        out = np.zeros((self.size, self.size), dtype=content.dtype)
        out[self.top : self.top + self.content_height, self.left : self.left + self.content_width] = content
        return out

    def content_mask(self) -> np.ndarray:
        """True where the output holds image content, False on the padding."""
        return self.place(np.ones((self.content_height, self.content_width), dtype=bool))


def resize(array: np.ndarray, height: int, width: int, resample: str = "bicubic") -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), _RESAMPLE[resample]), dtype=np.float32)


def percentile_scale(content: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Clip to the given percentiles of ``content`` and scale to [0, 1]; constant input gives zeros."""
    lo, hi = np.percentile(content, [lower, upper])
    span = float(hi - lo)
    if not np.isfinite(span) or span <= 1e-12 * max(1.0, abs(float(hi))):
        return np.zeros_like(content, dtype=np.float32)
    return np.clip((content - lo) / span, 0.0, 1.0).astype(np.float32)


def preprocess_array(array: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """A grey image (any scale) -> float32 ``size`` x ``size`` in [0, 1]."""
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {array.shape}")
    height, width = array.shape
    geometry = Geometry.for_shape(height, width, cfg.size, cfg.pad)
    content = resize(array, geometry.content_height, geometry.content_width, cfg.resample)
    content = percentile_scale(content, cfg.lower_percentile, cfg.upper_percentile)
    return geometry.place(content)


def preprocess_file(path: str | Path, cfg: PreprocessConfig) -> np.ndarray:
    array = read_image(path, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    return preprocess_array(array, cfg)


def preprocess_mask(mask: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """A binary mask of the original image -> boolean ``size`` x ``size`` aligned with the image."""
    height, width = mask.shape
    geometry = Geometry.for_shape(height, width, cfg.size, cfg.pad)
    img = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, mode="L")
    resized = img.resize((geometry.content_width, geometry.content_height), Image.Resampling.NEAREST)
    return geometry.place(np.asarray(resized) > 127)


def load_mask(path: str | Path, cfg: PreprocessConfig) -> np.ndarray:
    return preprocess_mask(read_image(path, max_pixels=cfg.max_pixels, min_side=1), cfg)
