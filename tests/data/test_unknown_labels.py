"""A label tree that grows, and unknown values: the tree file, Hierarchy.unknown_labels, known_mask, round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxrlens.config import DataConfig, LabelConfig
from cxrlens.data.export import write_dataset_folder
from cxrlens.data.labels import NO_POSITIVE, Hierarchy, LabelSpace
from cxrlens.data.sources import load_dataset
from cxrlens.data.tree import configured_hierarchy, read_tree
from cxrlens.errors import ConfigError, DataError, LabelError
from tests.conftest import save_png, write_csv, xray_like
from tests.data.collection_files import make_chexpert, make_covidx, make_nih, make_rsna

EXAMPLE_TREE = Path(__file__).resolve().parents[2] / "configs" / "label-tree.yaml"


def test_grow_adds_roots_and_alias_targets():
    tree = Hierarchy.build(aliases={"Pleural Effusion": "Effusion"})
    grown = tree.grow(["Cardiomegaly", "pneumonia", "Pleural Effusion", "No Finding"])
    assert grown.parents["Cardiomegaly"] is None and grown.parents["Effusion"] is None
    assert "Pleural Effusion" not in grown.parents  # the alias names the node it means
    assert "pneumonia" not in grown.parents  # known, any case
    assert grown.resolve("Pleural Effusion;Cardiomegaly") == {"Effusion", "Cardiomegaly"}
    with pytest.raises(LabelError, match="cannot hold"):
        tree.grow(["Nodule/Mass"])


def test_unknown_labels_follow_the_tree():
    tree = Hierarchy.build().grow(["Effusion"])
    # a source annotating Pneumonia and Effusion, image negative for both: the pneumonia subtree is negative
    assert tree.unknown_labels({"Pneumonia", "Effusion"}, set()) == {"No Finding", "ARDS", "Tuberculosis"}
    # positive Viral Pneumonia (ancestors included): Pneumonia known, the other kinds of virus unknown
    positives = tree.resolve("Pneumonia/Viral")
    unknown = tree.unknown_labels({"Pneumonia"}, positives)
    assert not unknown & positives and {"COVID-19", "Bacterial Pneumonia", "Effusion"} <= unknown
    # annotating every node: nothing unknown
    assert tree.unknown_labels(set(tree.parents), positives) == set()


def test_known_mask_next_to_encode_many():
    space = LabelSpace(("COVID-19", "No Finding", "Pneumonia"))
    labels = [frozenset({"No Finding"}), frozenset({"Pneumonia"})]
    unknown = [frozenset({"ARDS"}), frozenset({"COVID-19", "ARDS"})]
    assert space.encode_many(labels).tolist() == [[0, 1, 0], [0, 0, 1]]
    mask = space.known_mask(unknown)
    assert mask.dtype == bool and mask.tolist() == [[True, True, True], [False, True, True]]
    assert space.known_mask([]).shape == (0, 3)


def test_none_finding_has_no_positive_label():
    assert Hierarchy.build().resolve(NO_POSITIVE) == frozenset()


def test_tree_file_adds_moves_and_aliases(tmp_path):
    h = configured_hierarchy(LabelConfig(tree=str(EXAMPLE_TREE)))
    assert h.resolve("COVID-19") == {"COVID-19", "Viral Pneumonia", "Pneumonia", "Consolidation", "Lung Opacity"}
    assert h.resolve("Pleural Effusion") == {"Effusion"} and h.resolve("infiltrates") == {"Infiltration",
                                                                                           "Lung Opacity"}  # fmt: skip
    # config extra_nodes / aliases are applied after the file
    h2 = configured_hierarchy(LabelConfig(tree=str(EXAMPLE_TREE), extra_nodes={"Pneumonia": None}))
    assert h2.resolve("Pneumonia") == {"Pneumonia"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes: [a, b]\n", "nodes must be a mapping"),
        ("parents: {A: null}\n", "unknown key"),
        ("nodes: {A: B}\n", "parent 'B' of 'A' is not a known node"),
        ("nodes: {A: B, B: A}\n", "cycle"),
        ("aliases: {x: null}\n", "expected a node name"),
        ("- a\n", "expected a mapping"),
        ("nodes: {A: [\n", "invalid YAML"),
    ],
)
def test_bad_tree_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "tree.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        configured_hierarchy(LabelConfig(tree=str(path)))


def test_tree_path_is_expanded_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("TREES", str(tmp_path))
    assert LabelConfig(tree="$TREES/t.yaml").tree == str(tmp_path / "t.yaml")
    monkeypatch.chdir(tmp_path)
    assert LabelConfig(tree="t.yaml").tree == str(tmp_path / "t.yaml")
    with pytest.raises(ValueError, match="environment variable not set"):
        LabelConfig(tree="$NO_SUCH_VARIABLE_HERE/t.yaml")
    with pytest.raises(ConfigError, match="label tree file not found"):
        read_tree(tmp_path / "missing.yaml")
    assert read_tree(EXAMPLE_TREE).aliases["Pleural Effusion"] == "Effusion"


def _ours(tmp_path: Path, rows: list[list[str]]) -> Path:
    root = tmp_path / "ours"
    for i in range(len(rows)):
        save_png(root / "images" / f"i{i}.png", xray_like(64, 64, seed=i))
    write_csv(root / "metadata.csv", ["filename", "patient_id", "finding", "source", "unknown"], rows)
    return root


def test_cxrlens_csv_unknown_column(tmp_path):
    root = _ours(tmp_path, [
        ["images/i0.png", "p0", "No Finding", "site", "ARDS;Tuberculosis"],
        ["images/i1.png", "p1", "Pneumonia/Viral", "site", "COVID-19"],
        ["images/i2.png", "p2", "No Finding", "site", "COVID-19"],  # no pneumonia: COVID-19 is known negative
        ["images/i3.png", "p3", "Pneumonia/Bacterial", "site", ""],
    ])  # fmt: skip
    by = {r.filename: r for r in load_dataset([str(root)]).records}
    assert by["images/i0.png"].unknown == {"ARDS", "Tuberculosis"}
    assert by["images/i1.png"].unknown == {"COVID-19"}
    assert by["images/i2.png"].unknown == set() and by["images/i3.png"].unknown == set()


def test_cxrlens_csv_positive_and_unknown_is_a_bad_row(tmp_path):
    root = _ours(tmp_path, [
        ["images/i0.png", "p0", "Pneumonia/Viral/COVID-19", "site", "Viral Pneumonia"],
        ["images/i1.png", "p1", "No Finding", "site", ""],
    ])  # fmt: skip
    with pytest.raises(DataError, match=r"both positive .* and unknown"):
        load_dataset([str(root)])
    assert len(load_dataset(cfg=DataConfig(sources=[str(root)], skip_bad=True))) == 1


def test_cxrlens_csv_rows_of_a_collection_annotate_its_vocabulary(tmp_path):
    root = _ours(tmp_path, [["images/i0.png", "p0", "Effusion;Infiltration", "nih", ""],
                            ["images/i1.png", "p1", "No Finding", "cohen", ""]])  # fmt: skip
    by = {r.filename: r for r in load_dataset([str(root)]).records}
    assert by["images/i0.png"].labels == {"Effusion", "Infiltration"}
    assert by["images/i0.png"].unknown == {"ARDS", "Tuberculosis"}  # NIH's vocabulary
    assert "Effusion" in by["images/i1.png"].unknown  # a paper source does not annotate NIH's findings


def test_a_held_out_folder_reads_back_with_the_same_labels_and_unknown_values(tmp_path):
    sources = [make_nih(tmp_path / "nih"), make_chexpert(tmp_path / "chexpert"), make_rsna(tmp_path / "rsna"),
               make_covidx(tmp_path / "covidx")]  # fmt: skip
    cfg = DataConfig(sources=[*map(str, sources), "@sample"])
    ds = load_dataset(cfg=cfg)
    path = write_dataset_folder(ds, tmp_path / "external")
    again = load_dataset(cfg=cfg.model_copy(update={"sources": [str(path.parent)]}))
    original = {(r.filename, r.source, r.labels, r.unknown) for r in ds.records}
    assert {(r.filename, r.source, r.labels, r.unknown) for r in again.records} == original
    space = LabelSpace(("COVID-19", "No Finding", "Pneumonia", "Lung Opacity"))
    assert np.array_equal(again.known_matrix(space), ds.known_matrix(space))
