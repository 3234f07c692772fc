import numpy as np
import pytest

from cxrlens.data.labels import PAPER14, Hierarchy, LabelSpace, choose_labels
from cxrlens.errors import LabelError

H = Hierarchy.build()


def test_paper14_preset_is_the_papers_list_in_order():
    space, _ = choose_labels([], preset="paper14", min_images=0)
    assert space.names == PAPER14
    assert list(space.names) == [
        "ARDS",
        "Bacterial Pneumonia",
        "COVID-19",
        "Chlamydophila",
        "Fungal Pneumonia",
        "Klebsiella",
        "Legionella",
        "MERS",
        "No Finding",
        "Pneumocystis",
        "Pneumonia",
        "SARS",
        "Streptococcus",
        "Viral Pneumonia",
    ]


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        ("Pneumonia/Viral/COVID-19", {"Pneumonia", "Viral Pneumonia", "COVID-19"}),
        ("Pneumonia/Viral/COVID-19;ARDS", {"Pneumonia", "Viral Pneumonia", "COVID-19", "ARDS"}),
        ("COVID-19, ARDS", {"Pneumonia", "Viral Pneumonia", "COVID-19", "ARDS"}),  # Cohen's older flat label
        ("COVID-19", {"Pneumonia", "Viral Pneumonia", "COVID-19"}),
        ("Streptococcus", {"Pneumonia", "Bacterial Pneumonia", "Streptococcus"}),
        ("Mycoplasma Bacterial Pneumonia", {"Pneumonia", "Bacterial Pneumonia", "Mycoplasma"}),
        ("Pneumocystis", {"Pneumonia", "Fungal Pneumonia", "Pneumocystis"}),
        ("E.Coli", {"Pneumonia", "Bacterial Pneumonia", "E.Coli"}),  # the published code gave all zeros
        ("ARDS", {"ARDS"}),  # not a pneumonia (the published code counted it as one)
        ("No Finding", {"No Finding"}),
        ("Pneumonia/Lipoid", {"Pneumonia", "Lipoid Pneumonia"}),
        ("Viral Pneumonia", {"Pneumonia", "Viral Pneumonia"}),
        ("Pneumonia/Bacterial/Staphylococcus/MRSA", {"Pneumonia", "Bacterial Pneumonia", "Staphylococcus", "MRSA"}),
        ("MERS-CoV", {"Pneumonia", "Viral Pneumonia", "MERS"}),
    ],
)
def test_findings_resolve_with_every_ancestor(finding, expected):
    assert H.resolve(finding) == expected


def test_unknown_finding_is_a_clear_error():
    with pytest.raises(LabelError, match="unknown finding 'Covid-20'"):
        H.resolve("Covid-20")
    with pytest.raises(LabelError, match="'COVID-19' is not under 'Bacterial'"):
        H.resolve("Pneumonia/Bacterial/COVID-19")


def test_config_can_map_or_extend_the_hierarchy():
    h = Hierarchy.build(extra_nodes={"Adenovirus": "Viral"}, aliases={"corona": "COVID-19"})
    assert h.resolve("Pneumonia/Viral/Adenovirus") == {"Pneumonia", "Viral Pneumonia", "Adenovirus"}
    assert "COVID-19" in h.resolve("corona")
    with pytest.raises(LabelError, match="parent 'Nowhere'"):
        Hierarchy.build(extra_nodes={"X": "Nowhere"})


def test_consistency_check_child_implies_parent():
    names = ["COVID-19", "Pneumonia", "Viral Pneumonia", "ARDS"]
    assert H.is_consistent(names, [1, 1, 1, 0])
    assert H.is_consistent(names, [0, 0, 0, 1])
    assert H.violations(names, [1, 1, 0, 0]) == ["COVID-19 without Viral Pneumonia"]
    matrix = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    assert H.consistency_rate(names, matrix) == pytest.approx(0.5)


def test_auto_labels_from_data_with_min_count():
    sets = [H.resolve("COVID-19")] * 12 + [H.resolve("Pneumocystis")] * 2 + [H.resolve("No Finding")] * 10
    space, rare = choose_labels(sets, preset="auto", min_images=10)
    assert space.names == ("COVID-19", "No Finding", "Pneumonia", "Viral Pneumonia")
    assert rare == {"Fungal Pneumonia": 2, "Pneumocystis": 2}
    paper, rare14 = choose_labels(sets, preset="paper14", min_images=10)
    assert len(paper) == 14 and rare14["MERS"] == 0


def test_label_space_encode_and_errors():
    space = LabelSpace(("A", "B", "C"))
    assert space.encode({"C", "A", "Z"}).tolist() == [1, 0, 1]
    with pytest.raises(LabelError, match="unknown label 'D'; valid: A, B, C"):
        space.index("D")
    with pytest.raises(LabelError, match="unknown label preset"):
        choose_labels([], preset="paper15")
