"""The three layouts, combined sources, and every bad-table case."""

import numpy as np
import pytest

from cxrlens.config import DataConfig
from cxrlens.data.sources import kermany_patient, load_dataset
from cxrlens.errors import DataError
from tests.conftest import make_dataset, save_png, write_csv, xray_like


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def test_our_csv_layout(tiny_data):
    ds = load_dataset([str(tiny_data)])
    assert len(ds) == 24 and len(ds.patients) == 24
    rec = ds.records[1]
    assert rec.labels == {"Pneumonia", "Viral Pneumonia", "COVID-19"}
    assert rec.path.is_file() and rec.filename == "images/img001.png"


def make_cohen(root):
    header = [
        "patientid",
        "offset",
        "sex",
        "age",
        "finding",
        "view",
        "modality",
        "date",
        "location",
        "folder",
        "filename",
        "license",
    ]
    rows = [
        ["1", "0", "M", "60", "COVID-19", "PA", "X-ray", "2020", "x", "images", "a.png", "CC BY"],
        ["1", "5", "M", "60", "COVID-19, ARDS", "AP Supine", "X-ray", "2020", "x", "images", "b.png", ""],
        ["2", "", "F", "50", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "", "", "images", "c.png", ""],
        ["3", "", "F", "50", "Streptococcus", "L", "X-ray", "", "", "images", "d.png", ""],
        ["4", "", "F", "50", "COVID-19", "Axial", "CT", "", "", "volumes", "e.nii.gz", ""],
        ["5", "", "F", "50", "todo", "PA", "X-ray", "", "", "images", "f.png", ""],
        ["6", "", "F", "50", "No Finding", "AP", "X-ray", "", "", "images", "g.png", ""],
    ]
    for i, name in enumerate("abcdfg"):
        save_png(root / "images" / f"{name}.png", xray_like(64, 64, seed=i))
    write_csv(root / "metadata.csv", header, rows)
    return root


def test_cohen_native_layout_keeps_frontal_xrays_and_maps_both_label_styles(tmp_path):
    ds = load_dataset([str(make_cohen(tmp_path / "cohen"))])
    by = ds.by_filename()
    assert sorted(by) == ["images/a.png", "images/b.png", "images/c.png", "images/g.png"]
    assert by["images/b.png"].labels == {"Pneumonia", "Viral Pneumonia", "COVID-19", "ARDS"}
    assert by["images/c.png"].labels == {"Pneumonia", "Bacterial Pneumonia", "Streptococcus"}
    assert by["images/a.png"].patient_id == by["images/b.png"].patient_id == "cohen-1"
    assert by["images/b.png"].offset == "5"
    notes = " ".join(ds.notes)
    assert "not an X-ray" in notes and "not a frontal view" in notes and "not yet labelled" in notes


def make_kermany(root):
    names = {
        "train/NORMAL": ["IM-0117-0001.jpeg", "NORMAL2-IM-1427-0001.jpeg", "IM-0117-0002.jpeg"],
        "train/PNEUMONIA": ["person1_virus_6.jpeg", "person1_bacteria_1.jpeg", "person22_bacteria_74.jpeg"],
        "test/PNEUMONIA": ["person100_virus_184.jpeg"],
    }
    for folder, files in names.items():
        for i, name in enumerate(files):
            save_png(root / "chest_xray" / folder / name, xray_like(64, 72, seed=i))
    return root


def test_kermany_folder_layout(tmp_path):
    ds = load_dataset([str(make_kermany(tmp_path / "kermany"))])
    by = {r.filename.rsplit("/", 1)[1]: r for r in ds.records}
    assert by["person1_virus_6.jpeg"].labels == {"Pneumonia", "Viral Pneumonia"}
    assert by["person1_bacteria_1.jpeg"].labels == {"Pneumonia", "Bacterial Pneumonia"}
    assert by["IM-0117-0001.jpeg"].labels == {"No Finding"}
    assert by["person1_virus_6.jpeg"].patient_id == by["person1_bacteria_1.jpeg"].patient_id
    assert by["IM-0117-0001.jpeg"].patient_id == by["IM-0117-0002.jpeg"].patient_id == "kermany-IM-0117"
    assert by["NORMAL2-IM-1427-0001.jpeg"].patient_id == "kermany-IM-1427"
    assert len(ds) == 7


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1_virus_6.jpeg", "kermany-person1"),
        ("NORMAL2-IM-0012-0001.jpeg", "kermany-IM-0012"),
        ("scan.png", None),
    ],
)
def test_kermany_patient_ids(name, patient):
    assert kermany_patient(name) == patient


def test_sources_combine_into_one_table(tmp_path):
    ds = load_dataset(
        [
            str(make_cohen(tmp_path / "cohen")),
            str(make_kermany(tmp_path / "kermany")),
            str(make_dataset(tmp_path / "ours", n=4)),
        ]
    )
    assert len(ds) == 4 + 7 + 4
    names = {r.filename for r in ds.records}
    assert "cohen/images/a.png" in names and "ours/images/img000.png" in names
    assert all((ds.root / r.filename).is_file() for r in ds.records)
    assert {r.source for r in ds.records} >= {"cohen", "kermany"}


