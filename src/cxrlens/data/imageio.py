"""Read any chest X-ray file into one grey float32 array at full precision.

Pillow for PNG/JPEG/TIFF/BMP (16-bit kept, colour/RGBA/palette/CMYK converted), pydicom for DICOM
(modality LUT applied, MONOCHROME1 inverted). Every failure is an :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from cxrlens.errors import ImageReadError

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MIN_SIDE = 32


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _check_size(path: Path, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"image too large to decode safely ({width}x{height} = {width * height:,} pixels; "
            f"limit {max_pixels:,}, raise preprocess.max_pixels if you trust the file)",
        )
    if min(width, height) < min_side:
        raise ImageReadError(path, f"image too small ({width}x{height}; need at least {min_side} px a side)")


def read_info(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> ImageInfo:
    """Size and mode from the header only (fast); checks the same limits as :func:`read_image`."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        ds = _read_dicom_dataset(path, pixels=False)
        width, height = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
        _check_size(path, width, height, max_pixels, min_side)
        return ImageInfo(width, height, str(ds.get("PhotometricInterpretation", "")), "DICOM")
    with _open_pil(path) as img:
        width, height = img.size
        _check_size(path, width, height, max_pixels, min_side)
        return ImageInfo(width, height, img.mode, img.format or "")


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in the file's own intensity scale (e.g. 0-255, 0-65535)."""
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        return _read_dicom(path, max_pixels, min_side)
    with _open_pil(path) as img:
        _check_size(path, img.size[0], img.size[1], max_pixels, min_side)
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_grey(img)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageReadError(path, f"truncated or corrupt image ({err})") from None


def _open_pil(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # our own size check (above) decides; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, f"not an image file (or a format Pillow cannot read: {path.suffix})") from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"image too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"cannot open image ({err})") from None


def _to_grey(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        return np.asarray(img).astype(np.float32)
    if mode in {"L", "1"}:
        return np.asarray(img.convert("L"), dtype=np.float32)
    if mode == "LA":
        grey, alpha = (np.asarray(band, dtype=np.float32) for band in img.split())
        return grey * (alpha / 255.0)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in {"RGBA", "RGBa"}:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        grey = np.asarray(img.convert("RGB").convert("L"), dtype=np.float32)
        return grey * (rgba[..., 3] / 255.0)  # composite over black: transparent = no signal
    # RGB, CMYK, YCbCr, LAB, HSV, ...: ITU-R 601 luminance through RGB
    return np.asarray(img.convert("RGB").convert("L"), dtype=np.float32)


def _read_dicom_dataset(path: Path, pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=path.suffix.lower() in DICOM_SUFFIXES)
    except InvalidDicomError as err:
        raise ImageReadError(path, f"not a valid DICOM file ({err})") from None
    except (OSError, ValueError, EOFError, AttributeError) as err:
        raise ImageReadError(path, f"truncated or corrupt DICOM file ({err})") from None


def _read_dicom(path: Path, max_pixels: int, min_side: int) -> np.ndarray:
    ds = _read_dicom_dataset(path, pixels=True)
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    _check_size(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), max_pixels, min_side)
    try:
        pixels = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageReadError(path, f"cannot decode DICOM pixel data (transfer syntax {syntax}): {err}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError(path, f"multi-frame DICOM ({ds.NumberOfFrames} frames); expected one radiograph")
    if photometric in {"RGB", "YBR_FULL", "YBR_FULL_422"} or pixels.ndim == 3:
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ImageReadError(path, f"unexpected DICOM pixel shape {pixels.shape}")
        rgb = pixels.astype(np.float32)
        return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is bright, as in MONOCHROME2
        values = values.max() + values.min() - values
    return values
