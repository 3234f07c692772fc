import pytest

from cxrlens.config import DataConfig
from cxrlens.data.sources import load_dataset
from cxrlens.data.summary import summarize
from cxrlens.errors import DataError


def test_summary_of_the_sample():
    cfg = DataConfig(sources=["@sample"])
    s = summarize(load_dataset(cfg=cfg), cfg)
    assert s["images"] == 51 and s["patients"] == 48
    assert s["labels"]["Pneumonia"] == s["labels"]["Viral Pneumonia"] + s["labels"]["Bacterial Pneumonia"] + 2
    assert set(s["rare_labels"]) == {"ARDS", "Fungal Pneumonia", "Pneumocystis"}
    assert s["sources"]["kermany"]["images"] == 30
    assert s["image_sizes"]["width"]["max"] <= 512
    assert s["problems"] == []


def test_summary_finds_bad_images(tiny_data):
    (tiny_data / "images" / "img005.png").write_bytes(b"")
    cfg = DataConfig(sources=[str(tiny_data)])
    with pytest.raises(DataError, match=r"img005\.png: empty file"):
        summarize(load_dataset(cfg=cfg), cfg)
    cfg = DataConfig(sources=[str(tiny_data)], skip_bad=True)
    s = summarize(load_dataset(cfg=cfg), cfg)
    assert s["images"] == 23 and s["skipped"] == 1


def test_summary_says_which_source_annotates_which_label(tmp_path):
    from tests.data.collection_files import make_chexpert, make_nih, make_padchest, make_rsna

    sources = [make_nih(tmp_path / "nih"), make_chexpert(tmp_path / "chexpert"), make_rsna(tmp_path / "rsna"),
               make_padchest(tmp_path / "padchest")]  # fmt: skip
    cfg = DataConfig(sources=[*map(str, sources), "@sample"], labels={"preset": "paper14"})
    s = summarize(load_dataset(cfg=cfg), cfg)  # every header read: PNG, JPEG, 16-bit PNG and DICOM
    assert s["problems"] == [] and s["image_sizes"]["width"]["min"] == 64
    assert s["sources"]["nih"] == {"images": 5, "patients": 4} and s["sources"]["rsna"]["images"] == 4
    table = s["annotation"]
    assert table["nih"]["ARDS"] == {"positive": 0, "negative": 0, "unknown": 5}
    assert table["nih"]["Pneumonia"] == {"positive": 1, "negative": 4, "unknown": 0}
    assert table["nih"]["COVID-19"] == {"positive": 0, "negative": 4, "unknown": 1}  # unknown under a pneumonia
    assert table["chexpert"]["Cardiomegaly"] == {"positive": 1, "negative": 3, "unknown": 1}  # one uncertain
    assert table["kermany"]["Effusion"] == {"positive": 0, "negative": 0, "unknown": 30}
    assert table["kermany"]["No Finding"]["unknown"] == 0
    # findings outside the chosen (paper14) labels are counted, not dropped
    assert s["outside_label_space"]["Cardiomegaly"] == 3 and "Lung Opacity" in s["outside_label_space"]
    assert s["images_without_label_in_space"] > 0
    assert s["unknown_labels"]["ARDS"] > 0
    assert s["label_policy"] == {"tree": None, "uncertain": "ignore", "unmentioned": "negative"}


def test_summary_of_the_paper_data_has_nothing_unknown():
    cfg = DataConfig(sources=["@sample"])
    s = summarize(load_dataset(cfg=cfg), cfg, check_images=False)
    assert s["unknown_labels"] == {}
    assert all(c["unknown"] == 0 for labels in s["annotation"].values() for c in labels.values())
