"""Property tests (hypothesis) where they pay: label-hierarchy closure, split integrity, preprocessing invariants."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cxrlens.config import PreprocessConfig, SplitConfig
from cxrlens.data.labels import BUILTIN_PARENTS, Hierarchy, LabelSpace
from cxrlens.data.preprocess import Geometry, preprocess_array, preprocess_mask
from cxrlens.data.records import Dataset, ImageRecord
from cxrlens.data.splits import check_splits, make_splits

HIERARCHY = Hierarchy.build()
NODES = sorted(BUILTIN_PARENTS)
ALL_LABELS = sorted({HIERARCHY.label_name(n) for n in NODES})


def path_of(node: str) -> str:
    return "/".join(reversed(HIERARCHY.ancestors(node)))


@given(st.lists(st.sampled_from(NODES), min_size=1, max_size=4), st.booleans())
def test_a_finding_carries_every_ancestor_and_nothing_else(nodes, as_paths):
    finding = ";".join(path_of(n) if as_paths else n for n in nodes)
    labels = HIERARCHY.resolve(finding)
    expected = {HIERARCHY.label_name(a) for n in nodes for a in HIERARCHY.ancestors(n)}
    assert labels == expected  # closed under "parent of", and only the findings' own chains
    vector = LabelSpace(tuple(ALL_LABELS)).encode(labels)
    assert HIERARCHY.is_consistent(ALL_LABELS, vector)


@given(st.sampled_from(NODES))
def test_a_path_that_skips_a_level_is_refused_unless_it_is_the_true_chain(node):
    chain = HIERARCHY.ancestors(node)
    assert HIERARCHY.resolve(path_of(node)) == HIERARCHY.resolve(node)
    if len(chain) >= 3:  # leave out the middle: "Pneumonia/COVID-19" is not a valid path
        from cxrlens.errors import LabelError

        try:
            HIERARCHY.resolve(f"{chain[-1]}/{chain[0]}")
        except LabelError as err:
            assert "is not under" in str(err)
        else:
            raise AssertionError("a path skipping a level was accepted")


patients_strategy = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3),  # images of the patient
        st.sampled_from(["No Finding", "Pneumonia/Viral/COVID-19", "Pneumonia/Bacterial", "ARDS"]),
        st.sampled_from(["a", "b"]),  # source
    ),
    min_size=12,  # fewer patients than that cannot give a validation part to every fold (a clear DataError)
    max_size=30,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patients_strategy, st.sampled_from(["kfold", "holdout"]), st.integers(min_value=2, max_value=4), st.integers(0, 5)
)
def test_splits_keep_patients_whole_and_test_each_image_once(patients, scheme, folds, seed):
    with tempfile.TemporaryDirectory() as folder:
        records = []
        for p, (count, finding, source) in enumerate(patients):
            for i in range(count):
                path = Path(folder) / f"p{p}_{i}.png"
                path.write_bytes(f"{p}-{i}".encode())  # distinct contents: no identical files
                records.append(
                    ImageRecord(path.name, path, f"p{p}", finding, HIERARCHY.resolve(finding), source=source)
                )
        dataset = Dataset(records, Path(folder), HIERARCHY)
        space = LabelSpace(tuple(sorted({label for r in records for label in r.labels})))
        cfg = SplitConfig(scheme=scheme, folds=folds, seed=seed, val_fraction=0.2)
        rows = make_splits(dataset, space, cfg)
    check_splits(rows, kfold=scheme == "kfold")  # raises on a patient in two subsets / a double test
    assert len(rows) == len(records) * folds
    subsets: dict[tuple[int, str], set[str]] = defaultdict(set)
    for row in rows:
        subsets[(row.fold, row.patient_id)].add(row.subset)
    assert all(len(found) == 1 for found in subsets.values())
    if scheme == "kfold":
        tested = [row.filename for row in rows if row.subset == "test"]
        assert sorted(tested) == sorted(r.filename for r in records)
    for fold in range(folds):
        assert any(row.subset == "train" for row in rows if row.fold == fold)


image_strategy = st.one_of(
    arrays(np.uint8, st.tuples(st.integers(8, 90), st.integers(8, 90))),
    arrays(np.uint16, st.tuples(st.integers(8, 90), st.integers(8, 90))),
    arrays(
        np.float32,
        st.tuples(st.integers(8, 90), st.integers(8, 90)),
        elements=st.floats(-1e4, 1e4, allow_nan=False, width=32),
    ),
)


@settings(max_examples=60, deadline=None)
@given(image_strategy, st.sampled_from([16, 32, 48]), st.sampled_from(["center", "end"]))
def test_preprocessing_gives_a_square_in_unit_range_with_zero_padding(image, size, pad):
    cfg = PreprocessConfig(size=size, pad=pad)
    out = preprocess_array(image, cfg)
    assert out.shape == (size, size) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    content = Geometry.for_shape(*image.shape, size, pad).content_mask()
    assert not out[~content].any()  # padding stays black
    assert max(content.sum(axis=0).max(), content.sum(axis=1).max()) == size  # the longer side fills the square
    mask = preprocess_mask(np.ones(image.shape, dtype=bool), cfg)
    assert (mask == content).all()  # masks land exactly where the image content is


@given(st.integers(8, 60), st.integers(8, 60), st.floats(-100, 100, allow_nan=False))
def test_a_constant_image_gives_zeros_not_nan(height, width, value):
    out = preprocess_array(np.full((height, width), value, dtype=np.float32), PreprocessConfig(size=32))
    assert not out.any()
