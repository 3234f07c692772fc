"""Shared fixtures: tiny deterministic images and data folders, and the real data (if present)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run when CUDA is present and are skipped with the reason otherwise."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here (torch.cuda.is_available() is False): GPU test skipped")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def real_data_dir() -> Path | None:
    value = os.environ.get("CXRLENS_DATA")
    if not value:
        return None
    path = Path(value)
    return path if (path / "metadata.csv").is_file() else None


@pytest.fixture
def realdata() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real data not available: set CXRLENS_DATA to the folder holding metadata.csv")
    return path


def xray_like(height: int = 96, width: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth grey image with structure (uint8), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(xx / (5 + seed % 7)) * np.cos(yy / 9)
    return np.clip(base + rng.normal(0, 10, (height, width)), 0, 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FINDINGS = ["No Finding", "Pneumonia/Viral/COVID-19", "Pneumonia/Bacterial", "Pneumonia/Viral"]


def make_dataset(root: Path, n: int = 24, patients: int | None = None) -> Path:
    """A cxrlens-CSV data folder with ``n`` small PNGs over four findings."""
    patients = patients or n
    rows = []
    for i in range(n):
        name = f"images/img{i:03d}.png"
        save_png(root / name, xray_like(96 + (i % 3) * 8, 80, seed=i))
        rows.append([name, f"p{i % patients}", FINDINGS[i % len(FINDINGS)], "PA", "synthetic"])
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "view", "source"], rows)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def real_run_config(realdata: Path, tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    """A quick study on the real data: the tiny model, 64 px, fold 0 of a 5-fold split."""
    from cxrlens.config import load_run_config

    overrides = {
        "data.sources": [str(realdata)],
        "data.preprocess.size": 64,
        "data.cache_dir": str(tmp_path / "cache"),
        "models.names": ["tiny"],
        "train.epochs": 2,
        "train.batch_size": 32,
        "train.patience": 0,
        "cv.split.folds": 5,
        "cv.folds": [0],
        **extra,
    }
    return load_run_config(None, overrides)
