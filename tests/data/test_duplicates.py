"""Identical image files: found, reported by the summary, and never split across train and test."""

import shutil

import pytest

from cxrlens.config import DataConfig, SplitConfig
from cxrlens.data.duplicates import identical_files, linked_patients
from cxrlens.data.labels import choose_labels
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import make_splits
from cxrlens.data.summary import summarize
from tests.conftest import make_dataset, save_png, write_csv, xray_like


def _with_reposted_images(root):
    """24 patients; patient p1's image re-posted as p20's and p30's (a new patient with only that copy)."""
    make_dataset(root, n=24)
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    shutil.copy(root / "images/img001.png", root / "images/copy_a.png")
    shutil.copy(root / "images/img001.png", root / "images/copy_b.png")
    save_png(root / "images/other.png", xray_like(104, 80, seed=99))  # same shape as img001, other pixels
    rows[20][0] = "images/copy_a.png"
    rows += [["images/copy_b.png", "p30", rows[1][2], "PA", "synthetic"]]
    rows += [["images/other.png", "p31", rows[1][2], "PA", "synthetic"]]
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "view", "source"], rows)
    return load_dataset([str(root)])


def test_identical_files_are_grouped_and_their_patients_linked(tmp_path):
    ds = _with_reposted_images(tmp_path / "d")
    groups = identical_files(ds.records)
    copies = ["images/img001.png", "images/copy_a.png", "images/copy_b.png"]
    assert [[r.filename for r in g] for g in groups] == [copies]
    unit = linked_patients(ds.records)
    assert unit["p1"] == unit["p20"] == unit["p30"] != unit["p31"]
    assert len(set(unit.values())) == len(ds.patients) - 2


@pytest.mark.parametrize("scheme", ["kfold", "holdout"])
def test_patients_sharing_an_image_land_in_the_same_subset(tmp_path, scheme):
    ds = _with_reposted_images(tmp_path / "d")
    space = choose_labels([r.labels for r in ds.records], min_images=1)[0]
    for seed in range(4):
        rows = make_splits(ds, space, SplitConfig(scheme=scheme, folds=3, seed=seed))
        for fold in {r.fold for r in rows}:
            subsets = {r.subset for r in rows if r.fold == fold and r.patient_id in {"p1", "p20", "p30"}}
            assert len(subsets) == 1, f"fold {fold}: the same X-ray in {subsets}"


def test_summary_lists_identical_files(tmp_path):
    ds = _with_reposted_images(tmp_path / "d")
    summary = summarize(ds, DataConfig())
    assert summary["identical_files"] == [["images/img001.png", "images/copy_a.png", "images/copy_b.png"]]
    assert any("across different patient ids" in n and "1 group" in n for n in summary["notes"])
    assert summarize(load_dataset([str(make_dataset(tmp_path / "clean"))]), DataConfig())["identical_files"] == []
