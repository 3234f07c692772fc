"""The collections' readers on tiny files in their published formats: images, patients, labels, unknown values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlens.config import DataConfig
from cxrlens.data.labels import BUILTIN_PARENTS, Hierarchy
from cxrlens.data.readers.base import normal_age
from cxrlens.data.readers.padchest import parse_labels
from cxrlens.data.sources import detect_layout, load_dataset
from cxrlens.errors import DataError
from tests.data.collection_files import (
    make_chexpert,
    make_covidx,
    make_mimic,
    make_nih,
    make_padchest,
    make_rsna,
)

PAPER = Hierarchy.build()
#: label names of the paper's Pneumonia subtree below Pneumonia (Viral Pneumonia, COVID-19, ...)
BELOW_PNEUMONIA = frozenset(PAPER.label_name(n) for n in BUILTIN_PARENTS if "Pneumonia" in PAPER.ancestors(n)[1:])


def by_name(ds):  # type: ignore[no-untyped-def]
    return {Path(r.filename).name: r for r in ds.records}


def test_nih_chestxray14(tmp_path):
    ds = load_dataset([str(make_nih(tmp_path / "nih"))])
    by = by_name(ds)
    assert sorted(by) == ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png",
                          "00000004_000.png"]  # fmt: skip
    assert by["00000001_001.png"].filename == "images_001/images/00000001_001.png"
    assert by["00000001_001.png"].labels == {"Cardiomegaly", "Emphysema"}
    assert by["00000003_000.png"].labels == {"Effusion", "Infiltration"}
    assert by["00000004_000.png"].labels == {"Pleural Thickening", "Pneumonia"}
    assert by["00000004_000.png"].finding == "Pleural Thickening;Pneumonia"
    assert by["00000001_000.png"].patient_id == by["00000001_001.png"].patient_id == "nih-1"
    assert len(ds.patients) == 4 and {r.source for r in ds.records} == {"nih"}
    three = by["00000003_000.png"]
    assert (three.view, three.sex, three.age) == ("AP", "F", "74")
    # NIH does not annotate ARDS or Tuberculosis; its "no pneumonia" makes the paper's pneumonia subtree negative
    normal = by["00000002_000.png"]
    assert normal.labels == {"No Finding"} and normal.unknown == {"ARDS", "Tuberculosis"}
    # a pneumonia whose kind NIH does not say: every kind is unknown, never Pneumonia itself
    pneumonia = by["00000004_000.png"].unknown
    assert pneumonia == {"ARDS", "Tuberculosis"} | BELOW_PNEUMONIA and "Pneumonia" not in pneumonia
    assert any("1 of 6 listed image(s) not found" in note for note in ds.notes)


def test_nih_csv_given_directly_and_ages(tmp_path):
    root = make_nih(tmp_path / "nih")
    assert detect_layout(root / "Data_Entry_2017.csv") == ("nih", root / "Data_Entry_2017.csv")
    save = root / "images_002" / "images" / "00000005_000.png"
    save.write_bytes((root / "images_001" / "images" / "00000001_000.png").read_bytes())
    by = by_name(load_dataset([str(root / "Data_Entry_2017.csv")]))
    assert by["00000005_000.png"].age == "69"  # the early release's "069Y"


def chexpert(tmp_path, **labels):  # type: ignore[no-untyped-def]
    root = tmp_path / "chexpert"
    if not root.exists():
        make_chexpert(root)
    return by_name_path(load_dataset(cfg=DataConfig(sources=[str(root)], labels=labels)))


def by_name_path(ds):  # type: ignore[no-untyped-def]
    return {"/".join(Path(r.filename).parts[-3:-1]): r for r in ds.records}


def test_chexpert_default_policy_uncertain_is_unknown(tmp_path):
    by = chexpert(tmp_path)
    # the lateral view is dropped
    assert sorted(by) == ["patient00001/study1", "patient00002/study1", "patient00002/study2",
                          "patient00003/study1", "patient64541/study1"]  # fmt: skip
    first = by["patient00001/study1"]
    assert first.filename == "train/patient00001/study1/view1_frontal.jpg" and first.path.is_file()
    assert (first.patient_id, first.sex, first.age, first.view) == ("chexpert-patient00001", "F", "68", "AP")
    assert first.labels == {"No Finding", "Support Devices"} and first.unknown == {"ARDS", "Tuberculosis"}
    uncertain = by["patient00002/study2"]
    assert uncertain.labels == {"Lung Opacity", "Fracture"}
    assert uncertain.unknown == {"Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion",
                                 "ARDS", "Tuberculosis"}  # fmt: skip
    assert by["patient00002/study1"].patient_id == uncertain.patient_id == "chexpert-patient00002"
    assert by["patient00002/study1"].labels == {"Lung Opacity", "Pneumonia", "Fracture"}
    assert by["patient00002/study1"].unknown >= BELOW_PNEUMONIA
    assert (by["patient00003/study1"].age, by["patient00003/study1"].view) == ("", "PA")  # age 0 is unknown
    assert by["patient64541/study1"].labels == {"Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
                                                "Support Devices"}  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "labels", "unknown"),
    [
        ("zeros", {"Lung Opacity", "Fracture"}, {"ARDS", "Tuberculosis"}),
        ("ones", {"Lung Opacity", "Fracture", "Cardiomegaly", "Edema", "Consolidation", "Atelectasis",
                  "Pleural Effusion"}, {"ARDS", "Tuberculosis"}),
    ],
)  # fmt: skip
def test_chexpert_uncertain_zeros_and_ones(tmp_path, policy, labels, unknown):
    uncertain = chexpert(tmp_path, uncertain=policy)["patient00002/study2"]
    assert uncertain.labels == labels and uncertain.unknown == unknown


def test_chexpert_blank_as_unknown(tmp_path):
    first = chexpert(tmp_path, unmentioned="unknown")["patient00001/study1"]
    assert {"Cardiomegaly", "Pneumonia", "COVID-19", "Edema"} <= first.unknown
    assert not {"No Finding", "Pneumothorax", "Support Devices"} & first.unknown  # 1.0 / 0.0 are known


def test_chexpert_with_the_example_tree(tmp_path):
    tree = Path(__file__).resolve().parents[2] / "configs" / "label-tree.yaml"
    by = chexpert(tmp_path, tree=str(tree))
    study1 = by["patient00002/study1"]  # Pneumonia positive: its ancestors Consolidation, Lung Opacity too
    assert study1.labels == {"Lung Opacity", "Consolidation", "Pneumonia", "Fracture"}
    study2 = by["patient00002/study2"]
    assert {"Effusion", "Consolidation", "Edema"} <= study2.unknown  # Pleural Effusion is Effusion here
    assert "Pneumonia" not in study2.unknown and "COVID-19" not in study2.unknown  # blank: negative, as below


def test_chexpert_csv_given_directly(tmp_path):
    root = make_chexpert(tmp_path / "chexpert")
    ds = load_dataset([str(root / "CheXpert-v1.0-small" / "valid.csv")])
    assert [r.filename for r in ds.records] == ["valid/patient64541/study1/view1_frontal.jpg"]


def test_mimic_cxr_jpg(tmp_path):
    ds = load_dataset([str(make_mimic(tmp_path / "mimic"))])
    by = {r.filename.split("/")[3]: r for r in ds.records}
    assert sorted(by) == ["s50414267", "s53189527", "s53911762", "s57375967"]  # lateral and unlabelled dropped
    first = by["s50414267"]
    assert first.filename == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert (first.patient_id, first.view, first.date, first.sex, first.age) == (
        "mimic-10000032", "PA", "2180-05-06", "", "")  # fmt: skip
    assert first.labels == {"No Finding"} and first.unknown == {"ARDS", "Tuberculosis"}
    portable = by["s53911762"]
    assert portable.labels == {"Lung Opacity"} and "Atelectasis" in portable.unknown
    assert "Pleural Effusion" not in portable.unknown and portable.view == "AP"
    uncertain_pneumonia = by["s57375967"]
    assert uncertain_pneumonia.labels == {"Consolidation"}
    assert {"Pneumonia"} | BELOW_PNEUMONIA <= uncertain_pneumonia.unknown
    assert len({r.patient_id for r in ds.records}) == 2
    notes = " ".join(ds.notes)
    assert "not a frontal view" in notes and "study without labels" in notes


def test_mimic_negbio_labels_and_a_missing_label_file(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").rename(root / "mimic-cxr-2.0.0-negbio.csv.gz")
    assert len(load_dataset([str(root)])) == 4
    (root / "mimic-cxr-2.0.0-negbio.csv.gz").unlink()
    with pytest.raises(DataError, match=r"no mimic-cxr-2\.0\.0-chexpert\.csv"):
        load_dataset([str(root)])


def test_padchest(tmp_path):
    ds = load_dataset([str(make_padchest(tmp_path / "padchest"))])
    by = {r.filename: r for r in ds.records}
    normal = by["0/216840111366964012339356563862009072111404053_00-043-192.png"]
    assert normal.labels == {"No Finding"} and normal.finding == "Normal"
    assert (normal.patient_id, normal.sex, normal.age, normal.view, normal.date) == (
        "padchest-16407", "M", "79", "PA", "2009-08-11")  # fmt: skip
    assert normal.unknown == {"ARDS"}  # PadChest annotates tuberculosis, and pneumonia (so its subtree)
    pneumonia = by["0/216840111366964012373310883942009117084022290_00-064-025.png"]
    assert pneumonia.labels == {"Pneumonia", "Infiltrates"} and pneumonia.unknown >= BELOW_PNEUMONIA
    supine = by["1/216840111366964012373310883942009152114636712_00-102-045.png"]
    assert supine.labels == {"Pleural Effusion", "COPD Signs"}  # 'unchanged' is not a finding
    assert supine.view == "AP Supine" and supine.patient_id == pneumonia.patient_id
    assert len(ds) == 3 and {r.source for r in ds.records} == {"padchest"}
    notes = " ".join(ds.notes)
    assert "(marked exclude)" in notes and "(not labelled)" in notes and "(not a frontal view)" in notes
    assert "Chilaiditi Sign" in ds.hierarchy.label_names()  # the whole vocabulary is in the tree


def test_padchest_label_strings():
    assert parse_labels("['pneumonia', ' infiltrates']") == ["pneumonia", "infiltrates"]
    assert parse_labels("['normal']") == ["normal"]
    assert parse_labels("[]") == []
    assert parse_labels("") is None and parse_labels("nan") is None
    assert parse_labels("['pleural effusion', 'cardiomegaly'") == ["pleural effusion", "cardiomegaly"]


def test_rsna_pneumonia(tmp_path):
    ds = load_dataset([str(make_rsna(tmp_path / "rsna"))])
    by = {r.patient_id.removeprefix("rsna-")[:8]: r for r in ds.records}
    assert sorted(by) == ["0004cfab", "00313ee0", "003d8fa0", "00436515"]  # two box rows, one image
    opacity = by["00436515"]
    assert opacity.labels == {"Lung Opacity"} and (opacity.view, opacity.sex, opacity.age) == ("AP", "F", "32")
    assert opacity.filename == "stage_2_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm"
    assert by["003d8fa0"].labels == {"No Finding"}
    not_normal = by["0004cfab"]
    assert not_normal.labels == set() and not_normal.finding == "(none)"
    assert "No Finding" not in not_normal.unknown and "Lung Opacity" not in not_normal.unknown
    assert {"Pneumonia", "COVID-19", "ARDS"} <= not_normal.unknown  # RSNA says nothing about them


def test_rsna_without_the_class_file_annotates_opacity_only(tmp_path):
    root = make_rsna(tmp_path / "rsna")
    (root / "stage_2_detailed_class_info.csv").unlink()
    ds = load_dataset([str(root)])
    assert all("No Finding" in r.unknown for r in ds.records)
    assert all(r.labels <= {"Lung Opacity"} for r in ds.records)


def test_covidx_three_classes_and_binary(tmp_path):
    ds = load_dataset([str(make_covidx(tmp_path / "covidx"))])
    by = {r.filename: r for r in ds.records}
    assert len(ds) == 6 and {r.source for r in ds.records} == {"covidx"}
    other = by["train/SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg"]
    assert other.labels == {"Pneumonia"} and other.patient_id == "covidx-5"
    assert "COVID-19" not in other.unknown and "Viral Pneumonia" in other.unknown  # not COVID-19, kind unknown
    covid = [r for r in ds.records if r.patient_id == "covidx-419639-001251"]
    assert len(covid) == 2 and all(r.labels == {"Pneumonia", "Viral Pneumonia", "COVID-19"} for r in covid)
    # COVIDx says COVID-19, not which other infections: every other kind of pneumonia is unknown
    assert covid[0].unknown == {"ARDS", "Tuberculosis"} | (BELOW_PNEUMONIA - {"COVID-19", "Viral Pneumonia"})
    assert {"SARS", "Bacterial Pneumonia", "Streptococcus"} <= covid[0].unknown
    normal = by["train/8a8b1c7b-94a8-4f26-a8e4-b3b7f3ccbd26.png"]
    assert normal.labels == {"No Finding"} and normal.unknown == {"ARDS", "Tuberculosis"}
    negative = by["test/00f59ab6-7f37-4bd8-9fa3-8d8c1d7e8bbb.png"]  # binary: only COVID-19 is known
    assert negative.labels == set() and "COVID-19" not in negative.unknown
    assert {"No Finding", "Pneumonia", "Bacterial Pneumonia"} <= negative.unknown
    assert "No Finding" in by["test/MIDRC-RICORD-1C-419639-000082-24542-0.png"].unknown


def test_covidx_split_file_given_directly(tmp_path):
    root = make_covidx(tmp_path / "covidx")
    assert detect_layout(root / "test.txt") == ("covidx", root / "test.txt")
    assert sorted(r.filename for r in load_dataset([str(root / "test.txt")]).records) == [
        "test/00f59ab6-7f37-4bd8-9fa3-8d8c1d7e8bbb.png", "test/MIDRC-RICORD-1C-419639-000082-24542-0.png"]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "relative", "layout"),
    [
        (make_nih, "Data_Entry_2017.csv", "nih"),
        (make_mimic, "mimic-cxr-2.0.0-metadata.csv.gz", "mimic"),
        (make_padchest, "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", "padchest"),
        (make_rsna, "stage_2_train_labels.csv", "rsna"),
    ],
)
def test_layouts_are_recognised_from_the_folder_and_the_file(tmp_path, make, relative, layout):
    root = make(tmp_path / layout)
    assert detect_layout(root) == (layout, root / relative)
    assert detect_layout(root / relative)[0] == layout


def test_collections_combine_with_the_paper_data(tmp_path):
    sources = [
        make_nih(tmp_path / "nih"), make_chexpert(tmp_path / "chexpert"), make_mimic(tmp_path / "mimic"),
        make_padchest(tmp_path / "padchest"), make_rsna(tmp_path / "rsna"), make_covidx(tmp_path / "covidx"),
    ]  # fmt: skip
    ds = load_dataset([*map(str, sources), "@sample"])
    assert {r.source for r in ds.records} == {"nih", "chexpert", "mimic", "padchest", "rsna", "covidx", "cohen",
                                              "kermany"}  # fmt: skip
    assert all((ds.root / r.filename).is_file() for r in ds.records)
    assert len({r.patient_id for r in ds.records}) == len(ds.patients)
    paper = [r for r in ds.records if r.source in {"cohen", "kermany"}]
    # the paper's sources annotate the paper's tree; the collections' findings are unknown for them
    assert all(not (r.unknown & set(PAPER.label_names())) for r in paper)
    assert all({"Effusion", "Lung Opacity", "Pleural Effusion", "Chilaiditi Sign"} <= r.unknown for r in paper)
    assert all(not (r.labels & r.unknown) for r in ds.records)  # a positive label is never unknown
    nih_normal = next(r for r in ds.records if r.filename.endswith("00000002_000.png"))
    assert "Lung Opacity" in nih_normal.unknown and "COVID-19" not in nih_normal.unknown


def test_keep_labels_and_max_patients_select_adult_normals(tmp_path):
    nih = str(make_nih(tmp_path / "nih"))
    cfg = DataConfig(sources=[nih, "@sample"], keep_labels={"nih": ["No Finding"]})
    ds = load_dataset(cfg=cfg)
    assert [Path(r.filename).name for r in ds.records if r.source == "nih"] == ["00000002_000.png"]
    assert len([r for r in ds.records if r.source == "kermany"]) == 30  # other sources are kept whole
    assert any("4 image(s) not positive for No Finding left out" in n for n in ds.notes)
    capped = load_dataset(cfg=DataConfig(sources=[nih], max_patients={"nih": 2}))
    assert len(capped.patients) == 2
    again = load_dataset(cfg=DataConfig(sources=[nih], max_patients={"nih": 2}))
    assert capped.patients == again.patients  # the same patients every time
    with pytest.raises(ValueError, match="at least 1"):
        DataConfig(max_patients={"nih": 0})


@pytest.mark.parametrize(
    ("raw", "years"),
    [("58", "58"), ("58.0", "58"), ("058Y", "58"), ("006M", "0.5"), ("0", ""), ("", ""), ("414", ""), ("n/a", "")],
)
def test_age_spellings(raw, years):
    assert normal_age(raw) == years
