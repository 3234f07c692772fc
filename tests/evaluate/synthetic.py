"""Tiny synthetic run folders (run.json, config.yaml, labels.csv, predictions.csv) for the evaluation tests."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.config import EvaluateConfig, PreprocessConfig, validate
from cxrlens.evaluate import EvaluationResult, evaluate_run
from cxrlens.run import open_run
from cxrlens.run.info import RunInfo, write_info
from cxrlens.run.layout import RunLayout

LABELS = ["COVID-19", "No Finding", "Pneumonia", "Viral Pneumonia", "Bacterial Pneumonia", "MERS"]

#: finding -> labels (every ancestor set), for hierarchy-consistent ground truth
FINDINGS = {
    "covid": ["COVID-19", "Viral Pneumonia", "Pneumonia"],
    "viral": ["Viral Pneumonia", "Pneumonia"],
    "bacterial": ["Bacterial Pneumonia", "Pneumonia"],
    "healthy": ["No Finding"],
    "mers": ["MERS", "Viral Pneumonia", "Pneumonia"],
}

PredictionRow = tuple[str, int, str, str, Sequence[float]]  # filename, fold, model, subset, probabilities


def write_run(
    run_dir: Path,
    label_names: Sequence[str],
    labels: Mapping[str, Sequence[int]],
    predictions: Sequence[PredictionRow],
) -> Path:
    """Write a run directory; patient ids are ``p-<filename>``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(run_dir)
    write_info(layout.run_json, RunInfo("synthetic", tuple(label_names), PreprocessConfig(), "0" * 16))
    layout.config_yaml.write_text("name: synthetic\n", encoding="utf-8")
    with (run_dir / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "patient_id", *label_names])
        for name, vector in labels.items():
            writer.writerow([name, f"p-{name}", *(int(v) for v in vector)])
    with (run_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "patient_id", "fold", "model", "subset", *label_names])
        for name, fold, model, subset, probs in predictions:
            writer.writerow([name, f"p-{name}", fold, model, subset, *(repr(float(p)) for p in probs)])
    return run_dir


def synthetic_truth(n_images: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Filenames and hierarchy-consistent labels (LABELS order); exactly one MERS image."""
    rng = np.random.default_rng(seed)
    kinds = list(rng.choice(["covid", "viral", "bacterial", "healthy"], size=n_images, p=[0.35, 0.15, 0.25, 0.25]))
    kinds[0] = "mers"
    names = [f"img{i:03d}.png" for i in range(n_images)]
    truth = np.zeros((n_images, len(LABELS)), dtype=int)
    for i, kind in enumerate(kinds):
        for label in FINDINGS[kind]:
            truth[i, LABELS.index(label)] = 1
    return names, truth


def synthetic_run(
    run_dir: Path,
    models: Sequence[str] = ("resnet18", "resnet34", "densenet161"),
    n_folds: int = 2,
    n_images: int = 60,
    seed: int = 0,
) -> Path:
    """Per fold 40% test / 20% val images (random, per fold); noisy but informative probabilities per model."""
    names, truth = synthetic_truth(n_images, seed)
    rng = np.random.default_rng(seed + 1)
    rows: list[PredictionRow] = []
    for fold in range(n_folds):
        order = rng.permutation(n_images)
        n_test, n_val = int(0.4 * n_images), int(0.2 * n_images)
        subsets = {"test": order[:n_test], "val": order[n_test : n_test + n_val]}
        for m, model in enumerate(models):
            noise = np.random.default_rng(seed * 100 + fold * 10 + m)
            for subset, idx in subsets.items():
                probs = np.clip(0.15 + 0.6 * truth[idx] + noise.normal(0, 0.18, (len(idx), len(LABELS))), 0, 1)
                rows.extend((names[i], fold, model, subset, probs[k]) for k, i in enumerate(idx))
    return write_run(run_dir, LABELS, dict(zip(names, truth, strict=True)), rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def rewrite_predictions(run_dir: Path, change: Callable[[dict[str, str]], None]) -> None:
    """Apply ``change(row)`` (in place, a dict of strings) to every row of predictions.csv."""
    path = run_dir / "predictions.csv"
    rows = read_csv(path)
    header = list(rows[0])
    for row in rows:
        change(row)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def evaluate(run_dir: Path, models: Sequence[str] | None = None, **options: Any) -> EvaluationResult:
    """``evaluate_run`` of a run folder with an ``evaluate:`` section made of ``options``."""
    return evaluate_run(open_run(run_dir), validate(EvaluateConfig, options, "evaluate"), models=models)
