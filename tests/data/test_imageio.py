"""Every kind of image file a user may bring: valid ones decode right, bad ones fail clearly."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlens.data.imageio import read_image, read_info
from cxrlens.errors import ImageReadError
from tests.conftest import save_png, xray_like


def test_grey_png_round_trips(tmp_path):
    array = xray_like(64, 48)
    out = read_image(save_png(tmp_path / "a.png", array))
    assert out.dtype == np.float32 and out.shape == (64, 48)
    np.testing.assert_array_equal(out, array.astype(np.float32))


def test_16bit_png_keeps_full_precision(tmp_path):
    array = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    np.testing.assert_array_equal(out, array.astype(np.float32))
    assert out.max() > 255


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA", "1"])
def test_colour_modes_become_one_grey_channel(tmp_path, mode):
    grey = xray_like(64, 64)
    img = Image.fromarray(grey).convert(mode)
    path = tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    out = read_image(path)
    assert out.shape == (64, 64)
    if mode in {"RGB", "RGBA", "P", "LA"}:
        np.testing.assert_allclose(out, grey, atol=1.0)
    elif mode == "CMYK":
        assert np.corrcoef(out.ravel(), grey.ravel())[0, 1] > 0.9
    else:  # bilevel: dithered black and white
        assert set(np.unique(out)) <= {0.0, 255.0}


def test_rgba_transparency_composites_over_black(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:20, :, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path)
    assert out[:20].min() == pytest.approx(200, abs=1) and out[20:].max() == 0


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str, slope: float = 1.0, intercept: float = 0.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome2_with_rescale(tmp_path):
    pixels = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    out = read_image(_write_dicom(tmp_path / "a.dcm", pixels, "MONOCHROME2", slope=2.0, intercept=-10))
    np.testing.assert_allclose(out, pixels * 2.0 - 10)


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    out = read_image(_write_dicom(tmp_path / "mono1.dcm", pixels, "MONOCHROME1"))
    expected = pixels.max() + pixels.min() - pixels.astype(np.float32)
    np.testing.assert_allclose(out, expected)
    # found by content even without the .dcm suffix
    renamed = tmp_path / "no_suffix"
    (tmp_path / "mono1.dcm").rename(renamed)
    np.testing.assert_allclose(read_image(renamed), expected)


def _truncated(tmp_path: Path) -> Path:
    full = save_png(tmp_path / "full.png", xray_like(128, 128))
    data = full.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_jpeg(tmp_path: Path) -> Path:
    full = tmp_path / "full.jpg"
    Image.fromarray(xray_like(128, 128)).save(full, quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[:600])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_CASES = {
    "missing": (lambda p: p / "nope.png", "file not found"),
    "zero-byte": (lambda p: _write(p / "empty.png", b""), "empty file"),
    "not-an-image": (lambda p: _write(p / "text.jpg", b"hello, I am a text file"), "not an image"),
    "truncated-png": (_truncated, "truncated or corrupt"),
    "truncated-jpeg": (_truncated_jpeg, "truncated or corrupt"),
    "one-pixel": (lambda p: save_png(p / "dot.png", np.zeros((1, 1), np.uint8)), "too small"),
    "bad-dicom": (lambda p: _write(p / "bad.dcm", b"\0" * 128 + b"DICM" + b"\x01" * 20), "DICOM"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_raise_clear_errors_naming_the_file(tmp_path, case):
    make, reason = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (6000, 6000)).save(path)  # 36 M pixels: a small file that decodes huge
    with pytest.raises(ImageReadError, match="too large to decode safely"):
        read_image(path, max_pixels=10_000_000)
    with pytest.raises(ImageReadError, match="too large"):
        read_info(path, max_pixels=10_000_000)
    assert read_info(path).width == 6000  # under the default limit: fine


def test_header_only_info(tmp_path):
    info = read_info(save_png(tmp_path / "a.png", xray_like(70, 50)))
    assert (info.width, info.height, info.mode) == (50, 70, "L")
