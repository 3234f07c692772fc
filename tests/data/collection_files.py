"""Tiny copies of the public collections, written in their published formats (columns, separators, paths, codes).

Each ``make_*`` writes the label files as the collection ships them and small images (PNG, JPEG, 16-bit PNG,
DICOM) where they would be, and returns the folder to give as ``--data``.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import save_png, xray_like


def save_jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=90)
    return path


def save_png16(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (xray_like(64, 64, seed=seed).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(array).save(path)  # mode I;16, as PadChest's PNGs
    return path


def save_dicom(path: Path, seed: int, view: str, sex: str, age: str) -> Path:
    """An 8-bit MONOCHROME2 radiograph with RSNA's header fields (PatientID, sex, age, ViewPosition)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture, as RSNA's files
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = path.stem
    ds.PatientSex = sex
    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # RSNA writes "51", not "051Y"
    try:
        ds.PatientAge = age
    finally:
        pydicom.config.settings.reading_validation_mode = mode
    ds.ViewPosition = view
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    pixels = xray_like(64, 64, seed=seed)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rows(path: Path, header: list[str], rows: list[list[str]], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# -- NIH ChestX-ray14 ----------------------------------------------------------------------------------------------
# The header as released: the bracketed names hold unquoted commas and every line ends with one.
NIH_CSV = """\
Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,\
OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171,
00000003_000.png,Effusion|Infiltration,0,3,74,F,AP,2500,2048,0.168,0.168,
00000004_000.png,Pleural_Thickening|Pneumonia,0,4,82,M,AP,2048,2500,0.168,0.168,
00000005_000.png,No Finding,0,5,069Y,F,PA,2048,2500,0.168,0.168,
"""


def make_nih(root: Path) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text(NIH_CSV, encoding="utf-8")
    for i, name in enumerate(["00000001_000.png", "00000001_001.png", "00000002_000.png"]):
        save_png(root / "images_001" / "images" / name, xray_like(64, 64, seed=i))
    save_png(root / "images_002" / "images" / "00000003_000.png", xray_like(64, 64, seed=3))
    save_png(root / "images_002" / "images" / "00000004_000.png", xray_like(64, 64, seed=4))
    # 00000005_000.png is listed but not here: a partial copy of the 12 archives
    return root


# -- CheXpert ------------------------------------------------------------------------------------------------------
CHEXPERT_HEADER = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly",
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip


def chexpert_row(path: str, sex: str, age: str, fl: str, appa: str, **values: str) -> list[str]:
    row = dict.fromkeys(CHEXPERT_HEADER, "")
    row.update({"Path": path, "Sex": sex, "Age": age, "Frontal/Lateral": fl, "AP/PA": appa})
    row.update({k.replace("_", " "): v for k, v in values.items()})
    return [row[c] for c in CHEXPERT_HEADER]


def make_chexpert(root: Path) -> Path:
    """``root/CheXpert-v1.0-small/{train.csv,valid.csv,train/...,valid/...}`` as unpacked."""
    release = root / "CheXpert-v1.0-small"
    p = "CheXpert-v1.0-small/train"
    train = [
        chexpert_row(f"{p}/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP",
                     No_Finding="1.0", Pneumothorax="0.0", Support_Devices="1.0"),
        chexpert_row(f"{p}/patient00002/study2/view1_frontal.jpg", "Female", "87", "Frontal", "AP",
                     Cardiomegaly="-1.0", Lung_Opacity="1.0", Edema="-1.0", Consolidation="-1.0",
                     Atelectasis="-1.0", Pleural_Effusion="-1.0", Fracture="1.0"),
        chexpert_row(f"{p}/patient00002/study1/view1_frontal.jpg", "Female", "83", "Frontal", "AP",
                     Lung_Opacity="1.0", Pneumonia="1.0", Fracture="1.0"),
        chexpert_row(f"{p}/patient00002/study1/view2_lateral.jpg", "Female", "83", "Lateral", "",
                     Lung_Opacity="1.0", Fracture="1.0"),
        chexpert_row(f"{p}/patient00003/study1/view1_frontal.jpg", "Male", "0", "Frontal", "PA",
                     Edema="1.0", Pneumothorax="0.0"),
    ]  # fmt: skip
    zeros = {c.replace(" ", "_"): "0.0" for c in CHEXPERT_HEADER[5:]}
    valid = [
        chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal",
                     "AP", **{**zeros, "Enlarged_Cardiomediastinum": "1.0", "Cardiomegaly": "1.0",
                              "Lung_Opacity": "1.0", "Support_Devices": "1.0"}),
    ]  # fmt: skip
    write_rows(release / "train.csv", CHEXPERT_HEADER, train)
    write_rows(release / "valid.csv", CHEXPERT_HEADER, valid)
    for i, row in enumerate(train + valid):
        save_jpeg(root / row[0], xray_like(64, 64, seed=10 + i))
    return root


