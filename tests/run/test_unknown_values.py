"""The run folder keeps unknown values: empty cells of labels.csv, the known mask of the blocks evaluate reads,
and the targets the training loader yields (NaN where unknown)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlens.data.labels import LabelSpace
from cxrlens.data.records import ImageRecord
from cxrlens.errors import RunError
from cxrlens.run.images import LabelledImages, known_targets
from cxrlens.run.predictions import (
    labels_csv_text,
    prediction_rows,
    read_labels,
    read_run_data,
    read_truth,
    write_labels,
    write_predictions,
)

SPACE = LabelSpace(("COVID-19", "No Finding", "Pneumonia"))


def _records(tmp_path: Path, unknown: bool = True) -> list[ImageRecord]:
    """Two images of source a (annotates everything) and two of source b (never annotates COVID-19)."""
    gone = frozenset({"COVID-19"}) if unknown else frozenset()
    return [
        ImageRecord("a0.png", tmp_path / "a0.png", "pa0", "x", frozenset({"COVID-19", "Pneumonia"}), source="a"),
        ImageRecord("a1.png", tmp_path / "a1.png", "pa1", "x", frozenset({"No Finding"}), source="a"),
        ImageRecord("b0.png", tmp_path / "b0.png", "pb0", "x", frozenset({"Pneumonia"}), source="b", unknown=gone),
        ImageRecord("b1.png", tmp_path / "b1.png", "pb1", "x", frozenset({"No Finding"}), source="b", unknown=gone),
    ]


def test_labels_csv_writes_unknown_as_an_empty_cell_and_reads_it_back(tmp_path):
    records = _records(tmp_path)
    write_labels(tmp_path / "labels.csv", records, SPACE)
    lines = (tmp_path / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert lines == [
        "filename,patient_id,COVID-19,No Finding,Pneumonia",
        "a0.png,pa0,1,0,1",
        "a1.png,pa1,0,1,0",
        "b0.png,pb0,,0,1",
        "b1.png,pb1,,1,0",
    ]
    truth = read_truth(tmp_path / "labels.csv", SPACE.names)
    assert truth["b0.png"][1].tolist() == [0, 0, 1] and truth["b0.png"][2].tolist() == [False, True, True]
    assert truth["a0.png"][2].all()
    assert read_labels(tmp_path / "labels.csv", SPACE.names)["b1.png"][1].tolist() == [0, 1, 0]


def test_without_unknown_values_the_file_is_the_old_one(tmp_path):
    records = _records(tmp_path, unknown=False)
    text = labels_csv_text(records, SPACE)
    old = "".join(
        f"{r.filename},{r.patient_id},{','.join(str(int(v)) for v in SPACE.encode(r.labels))}\n" for r in records
    )
    assert text == "filename,patient_id,COVID-19,No Finding,Pneumonia\n" + old
    # an unknown value of a positive label cannot be written (a positive is known)
    odd = ImageRecord("c.png", tmp_path / "c.png", "pc", "x", frozenset({"COVID-19"}), unknown=frozenset({"COVID-19"}))
    assert labels_csv_text([odd], SPACE).splitlines()[1] == "c.png,pc,1,0,0"


def test_blocks_carry_the_known_mask_and_old_runs_have_none(tmp_path):
    records = _records(tmp_path)
    write_labels(tmp_path / "labels.csv", records, SPACE)
    probs = np.full((4, 3), 0.5)
    write_predictions(tmp_path / "p.csv", prediction_rows(records, probs, 0, "m", "test"), SPACE.names)
    block = read_run_data(tmp_path / "labels.csv", tmp_path / "p.csv", SPACE.names).blocks[("m", 0, "test")]
    assert block.known is not None and block.known[:, 0].tolist() == [True, True, False, False]
    assert block.take(["b1.png", "a0.png"]).known_mask[:, 0].tolist() == [False, True]
    write_labels(tmp_path / "labels.csv", _records(tmp_path, unknown=False), SPACE)
    old = read_run_data(tmp_path / "labels.csv", tmp_path / "p.csv", SPACE.names).blocks[("m", 0, "test")]
    assert old.known is None and old.known_mask.all()


def test_a_bad_cell_still_says_what_is_expected(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,patient_id,COVID-19\na.png,pa,?\n", encoding="utf-8")
    with pytest.raises(RunError, match=r"line 2: 'COVID-19' is '\?', expected 0 or 1 \(or empty: unknown\)"):
        read_truth(tmp_path / "labels.csv", ("COVID-19",))


class _Cache:
    def load(self, path: Path) -> np.ndarray:
        return np.zeros((8, 8), dtype=np.float32)


def test_labelled_images_yield_the_known_mask_with_the_targets(tmp_path):
    dataset = LabelledImages(_records(tmp_path), SPACE, _Cache())  # type: ignore[arg-type]
    assert dataset.known[:, 0].tolist() == [True, True, False, False] and dataset.known[:, 1:].all()
    assert dataset.targets[2].tolist() == [0, 0, 1]  # the 0/1 matrix (e.g. for activation-profile groups)
    x, y = dataset[2]
    assert x.shape == (1, 8, 8) and torch.isnan(y[0]) and y[1:].tolist() == [0.0, 1.0]
    values, known = known_targets(torch.stack([dataset[i][1] for i in range(4)]))
    assert values[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and known[:, 0].tolist() == [True, True, False, False]
    assert torch.equal(dataset[0][1], torch.tensor([1.0, 0.0, 1.0]))  # a known row is the old multi-hot row
