"""End to end: a second source never annotates ARDS. Its images are unknown (not negative) for ARDS in the run's
labels.csv, in the training targets, and in every number of evaluate, the audit and external validation: ARDS
is measured on the images that annotate it only, the other labels on every image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrlens.config import AuditConfig, EvaluateConfig, ExternalConfig
from cxrlens.data.splits import fold_files
from cxrlens.evaluate import evaluate_run
from cxrlens.evaluate.audit.runner import run_audit
from cxrlens.evaluate.external.runner import evaluate_external
from cxrlens.evaluate.metrics import fold_metrics
from cxrlens.run import create_run, open_run
from cxrlens.run.images import LabelledImages
from cxrlens.run.predictions import read_truth
from cxrlens.train.runner import run_cv
from tests.conftest import save_png, write_csv, xray_like
from tests.train.test_runner import tiny_config

LABELS = ["ARDS", "No Finding", "Pneumonia", "Viral Pneumonia", "Bacterial Pneumonia"]
FINDINGS_A = ["ARDS", "No Finding", "Pneumonia/Bacterial", "Pneumonia/Viral", "Pneumonia/Viral;ARDS", "No Finding"]
FINDINGS_B = ["No Finding", "Pneumonia/Bacterial", "Pneumonia/Viral"]


def two_sources(root: Path, n: int, names: tuple[str, str] = ("site-a", "site-b"), seed: int = 0) -> Path:
    """``n`` images: even ones from ``names[0]`` (annotates every label), odd ones from ``names[1]`` (its
    ``unknown`` column says it never annotates ARDS)."""
    rows = []
    for i in range(n):
        first = i % 2 == 0
        finding = FINDINGS_A[(i // 2) % len(FINDINGS_A)] if first else FINDINGS_B[(i // 2) % len(FINDINGS_B)]
        name = f"images/{'a' if first else 'b'}{i:03d}.png"
        save_png(root / name, xray_like(64, 64, seed=seed + i))
        rows.append([name, f"p{seed + i}", finding, "PA", names[0] if first else names[1], "" if first else "ARDS"])
    return write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "view", "source", "unknown"], rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("unknown")
    data = two_sources(tmp / "data", 48).parent
    cfg = tiny_config(tmp, **{"data.sources": [str(data)], "data.labels.names": LABELS, "train.epochs": 2})
    study = create_run(cfg, tmp / "run")
    train = fold_files(study.splits, 0)["train"]
    images = LabelledImages([study.dataset.by_filename()[f] for f in train], study.space, study.cache)
    for k, record in enumerate(images.records):  # the training targets: NaN (unknown) exactly at site-b's ARDS
        assert bool(torch.isnan(images[k][1][0])) == (record.source == "site-b")
    results = run_cv(study, enable_progress_bar=False)
    assert results[0].val_loss is not None and np.isfinite(results[0].val_loss)  # no NaN from the unknown targets
    return tmp / "run"


def _site_b(names) -> np.ndarray:
    return np.array([Path(n).name.startswith("b") for n in names])


def test_labels_csv_leaves_site_b_ards_empty(trained):
    truth = read_truth(trained / "labels.csv", LABELS)
    for name, (_, _, known) in truth.items():
        assert known[0] == (not Path(name).name.startswith("b")) and known[1:].all()


def test_evaluate_measures_ards_on_the_images_that_annotate_it(trained):
    run = open_run(trained)
    result = evaluate_run(run, EvaluateConfig(threshold=0.5, min_support=1, ensembles=False))
    fold = result.entries["tiny"].folds[0]
    test = run.predictions().get("tiny", 0, "test")
    assert test is not None
    b = _site_b(test.filenames)
    assert b.any() and (~b).any()
    ards = fold.per_label["ARDS"]
    assert ards["unknown"] == int(b.sum())
    assert ards["support"] == int(test.truth[~b, 0].sum()) and ards["negatives"] == int((test.truth[~b, 0] == 0).sum())
    annotated = fold_metrics(test.truth[~b], test.probs[~b], LABELS, 0.5, min_support=1)
    for key in ("tp", "fp", "fn", "tn", "f1", "roc_auc"):
        expected = annotated.per_label["ARDS"][key]
        assert ards[key] == pytest.approx(expected, nan_ok=True), key
    if 0 < ards["support"] < int((~b).sum()):
        assert ards["roc_auc"] == pytest.approx(roc_auc_score(test.truth[~b, 0], test.probs[~b, 0]))
    assert fold.per_label["Pneumonia"]["support"] + fold.per_label["Pneumonia"]["negatives"] == len(test)


def test_audit_checks_ards_on_site_a_only(trained):
    run = open_run(trained)
    result = run_audit(run, AuditConfig(by=["source"], tcav=False, probe_folds=2))
    ards = result.metrics["columns"]["source"]["labels"]["ARDS"]
    images = len(read_truth(trained / "labels.csv", LABELS))
    assert ards["counts"]["site-b"] == 0 and ards["prevalence"]["site-b"] is None
    assert ards["unknown"] == images // 2
    assert not ards["confounded"]  # unknown-as-negative would make site-b "the ARDS-free source"
    assert ards["scored_images"] <= images // 2


def test_external_validation_leaves_unknown_values_out(trained, tmp_path):
    data = two_sources(tmp_path / "ext", 12, names=("site-c", "site-d"), seed=500).parent
    result = evaluate_external(open_run(trained), [str(data)], ExternalConfig(name="ext", bootstrap=5, errors=0))
    ards = result.metrics["models"]["tiny"]["labels"]["ARDS"]
    assert ards["unknown"] == 6 and ards["support"] + ards["negatives"] == 6
    assert ards["support"] == sum(1 for i in range(0, 12, 2) if "ARDS" in FINDINGS_A[(i // 2) % len(FINDINGS_A)])
