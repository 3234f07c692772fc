"""`cxrlens evaluate-external`: its numbers equal a hand computation from `cxrlens predict --json` on the same
images (models and both ensembles), labels without positives are not evaluable, predictions are reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrlens.config import ExternalConfig
from cxrlens.data.labels import LabelSpace
from cxrlens.evaluate.external.runner import evaluate_external, external_dataset
from cxrlens.run import create_run, open_run
from cxrlens.train.runner import run_cv
from tests.cli.test_cli_data import cxrlens
from tests.conftest import save_png, write_csv, xray_like
from tests.train.test_runner import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    cfg = tiny_config(
        root,
        **{
            "train.epochs": 1,
            "cv.folds": [0, 1],
            "models.names": ["tiny", "resnet18"],
            "explain.params": {"occlusion": {"window": 16, "stride": 16}},  # the errors' maps: quick
        },
    )
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    return root / "run"


def external_folder(root, findings, sources=("site-a", "site-b")):
    rows = []
    for i, finding in enumerate(findings):
        name = f"images/x{i:02d}.png"
        save_png(root / name, xray_like(70 + 3 * i, 64, seed=100 + i))
        rows.append([name, f"q{i // 2}", finding, "PA", sources[i % len(sources)]])
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "view", "source"], rows)
    return root


FINDINGS = ["No Finding", "Pneumonia/Viral/COVID-19", "Pneumonia/Bacterial", "Pneumonia/Viral", "No Finding",
            "Pneumonia/Viral/COVID-19", "No Finding", "Pneumonia/Bacterial", "Pneumonia/Viral/COVID-19",
            "No Finding", "Pneumonia/Viral", "Pneumonia/Bacterial"]  # fmt: skip


def predicted(run_dir, images, model):
    result = cxrlens("predict", *map(str, images), "--run", str(run_dir), "--model", model, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data


def test_numbers_equal_a_hand_computation_from_predict(run_dir, tmp_path):
    data = external_folder(tmp_path / "ext", FINDINGS)
    result = cxrlens("evaluate-external", "--run", str(run_dir), "--data", str(data), "--name", "site",
                     "--json", "--set", "external.bootstrap=20", "--set", "external.errors=0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "site" and report["images"] == len(FINDINGS) and report["patients"] == 6
    assert set(report["models"]) == {"resnet18", "tiny", "ensemble-mean", "ensemble-vote"}

    run = open_run(run_dir)
    dataset = external_dataset(run, [str(data)], skip_bad=False)
    images = [r.path for r in dataset.records]
    truth = LabelSpace(run.label_names).encode_many(r.labels for r in dataset.records).astype(bool)
    decisions = {}
    for model in ("tiny", "resnet18", "ensemble"):
        out = predicted(run_dir, images, model)
        probs = np.array([[item["probabilities"][n] for n in run.label_names] for item in out["images"]])
        decided = np.array([[n in item["positive"] for n in run.label_names] for item in out["images"]])
        name = "ensemble-mean" if model == "ensemble" else model
        decisions[name] = decided
        check(report["models"][name], truth, probs, decided, run.label_names)
    votes = decisions["tiny"].astype(int) + decisions["resnet18"].astype(int)
    check(report["models"]["ensemble-vote"], truth, votes / 2, votes * 2 > 2, run.label_names)


def check(entry, truth, scores, decided, label_names):
    evaluable = []
    for j, label in enumerate(label_names):
        row = entry["labels"][label]
        positives, negatives = int(truth[:, j].sum()), int((~truth[:, j]).sum())
        assert row["support"] == positives
        if positives == 0 or negatives == 0:
            assert row["evaluable"] is False and row["sensitivity"] is None and row["auroc"] is None
            assert label in entry["not_evaluable"]
            continue
        evaluable.append(j)
        tp = int((truth[:, j] & decided[:, j]).sum())
        tn = int((~truth[:, j] & ~decided[:, j]).sum())
        assert row["sensitivity"] == pytest.approx(tp / positives)
        assert row["specificity"] == pytest.approx(tn / negatives)
        assert row["auroc"] == pytest.approx(roc_auc_score(truth[:, j], scores[:, j]))
    t, d = truth[:, evaluable], decided[:, evaluable]
    tp, fp, fn = (t & d).sum(), (~t & d).sum(), (t & ~d).sum()
    assert entry["micro"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert entry["micro"]["specificity"] == pytest.approx((~t & ~d).sum() / (~t).sum())


def test_labels_without_positives_are_not_evaluable_and_predictions_are_reused(run_dir, tmp_path):
    data = external_folder(tmp_path / "normals", ["No Finding", "Pneumonia/Bacterial"] * 3, sources=("one",))
    run = open_run(run_dir)
    cfg = ExternalConfig(name="normals", bootstrap=10, errors=2)
    first = evaluate_external(run, [str(data)], cfg).to_dict()
    entry = first["models"]["ensemble-mean"]
    assert "COVID-19" in first["not_evaluable"] and entry["labels"]["COVID-19"]["evaluable"] is False
    assert entry["labels"]["No Finding"]["evaluable"] is True
    assert entry["in_domain"]["images"] > 0 and entry["change"]["micro_f1"] is not None
    assert entry["by_source"] == {}  # one source: no breakdown
    assert first["predictions_reused"] is False
    again = evaluate_external(run, [str(data)], cfg).to_dict()
    assert again["predictions_reused"] is True
    assert again["models"]["tiny"]["labels"] == first["models"]["tiny"]["labels"]
    files = run.layout.external("normals")
    assert files.metrics.is_file() and files.reliability_figure("tiny").is_file()
    errors = again["errors"]
    assert errors and all((files.root / e["overlay"]).is_file() for e in errors)
    assert all(e["kind"] in ("false positive", "false negative") for e in errors)


def test_sources_are_broken_down_and_shared_sources_are_said(run_dir, tmp_path):
    from cxrlens.data.sources import sample_root

    data = external_folder(tmp_path / "two", FINDINGS)
    result = evaluate_external(open_run(run_dir), [str(data)], ExternalConfig(bootstrap=0, errors=0)).to_dict()
    assert set(result["models"]["tiny"]["by_source"]) == {"site-a", "site-b"}
    assert not any("shares the source" in note for note in result["notes"])
    sample = evaluate_external(open_run(run_dir), [str(sample_root())], ExternalConfig(bootstrap=0, errors=0))
    assert any("shares the source(s) cohen, kermany" in n for n in sample.to_dict()["notes"])
