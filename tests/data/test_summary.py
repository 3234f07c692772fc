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
