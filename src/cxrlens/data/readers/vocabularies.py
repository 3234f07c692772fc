"""What each collection annotates: the findings its label files can say yes or no to.

A label of the tree outside an image's collection vocabulary is *unknown* for that image (never negative),
unless the tree implies it (a negative parent makes its children negative). Spellings are the collections' own;
:func:`display_name` gives PadChest's lower-case terms their capitals (``pleural effusion`` ->
``Pleural Effusion``), so identical findings of different collections meet in one node by name or alias.
"""

from __future__ import annotations

#: NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Finding Labels`` of ``Data_Entry_2017.csv`` ('_' read as ' ')
NIH = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "No Finding", "Nodule", "Pleural Thickening", "Pneumonia", "Pneumothorax",
)  # fmt: skip

#: the 14 observations of the CheXpert labeler (Irvin et al., AAAI 2019): CheXpert and MIMIC-CXR-JPG columns
CHEXPERT = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)  # fmt: skip

#: RSNA Pneumonia Detection Challenge: ``Target`` 1 is a lung opacity (``stage_2_train_labels.csv``); the
#: detailed class file adds Normal (No Finding) vs "No Lung Opacity / Not Normal"
RSNA = ("Lung Opacity", "No Finding")

#: COVIDx (v9A-style three classes); the binary files (positive/negative) annotate COVID-19 only
COVIDX = ("No Finding", "Pneumonia", "COVID-19")
COVIDX_BINARY = ("COVID-19",)

#: PadChest terms that are not findings: ``exclude`` rows are dropped; the others are not labels
PADCHEST_NOT_FINDINGS = frozenset({"exclude", "suboptimal study", "unchanged"})

#: PadChest (Bustos et al., Med Image Anal 2020): the radiographic findings and differential diagnoses of the
#: ``Labels`` column (193 terms less the three above)
PADCHEST = (
    "abnormal foreign body", "abscess", "adenopathy", "air bronchogram", "air fluid level", "air trapping",
    "alveolar pattern", "aortic aneurysm", "aortic atheromatosis", "aortic button enlargement",
    "aortic elongation", "aortic endoprosthesis", "apical pleural thickening", "artificial aortic heart valve",
    "artificial heart valve", "artificial mitral heart valve", "asbestosis signs", "ascendent aortic elongation",
    "atelectasis", "atelectasis basal", "atypical pneumonia", "axial hyperostosis", "azygoesophageal recess shift",
    "azygos lobe", "blastic bone lesion", "bone cement", "bone metastasis", "breast mass", "bronchiectasis",
    "bronchovascular markings", "bullas", "calcified adenopathy", "calcified densities", "calcified fibroadenoma",
    "calcified granuloma", "calcified mediastinal adenopathy", "calcified pleural plaques",
    "calcified pleural thickening", "callus rib fracture", "cardiomegaly", "catheter", "cavitation",
    "central vascular redistribution", "central venous catheter", "central venous catheter via jugular vein",
    "central venous catheter via subclavian vein", "central venous catheter via umbilical vein", "cervical rib",
    "chest drain tube", "Chilaiditi sign", "chronic changes", "clavicle fracture", "consolidation", "COPD signs",
    "costochondral junction hypertrophy", "costophrenic angle blunting", "cyst", "dai",
    "descendent aortic elongation", "dextrocardia", "diaphragmatic eventration", "double J stent",
    "dual chamber device", "electrical device", "emphysema", "empyema", "end on vessel", "endoprosthesis",
    "endotracheal tube", "esophagic dilatation", "external foreign body", "fibrotic band", "fissure thickening",
    "flattened diaphragm", "fracture", "gastrostomy tube", "goiter", "granuloma", "ground glass pattern",
    "gynecomastia", "heart insufficiency", "heart valve calcified", "hemidiaphragm elevation", "hiatal hernia",
    "hilar congestion", "hilar enlargement", "humeral fracture", "humeral prosthesis", "hydropneumothorax",
    "hyperinflated lung", "hypoexpansion", "hypoexpansion basal", "increased density", "infiltrates",
    "interstitial pattern", "kerley lines", "kyphosis", "laminar atelectasis", "lepidic adenocarcinoma",
    "lipomatosis", "lobar atelectasis", "loculated fissural effusion", "loculated pleural effusion",
    "lung metastasis", "lung vascular paucity", "lymphangitis carcinomatosa", "lytic bone lesion",
    "major fissure thickening", "mammary prosthesis", "mass", "mastectomy", "mediastinal enlargement",
    "mediastinal mass", "mediastinal shift", "mediastinic lipomatosis", "metal", "miliary opacities",
    "minor fissure thickening", "multiple nodules", "nephrostomy tube", "nipple shadow", "nodule",
    "non axial articular degenerative changes", "normal", "NSG tube", "obesity", "osteopenia", "osteoporosis",
    "osteosynthesis material", "pacemaker", "pectum carinatum", "pectum excavatum", "pericardial effusion",
    "pleural effusion", "pleural mass", "pleural plaques", "pleural thickening", "pneumomediastinum", "pneumonia",
    "pneumoperitoneo", "pneumothorax", "post radiotherapy changes", "prosthesis", "pseudonodule",
    "pulmonary artery enlargement", "pulmonary artery hypertension", "pulmonary edema", "pulmonary fibrosis",
    "pulmonary hypertension", "pulmonary mass", "pulmonary venous hypertension",
    "reservoir central venous catheter", "respiratory distress", "reticular interstitial pattern",
    "reticulonodular interstitial pattern", "rib fracture", "right sided aortic arch", "round atelectasis",
    "sclerotic bone lesion", "scoliosis", "segmental atelectasis", "single chamber device", "soft tissue mass",
    "sternoclavicular junction hypertrophy", "sternotomy", "subacromial space narrowing", "subcutaneous emphysema",
    "superior mediastinal enlargement", "supra aortic elongation", "surgery", "surgery breast", "surgery heart",
    "surgery humeral", "surgery lung", "surgery neck", "suture material", "thoracic cage deformation",
    "total atelectasis", "tracheal shift", "tracheostomy tube", "tuberculosis", "tuberculosis sequelae",
    "vascular hilar enlargement", "vascular redistribution", "ventriculoperitoneal drain tube",
    "vertebral anterior compression", "vertebral compression", "vertebral degenerative changes",
    "vertebral fracture", "volume loss",
)  # fmt: skip

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "nih": NIH,
    "chexpert": CHEXPERT,
    "mimic": CHEXPERT,
    "padchest": PADCHEST,
    "rsna": RSNA,
    "covidx": COVIDX,
}


def display_name(term: str) -> str:
    """A collection term with a capital at every word (kept capitals stay): ``COPD signs`` -> ``COPD Signs``."""
    return " ".join(word[:1].upper() + word[1:] for word in term.strip().split())


def vocabulary(source: str) -> tuple[str, ...]:
    """The display spellings a collection annotates (empty for an unknown source name)."""
    return tuple(display_name(term) for term in VOCABULARIES.get(source, ()))
