from collections import defaultdict

import numpy as np
import pytest

from cxrlens.config import DataConfig, SplitConfig
from cxrlens.data.labels import choose_labels
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import (
    SplitRow,
    absent_training_labels,
    check_splits,
    fold_files,
    fold_sources,
    make_splits,
    read_splits,
    write_splits,
)
from cxrlens.errors import DataError
from tests.conftest import make_dataset


def shared_patients(rows):
    """Patients found in more than one subset of the same fold (must be none)."""
    where = defaultdict(set)
    for r in rows:
        where[(r.fold, r.patient_id)].add(r.subset)
    return [k for k, v in where.items() if len(v) > 1]


def _space(ds, **kw):
    return choose_labels([r.labels for r in ds.records], **kw)[0]


def test_kfold_on_sample_is_patient_grouped_and_tests_every_image_once():
    ds = load_dataset(["@sample"])
    rows = make_splits(ds, _space(ds), SplitConfig(scheme="kfold", folds=3, seed=0))
    assert not shared_patients(rows)
    tested = defaultdict(int)
    for r in rows:
        tested[r.filename] += r.subset == "test"
    assert set(tested.values()) == {1} and len(tested) == len(ds)
    assert {r.subset for r in rows} == {"train", "val", "test"}


def test_patients_with_many_images_stay_together(tmp_path):
    ds = load_dataset([str(make_dataset(tmp_path / "d", n=40, patients=10))])
    for scheme in ("kfold", "holdout"):
        rows = make_splits(ds, _space(ds, min_images=1), SplitConfig(scheme=scheme, folds=3, seed=1))
        assert not shared_patients(rows)


def test_holdout_is_a_repeated_60_40_patient_split():
    ds = load_dataset(["@sample"])
    rows = make_splits(ds, _space(ds), SplitConfig(scheme="holdout", folds=4, test_fraction=0.4, seed=0))
    assert sorted({r.fold for r in rows}) == [0, 1, 2, 3]
    for fold in range(4):
        patients = {r.patient_id for r in rows if r.fold == fold and r.subset == "test"}
        share = len(patients) / len(ds.patients)
        assert 0.3 <= share <= 0.5
    tests = [frozenset(r.filename for r in rows if r.fold == f and r.subset == "test") for f in range(4)]
    assert len(set(tests)) > 1  # different repeats


def test_splits_are_deterministic_and_round_trip(tmp_path):
    ds = load_dataset(["@sample"])
    cfg = SplitConfig(folds=3, seed=7)
    a, b = make_splits(ds, _space(ds), cfg), make_splits(ds, _space(ds), cfg)
    assert a == b
    write_splits(a, tmp_path / "s.csv")
    assert read_splits(tmp_path / "s.csv") == a
    assert set(fold_files(a, 0)) == {"train", "val", "test"}
    with pytest.raises(DataError, match="fold 9 is not in the splits"):
        fold_files(a, 9)


def test_leaky_split_file_is_refused():
    rows = [SplitRow("a.png", "p1", 0, "train"), SplitRow("b.png", "p1", 0, "test")]
    with pytest.raises(DataError, match="patient p1 is in both train and test of fold 0"):
        check_splits(rows)


def test_too_few_patients():
    ds = load_dataset(["@sample"])
    with pytest.raises(DataError, match="patient"):
        make_splits(ds, _space(ds), SplitConfig(folds=len(ds.patients) + 1))


@pytest.mark.realdata
@pytest.mark.parametrize("scheme", ["kfold", "holdout"])
def test_real_data_splits_never_share_patients(realdata, scheme):
    ds = load_dataset(cfg=DataConfig(sources=[str(realdata)]))
    space = _space(ds)
    rows = make_splits(ds, space, SplitConfig(scheme=scheme, folds=5, seed=0))
    assert not shared_patients(rows)
    if scheme == "kfold":
        tested = defaultdict(int)
        for r in rows:
            tested[r.filename] += r.subset == "test"
        assert len(tested) == len(ds) and set(tested.values()) == {1}
    # stratified: every fold's test part holds COVID-19 at close to the overall rate
    covid = {r.filename for r in ds.records if "COVID-19" in r.labels}
    overall = len(covid) / len(ds)
    for fold in range(5):
        test = [r.filename for r in rows if r.fold == fold and r.subset == "test"]
        rate = np.mean([f in covid for f in test])
        assert abs(rate - overall) < 0.08


def test_by_source_folds_test_one_source_and_report_labels_missing_from_training():
    dataset = load_dataset(cfg=DataConfig())  # the embedded sample: cohen and kermany
    space, _ = choose_labels([r.labels for r in dataset.records])
    rows = make_splits(dataset, space, SplitConfig(scheme="by-source", val_fraction=0.2))
    source_of = {r.filename: r.source for r in dataset.records}
    assert fold_sources(dataset) == ["cohen", "kermany"]
    for fold, source in enumerate(fold_sources(dataset)):
        assert {source_of[r.filename] for r in rows if r.fold == fold and r.subset == "test"} == {source}
        assert {source_of[r.filename] for r in rows if r.fold == fold and r.subset != "test"} == {
            "cohen",
            "kermany",
        } - {source}
    missing = absent_training_labels(rows, dataset, space)
    assert "COVID-19" in missing[0]  # every COVID-19 image is a cohen image: fold 0 cannot learn it
    assert "Bacterial Pneumonia" not in missing.get(0, [])


def test_by_source_needs_two_sources(tmp_path):
    from cxrlens.config import DataConfig
    from cxrlens.data.labels import choose_labels
    from cxrlens.data.sources import load_dataset
    from tests.conftest import make_dataset

    dataset = load_dataset(cfg=DataConfig(sources=[str(make_dataset(tmp_path / "d"))]))
    space, _ = choose_labels([r.labels for r in dataset.records], min_images=1)
    with pytest.raises(DataError, match="by-source splits need at least two sources"):
        make_splits(dataset, space, SplitConfig(scheme="by-source"))