def test_embedded_sample_loads():
    ds = load_dataset(["@sample"])
    assert 40 <= len(ds) <= 60
    labels = set().union(*(r.labels for r in ds.records))
    assert {"No Finding", "Viral Pneumonia", "Bacterial Pneumonia", "COVID-19", "Pneumocystis", "ARDS"} <= labels
    assert any(r.lung_mask is not None for r in ds.records)
    assert {r.license for r in ds.records} <= {"CC BY", "CC BY 3.0", "CC BY 4.0", "CC BY-SA"}


# -- bad tables: each stops with a clear message naming the file/row, or is skipped and counted --------

HEADER = ["filename", "patient_id", "finding"]


def _folder(tmp_path, rows, header=HEADER, encoding="utf-8"):
    root = tmp_path / "bad"
    for i in range(3):
        save_png(root / "images" / f"ok{i}.png", xray_like(64, 64, seed=i))
    good = [[f"images/ok{i}.png", f"p{i}", "No Finding"] for i in range(3)]
    write_csv(root / "metadata.csv", header, good + rows, encoding=encoding)
    return root


BAD_ROWS = {
    "missing file": ([["images/gone.png", "p9", "No Finding"]], "metadata.csv:5: image file not found"),
    "escapes folder": ([["../../etc/passwd", "p9", "No Finding"]], "metadata.csv:5: filename '../../etc/passwd'"),
    "absolute path": ([["/etc/passwd", "p9", "No Finding"]], "outside the data folder"),
    "windows drive path": ([["C:\\Windows\\win.ini", "p9", "No Finding"]], "outside the data folder"),
    "windows escape": ([["..\\..\\etc\\passwd", "p9", "No Finding"]], "outside the data folder"),
    "duplicate row": ([["images/ok1.png", "p1", "No Finding"]], "duplicate row: images/ok1.png"),
    "unknown finding": ([["images/ok0.png", "p0", "Covid-20"]], "unknown finding"),
    "empty patient": ([["images/ok2.png", "", "No Finding"]], "empty patient_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_stop_or_are_skipped(tmp_path, case):
    rows, message = BAD_ROWS[case]
    root = _folder(tmp_path, rows)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset([str(root)])
    ds = load_dataset(cfg=cfg(sources=[str(root)], skip_bad=True))
    assert len(ds) == 3 and len(ds.problems) == 1


def test_csv_not_utf8(tmp_path):
    root = _folder(tmp_path, [["images/ok0.png", "pé", "No Finding"]], encoding="latin-1")
    with pytest.raises(DataError, match=r"metadata.csv: not UTF-8 \(invalid byte 0xe9 on line 5\)"):
        load_dataset([str(root)])


def test_csv_missing_required_column(tmp_path):
    root = _folder(tmp_path, [], header=["filename", "finding", "patient"])
    with pytest.raises(DataError, match="missing required column"):
        load_dataset([str(root)])


def test_unknown_findings_are_listed_together_and_can_be_mapped(tmp_path):
    rows = [["images/ok0.png", "p7", "Covid-20"], ["images/ok1.png", "p8", "Flu"]]
    root = tmp_path / "u"
    for i in range(2):
        save_png(root / "images" / f"ok{i}.png", xray_like(64, 64, seed=i))
    write_csv(root / "metadata.csv", HEADER, rows)
    with pytest.raises(DataError, match=r"'Covid-20' .*'Flu'"):
        load_dataset([str(root)])
    mapped = DataConfig(sources=[str(root)], labels={"aliases": {"Covid-20": "COVID-19", "Flu": "Influenza"}})
    ds = load_dataset(cfg=mapped)
    assert "Influenza" in ds.records[1].labels


def test_missing_source_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="data source not found"):
        load_dataset([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no metadata\.csv and no Kermany"):
        load_dataset([str(tmp_path / "empty")])


def test_undecodable_files_pass_the_table_stage(tmp_path):
    """Table loading checks paths; decoding problems surface in summary/prepare (tested in the CLI)."""
    root = _folder(tmp_path, [["images/fake.png", "p5", "No Finding"]])
    (root / "images" / "fake.png").write_bytes(b"not a png")
    assert len(load_dataset([str(root)])) == 4
    assert np.all([r.path.is_file() for r in load_dataset([str(root)]).records])


def test_windows_separators_in_a_csv_are_understood(tmp_path):
    root = tmp_path / "win"
    save_png(root / "images" / "a.png", xray_like(64, 64))
    write_csv(root / "metadata.csv", HEADER, [["images\\a.png", "p1", "No Finding"]])
    ds = load_dataset([str(root)])
    assert ds.records[0].path == root / "images" / "a.png"
