"""Held-out patients as an external folder: `data split --external-fraction F --external-out DIR`."""

from __future__ import annotations

import pytest

from cxrlens.config import DataConfig
from cxrlens.data.export import write_dataset_folder
from cxrlens.data.labels import choose_labels
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import hold_out
from cxrlens.errors import DataError


def test_held_out_patients_become_a_readable_folder_and_never_reach_the_split(tmp_path):
    dataset = load_dataset(cfg=DataConfig())  # the embedded sample: two sources, lung masks, sex and age
    space, _ = choose_labels([r.labels for r in dataset.records])
    kept, held = hold_out(dataset, space, 0.25, seed=0)
    assert not set(kept.patients) & set(held.patients)
    assert len(kept) + len(held) == len(dataset) and 0.15 < len(held.patients) / len(dataset.patients) < 0.35
    assert {r.source for r in held.records} == {r.source for r in dataset.records}  # stratified on the source
    path = write_dataset_folder(held, tmp_path / "external")
    again = load_dataset([str(path.parent)])
    assert sorted(r.patient_id for r in again.records) == sorted(r.patient_id for r in held.records)
    by_patient = {(r.patient_id, r.finding, r.source, r.sex, r.age) for r in again.records}
    assert by_patient == {(r.patient_id, r.finding, r.source, r.sex, r.age) for r in held.records}
    masked = [r for r in held.records if r.lung_mask is not None]
    assert sum(r.lung_mask is not None for r in again.records) == len(masked)
    assert write_dataset_folder(held, tmp_path / "external") == path  # the same set again: a no-op
    with pytest.raises(DataError, match=r"already holds another metadata\.csv"):
        write_dataset_folder(kept, tmp_path / "external")
