"""`cxrlens predict` streams: folders, data sets and files in; CSV or JSON out as it goes; resumes; flat memory."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrlens.config import PredictConfig
from cxrlens.predict import InputImage, predict_images, predict_to_file
from cxrlens.run import create_run, open_run
from cxrlens.train.runner import run_cv
from tests.cli.test_cli_data import assert_clean_failure, cxrlens
from tests.conftest import save_png, write_csv, xray_like
from tests.train.test_runner import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    cfg = tiny_config(root, **{"train.epochs": 1, "cv.folds": [0, 1], "data.preprocess.size": 160})
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    return root / "run"


def image_folder(root: Path, count: int) -> Path:
    rows = []
    for i in range(count):
        name = f"images/{i // 100:02d}/x{i:05d}.png"
        save_png(root / name, xray_like(48, 40, seed=i % 50))
        rows.append([name, f"p{i}", "No Finding"])
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding"], rows)
    return root


def peak_rss_mib(*args: str) -> float:
    """Peak resident memory of one `cxrlens` process (measured by a parent that runs nothing else)."""
    code = (
        "import resource, subprocess, sys; "
        "done = subprocess.run([sys.executable, '-m', 'cxrlens', *sys.argv[1:]], capture_output=True, text=True); "
        "assert done.returncode == 0, done.stderr; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip())


@pytest.mark.slow
def test_peak_memory_is_flat_in_the_number_of_images(run_dir, tmp_path):
    """2,000 images at 160 px would hold 200 MB of pixels at once; streamed, memory does not grow."""
    small = peak_rss_mib("predict", "--data", str(image_folder(tmp_path / "small", 100)), "--run", str(run_dir),
                         "--out", str(tmp_path / "small.csv"))  # fmt: skip
    large = peak_rss_mib("predict", "--data", str(image_folder(tmp_path / "large", 2000)), "--run", str(run_dir),
                         "--out", str(tmp_path / "large.csv"))  # fmt: skip
    assert large <= 1.5 * small, (small, large)
    with (tmp_path / "large.csv").open() as handle:
        assert sum(1 for _ in csv.reader(handle)) == 2001


def test_file_and_memory_results_agree_and_an_interrupted_file_resumes(run_dir, tmp_path):
    run = open_run(run_dir)
    folder = image_folder(tmp_path / "data", 30)
    images = [InputImage(str(p), p) for p in sorted(folder.rglob("*.png"))]
    cfg = PredictConfig(workers=0)
    whole = predict_images(run, images, cfg)
    assert whole.folds == (0, 1) and len(whole.images) == 30
    out = tmp_path / "out.csv"
    first = predict_to_file(run, images, cfg, out)
    assert first.images == first.computed == 30
    reference = out.read_text(encoding="utf-8")
    rows = list(csv.reader(reference.splitlines()))
    for row, expected in zip(rows[1:], whole.images, strict=True):
        assert row[0] == expected.image
        assert [float(v) for v in row[3:]] == [expected.probabilities[n] for n in run.label_names]
    # an interruption after 12 rows, with a torn line: the partial file and its key are what a crash leaves
    partial = out.with_name(out.name + ".partial")
    partial.write_text("\n".join(reference.splitlines()[:13]) + "\nimages/00/x000", encoding="utf-8")
    out.with_name(out.name + ".partial.json").write_text(json.dumps({"key": _key(run, cfg)}), encoding="utf-8")
    out.unlink()
    resumed = predict_to_file(run, images, cfg, out)
    assert resumed.computed == 18 and resumed.images == 30
    assert out.read_text(encoding="utf-8") == reference
    assert not partial.exists()
    as_json = predict_to_file(run, images, cfg, tmp_path / "out.json")
    document = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert as_json.images == 30 and document["folds"] == [0, 1]
    assert document["images"][0]["probabilities"] == whole.images[0].probabilities


def _key(run, cfg):
    from cxrlens.predict import _Predictor

    return _Predictor(run, cfg).key


def test_folders_data_sets_and_bad_files_from_the_command_line(run_dir, tmp_path):
    folder = image_folder(tmp_path / "data", 5)
    (folder / "images" / "00" / "broken.png").write_bytes(b"not an image")
    result = cxrlens("predict", str(folder / "images"), "--run", str(run_dir), "--json")
    assert_clean_failure(result, "broken.png", "--skip-bad")
    result = cxrlens("predict", str(folder / "images"), "--run", str(run_dir), "--json", "--skip-bad")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["images"]) == 5 and len(data["skipped"]) == 1 and "broken.png" in data["skipped"][0]
    by_data = cxrlens("predict", "--data", str(folder), "--run", str(run_dir), "--json")
    assert by_data.returncode == 0, by_data.stderr
    named = {item["image"] for item in json.loads(by_data.stdout)["images"]}
    assert named == {f"images/00/x{i:05d}.png" for i in range(5)}  # names as in the data set
    probabilities = [item["probabilities"] for item in json.loads(by_data.stdout)["images"]]
    assert probabilities == [item["probabilities"] for item in data["images"]]
    assert_clean_failure(cxrlens("predict", "--run", str(run_dir)), "give image files or folders")
    assert np.isfinite([p for item in probabilities for p in item.values()]).all()
