"""Synthetic data folders and trained runs for the audit tests: a label that equals the source, or not.

Every image is a smooth 64 x 64 grey pattern; a positive (COVID-19) image carries a bright square in its top-left
corner, which the tiny model learns in a few epochs. ``confounded``: source ``cohen`` holds every positive (and
adults), ``kermany`` every negative (and children). ``balanced``: each source holds as many positives as
negatives, the label independent of source, sex and age.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import save_png, write_csv, xray_like

LABELS = ["COVID-19", "No Finding"]
MARK = 16  # side of the corner mark (px of 64)


def image(seed: int, marked: bool) -> np.ndarray:
    pixels = xray_like(64, 64, seed=seed)
    if marked:
        pixels[:MARK, :MARK] = 255
    return pixels


def make_data(root: Path, design: str, n: int = 60) -> Path:
    """A cxrlens-CSV data folder of ``n`` images (``design``: ``confounded`` or ``balanced``)."""
    rows = []
    for i in range(n):
        source = "cohen" if i % 2 == 0 else "kermany"
        positive = source == "cohen" if design == "confounded" else (i // 2) % 2 == 0
        if design == "confounded":
            age = 40 + (i * 7) % 45 if source == "cohen" else 1 + i % 12
        else:
            age = [5, 30, 50, 70][(i // 4) % 4]
        name = f"images/{source}_{i:03d}.png"
        save_png(root / name, image(i, positive))
        finding = "COVID-19" if positive else "No Finding"
        sex = "F" if (i // 4) % 2 == 0 else "M"
        rows.append([name, f"{source}-{i // 4}", finding, "PA", source, sex, str(age)])
    header = ["filename", "patient_id", "finding", "view", "source", "sex", "age"]
    write_csv(root / "metadata.csv", header, rows)
    return root


def trained_run(tmp: Path, design: str, epochs: int = 6) -> Path:
    """A run of the tiny model on the synthetic data, trained on 3 folds; returns the run folder."""
    from cxrlens.config import load_run_config
    from cxrlens.run import create_run
    from cxrlens.train.runner import run_cv

    data = make_data(tmp / "data", design)
    cfg = load_run_config(
        None,
        {
            "data.sources": [str(data)],
            "data.preprocess.size": 48,
            "data.cache_dir": str(tmp / "cache"),
            "data.labels.names": LABELS,
            "models.names": ["tiny"],
            "train.epochs": epochs,
            "train.batch_size": 8,
            "train.lr": 0.01,
            "train.patience": 0,
            "cv.split.folds": 3,
        },
    )
    study = create_run(cfg, tmp / "run")
    run_cv(study, enable_progress_bar=False)
    return tmp / "run"