# -- MIMIC-CXR-JPG -------------------------------------------------------------------------------------------------
MIMIC_META_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
MIMIC_LABEL_HEADER = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
MIMIC_IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", "21800506", "postero-anterior"),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", "21800506", "lateral"),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "PA", "21800626", "postero-anterior"),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000032", "53911762", "AP", "21800723", "antero-posterior"),
    ("ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", "10000764", "57375967", "AP", "21321015", "antero-posterior"),
    ("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "10000898", "50771383", "PA", "21200827", "postero-anterior"),
]


def mimic_labels(subject: str, study: str, **values: str) -> list[str]:
    row = dict.fromkeys(MIMIC_LABEL_HEADER, "")
    row.update({"subject_id": subject, "study_id": study})
    row.update({k.replace("_", " "): v for k, v in values.items()})
    return [row[c] for c in MIMIC_LABEL_HEADER]


def make_mimic(root: Path) -> Path:
    """``mimic-cxr-2.0.0-{metadata,chexpert}.csv.gz`` + ``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    meta = [
        [d, subject, study, "CHEST (PA AND LAT)", view, "3056", "2544", date, "213014.531", "CHEST (PA AND LAT)",
         code, "Erect"]
        for d, subject, study, view, date, code in MIMIC_IMAGES
    ]  # fmt: skip
    write_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META_HEADER, meta, gz=True)
    labels = [
        mimic_labels("10000032", "50414267", No_Finding="1.0"),
        mimic_labels("10000032", "53189527", No_Finding="1.0"),
        mimic_labels("10000032", "53911762", Atelectasis="-1.0", Lung_Opacity="1.0", Pleural_Effusion="0.0"),
        mimic_labels("10000764", "57375967", Consolidation="1.0", Pneumonia="-1.0"),
        # study 50771383 of 10000898 has no label row
    ]
    write_rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_HEADER, labels, gz=True)
    for i, (d, subject, study, view, _, _) in enumerate(MIMIC_IMAGES):
        if view != "LATERAL":
            save_jpeg(
                root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{d}.jpg", xray_like(64, 64, i)
            )
    return root


# -- PadChest ------------------------------------------------------------------------------------------------------
PADCHEST_HEADER = [
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
]  # fmt: skip
PADCHEST_IMAGES = [
    # ImageID, ImageDir, date, patient, birth, sex, dicom view, projection, Labels
    ("216840111366964012339356563862009072111404053_00-043-192.png", "0", "20090811", "16407", "1930.0", "M",
     "POSTEROANTERIOR", "PA", "['normal']"),
    ("216840111366964012373310883942009117084022290_00-064-025.png", "0", "20090427", "24816", "1960.0", "F",
     "PA", "PA", "['pneumonia', ' infiltrates']"),
    ("216840111366964012373310883942009152114636712_00-102-045.png", "1", "20090601", "24816", "1960.0", "F",
     "AP", "AP_horizontal", "['pleural effusion', 'COPD signs', 'unchanged']"),
    ("216840111366964012283393834152009033102258826_00-059-087.png", "1", "20090302", "31222", "1944.0", "M",
     "LATERAL", "L", "['pleural effusion']"),
    ("216840111366964012558082906712009327122220177_00-102-064.png", "2", "20091123", "40102", "1971.0", "M",
     "PA", "PA", "['exclude']"),
    ("216840111366964012819207061112010307142602253_04-014-084.png", "2", "20101103", "40103", "1985.0", "O",
     "PA", "PA", ""),
]  # fmt: skip


def make_padchest(root: Path) -> Path:
    """``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` + ``<ImageDir>/<ImageID>`` 16-bit PNGs."""
    rows = []
    for i, (image, folder, date, patient, birth, sex, dview, proj, labels) in enumerate(PADCHEST_IMAGES):
        values = dict.fromkeys(PADCHEST_HEADER, "")
        values.update({
            "ImageID": image, "ImageDir": folder, "StudyDate_DICOM": date, "StudyID": f"{i}{patient}",
            "PatientID": patient, "PatientBirth": birth, "PatientSex_DICOM": sex, "ViewPosition_DICOM": dview,
            "Projection": proj, "MethodProjection": "Manual review of DICOM fields", "Pediatric": "No",
            "Modality_DICOM": "CR", "Manufacturer_DICOM": "PhilipsMedicalSystems", "BitsStored_DICOM": "12",
            "ReportID": str(4000 + i), "Report": "sin hallazgos, patologicos.", "MethodLabel": "Physician",
            "Labels": labels, "Localizations": "[]", "LabelsLocalizationsBySentence": f"[{labels}]",
        })  # fmt: skip
        rows.append([values[c] for c in PADCHEST_HEADER])
        save_png16(root / folder / image, seed=20 + i)
    write_rows(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", PADCHEST_HEADER, rows)
    return root


# -- RSNA Pneumonia Detection Challenge ----------------------------------------------------------------------------
RSNA_LABELS = """\
patientId,x,y,width,height,Target
0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0
00313ee0-9eaa-42f4-b0ab-c148ed3241cd,,,,,0
003d8fa0-6bf1-40ed-b54c-ac657f8495c5,,,,,0
00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1
00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1
"""
RSNA_CLASSES = """\
patientId,class
0004cfab-14fd-4e49-80ba-63a80b6bddd6,No Lung Opacity / Not Normal
00313ee0-9eaa-42f4-b0ab-c148ed3241cd,No Lung Opacity / Not Normal
003d8fa0-6bf1-40ed-b54c-ac657f8495c5,Normal
00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity
00436515-870c-4b36-a041-de91049b9ab4,Lung Opacity
"""
RSNA_HEADERS = {  # patientId -> (ViewPosition, PatientSex, PatientAge) in its DICOM
    "0004cfab-14fd-4e49-80ba-63a80b6bddd6": ("PA", "F", "51"),
    "00313ee0-9eaa-42f4-b0ab-c148ed3241cd": ("PA", "F", "48"),
    "003d8fa0-6bf1-40ed-b54c-ac657f8495c5": ("AP", "M", "19"),
    "00436515-870c-4b36-a041-de91049b9ab4": ("AP", "F", "32"),
}


def make_rsna(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage_2_train_labels.csv").write_text(RSNA_LABELS, encoding="utf-8")
    (root / "stage_2_detailed_class_info.csv").write_text(RSNA_CLASSES, encoding="utf-8")
    for i, (patient, (view, sex, age)) in enumerate(RSNA_HEADERS.items()):
        save_dicom(root / "stage_2_train_images" / f"{patient}.dcm", 30 + i, view, sex, age)
    return root


# -- COVIDx --------------------------------------------------------------------------------------------------------
COVIDX_TRAIN = """\
5 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg pneumonia cohen
419639-001251 MIDRC-RICORD-1C-419639-001251-39795-0.png COVID-19 ricord
419639-001251 MIDRC-RICORD-1C-419639-001251-46647-0.png COVID-19 ricord
8a8b1c7b-94a8-4f26-a8e4-b3b7f3ccbd26 8a8b1c7b-94a8-4f26-a8e4-b3b7f3ccbd26.png normal rsna
"""
COVIDX_TEST = """\
419639-000082 MIDRC-RICORD-1C-419639-000082-24542-0.png positive ricord
00f59ab6-7f37-4bd8-9fa3-8d8c1d7e8bbb 00f59ab6-7f37-4bd8-9fa3-8d8c1d7e8bbb.png negative rsna
"""


def make_covidx(root: Path) -> Path:
    """``train.txt`` (three classes, COVIDx9A style) and ``test.txt`` (positive/negative, later versions)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text(COVIDX_TRAIN, encoding="utf-8")
    (root / "test.txt").write_text(COVIDX_TEST, encoding="utf-8")
    for split, text in (("train", COVIDX_TRAIN), ("test", COVIDX_TEST)):
        for i, line in enumerate(text.splitlines()):
            save_png(root / split / line.split()[1], xray_like(64, 64, seed=40 + i + len(split)))
    return root
