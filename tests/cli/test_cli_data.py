"""The CLI as a user runs it: real processes, one-line errors, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import save_png, write_csv, xray_like


def cxrlens(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CXRLENS_DATA": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cxrlens", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_summary_json_on_sample():
    result = cxrlens("data", "summary", "--data", "@sample", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 51 and out["patients"] == 48 and out["labels"]["COVID-19"] == 14


def test_prepare_and_split_on_sample(tmp_path):
    result = cxrlens("data", "prepare", "--data", "@sample", "--size", "64", "--cache", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "51 written" in result.stdout
    out = tmp_path / "splits.csv"
    result = cxrlens("data", "split", "--data", "@sample", "--folds", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "filename,patient_id,fold,subset" and len(lines) == 1 + 3 * 51
    assert "images per fold as train/val/test" in result.stdout


def _bad_folder(tmp_path: Path, make_bad) -> tuple[Path, str]:
    root = tmp_path / "d"
    for i in range(4):
        save_png(root / "images" / f"ok{i}.png", xray_like(64, 64, seed=i))
    bad_name = make_bad(root / "images")
    rows = [[f"images/ok{i}.png", f"p{i}", "No Finding"] for i in range(4)]
    rows.append([f"images/{bad_name}", "p9", "Pneumonia/Viral"])
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding"], rows)
    return root, bad_name


def _file(name: str, data: bytes):
    def make(folder: Path) -> str:
        (folder / name).write_bytes(data)
        return name

    return make


def _truncated(folder: Path) -> str:
    png = save_png(folder / "whole.png", xray_like(128, 128)).read_bytes()
    (folder / "whole.png").unlink()
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    return "cut.png"


def _tiny(folder: Path) -> str:
    save_png(folder / "dot.png", np.zeros((1, 1), np.uint8))
    return "dot.png"


def _bomb(folder: Path) -> str:
    Image.new("L", (10_000, 10_000)).save(folder / "bomb.png")
    return "bomb.png"


IMAGE_CASES = {
    "zero-byte": (_file("zero.png", b""), "empty file"),
    "not-an-image": (_file("text.jpg", b"just text"), "not an image"),
    "truncated": (_truncated, "truncated or corrupt"),
    "one-pixel": (_tiny, "too small"),
    "decompression-bomb": (_bomb, "too large to decode safely"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_images_one_line_error_or_skipped(tmp_path, case):
    make, reason = IMAGE_CASES[case]
    root, bad = _bad_folder(tmp_path, make)
    cache = str(tmp_path / "cache")
    extra = ["--config", str(_limit_config(tmp_path))] if case == "decompression-bomb" else []
    result = cxrlens("data", "prepare", "--data", str(root), "--size", "32", "--cache", cache, *extra)
    assert_clean_failure(result, bad, reason)
    result = cxrlens("data", "prepare", "--data", str(root), "--size", "32", "--cache", cache, "--skip-bad", *extra)
    assert result.returncode == 0, result.stderr
    assert "1 skipped" in result.stdout and len(list((tmp_path / "cache").rglob("*.npy"))) == 4
    result = cxrlens("data", "summary", "--data", str(root), *extra)
    if case == "truncated":  # summary reads headers only; the full decode in prepare finds it
        assert result.returncode == 0, result.stderr
    else:
        assert_clean_failure(result, bad, reason)


def _limit_config(tmp_path: Path) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text("data:\n  preprocess:\n    max_pixels: 50000000\n")
    return path


TABLE_CASES = {
    "missing file": ([["images/gone.png", "p9", "No Finding"]], "utf-8", "gone.png"),
    "escaping path": ([["../../etc/passwd", "p9", "No Finding"]], "utf-8", "../../etc/passwd"),
    "duplicate row": ([["images/ok1.png", "p1", "No Finding"]], "utf-8", "duplicate row"),
    "not utf-8": ([["images/ok1.png", "pé", "No Finding"]], "latin-1", "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_bad_tables_one_line_error_or_skipped(tmp_path, case):
    rows, encoding, needle = TABLE_CASES[case]
    root = tmp_path / "d"
    for i in range(4):
        save_png(root / "images" / f"ok{i}.png", xray_like(64, 64, seed=i))
    good = [[f"images/ok{i}.png", f"p{i}", "No Finding"] for i in range(4)]
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding"], good + rows, encoding=encoding)
    result = cxrlens("data", "summary", "--data", str(root))
    assert_clean_failure(result, "metadata.csv", needle)
    if case != "not utf-8":
        result = cxrlens("data", "summary", "--data", str(root), "--skip-bad", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["skipped"] == 1


def test_missing_column_and_bad_options(tmp_path):
    write_csv(tmp_path / "d" / "metadata.csv", ["file", "patient_id", "finding"], [["a.png", "p", "x"]])
    assert_clean_failure(cxrlens("data", "summary", "--data", str(tmp_path / "d")), "missing required column")
    result = cxrlens("data", "split", "--data", "@sample", "--scheme", "bogus", "--out", str(tmp_path / "s.csv"))
    assert_clean_failure(result, "scheme")
    (tmp_path / "c.yaml").write_text("data:\n  preprocess:\n    sise: 64\n")
    result = cxrlens("data", "summary", "--config", str(tmp_path / "c.yaml"))
    assert_clean_failure(result, "preprocess.sise: unknown option")


@pytest.mark.realdata
def test_acceptance_summary_of_the_shared_data(realdata):
    result = cxrlens("data", "summary", "--data", str(realdata), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 1441
    assert out["patients"] == 1076
    assert out["labels"]["COVID-19"] == 428
    assert out["problems"] == []


@pytest.mark.realdata
@pytest.mark.parametrize("scheme", ["kfold", "holdout"])
def test_acceptance_split_of_the_shared_data(realdata, tmp_path, scheme):
    out = tmp_path / "splits.csv"
    result = cxrlens("data", "split", "--data", str(realdata), "--scheme", scheme, "--out", str(out))
    assert result.returncode == 0, result.stderr
    from cxrlens.data.splits import read_splits

    rows = read_splits(out)  # read_splits refuses any patient shared between subsets of a fold
    assert len({r.filename for r in rows}) == 1441


def test_summary_of_other_collections_reports_what_each_source_annotates(tmp_path):
    from tests.data.collection_files import make_covidx, make_nih, make_rsna

    nih, rsna, covidx = make_nih(tmp_path / "nih"), make_rsna(tmp_path / "rsna"), make_covidx(tmp_path / "covidx")
    args = ["data", "summary", "--data", str(nih), "--data", str(rsna), "--data", str(covidx), "--data", "@sample"]
    result = cxrlens(*args, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {s: c["images"] for s, c in out["sources"].items()} == {
        "nih": 5, "rsna": 4, "covidx": 6, "cohen": 21, "kermany": 30}  # fmt: skip
    assert out["labels"]["Lung Opacity"] == 1 and out["labels"]["Effusion"] == 1
    assert out["annotation"]["rsna"]["Pneumonia"] == {"positive": 0, "negative": 0, "unknown": 4}
    assert out["annotation"]["covidx"]["COVID-19"] == {"positive": 3, "negative": 3, "unknown": 0}
    assert out["annotation"]["covidx"]["No Finding"] == {"positive": 1, "negative": 3, "unknown": 2}
    assert out["annotation"]["cohen"]["Lung Opacity"]["unknown"] == 21
    assert any("1 of 6 listed image(s) not found" in note for note in out["notes"])
    text = cxrlens(*args, "--labels", "paper14", "--no-check")
    assert text.returncode == 0, text.stderr
    assert "what each source" in text.stdout and "findings outside the label space" in text.stdout


def test_summary_json_of_every_public_layout(tmp_path):
    """Each collection, written in its published format, read through the CLI: images, patients, sources,
    labels with their ancestors and missing (unknown) values per source, as ``data summary --json`` reports."""
    from tests.data import collection_files

    layouts = ["nih", "chexpert", "mimic", "padchest", "rsna", "covidx"]
    roots = [str(getattr(collection_files, f"make_{name}")(tmp_path / name)) for name in layouts]
    args = [part for root in roots for part in ("--data", root)]
    result = cxrlens("data", "summary", *args, "--labels", "paper14", "--json")  # ARDS, TB... shown too
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["sources"] == {
        "nih": {"images": 5, "patients": 4},
        "chexpert": {"images": 5, "patients": 4},
        "mimic": {"images": 4, "patients": 2},
        "padchest": {"images": 3, "patients": 2},
        "rsna": {"images": 4, "patients": 4},
        "covidx": {"images": 6, "patients": 5},
    }
    assert s["images"] == 27 and s["patients"] == 21
    table = s["annotation"]
    # labels with ancestors: COVIDx's three COVID-19 images are viral pneumonias and pneumonias
    assert table["covidx"]["COVID-19"]["positive"] == 3
    assert table["covidx"]["Viral Pneumonia"]["positive"] == 3 and table["covidx"]["Pneumonia"]["positive"] == 4
    # missing values: what a collection does not annotate, and CheXpert's uncertain label (policy ignore)
    assert table["nih"]["ARDS"] == {"positive": 0, "negative": 0, "unknown": 5}
    assert table["nih"]["Pneumonia"]["unknown"] == 0
    assert table["chexpert"]["Cardiomegaly"] == {"positive": 1, "negative": 3, "unknown": 1}
    assert table["rsna"]["Pneumonia"]["unknown"] == 4 and table["rsna"]["Lung Opacity"]["unknown"] == 0
    assert table["covidx"]["ARDS"]["unknown"] == 6
    assert table["padchest"]["ARDS"]["unknown"] == 3 and table["mimic"]["Consolidation"]["positive"] == 1
    # a collection's own findings are unknown for the others, never negative
    assert table["rsna"]["Emphysema"] == {"positive": 0, "negative": 0, "unknown": 4}
    assert s["label_policy"]["uncertain"] == "ignore"
