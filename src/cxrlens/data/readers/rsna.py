"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` + ``stage_2_detailed_class_info.csv``.

``patientId,x,y,width,height,Target`` has one row per box (one row with blank box when there is none): Target 1
is a lung opacity suspicious for pneumonia, read as the label ``Lung Opacity`` (a tree file can alias it).
``patientId,class`` adds ``Normal`` (No Finding) vs ``No Lung Opacity / Not Normal``; without that file only
Lung Opacity is annotated. Images are ``stage_2_train_images/<patientId>.dcm`` (also .png/.jpg); the DICOM
header gives the view (``ViewPosition``), sex and age. Stage 1 file names are read too. The boxes are not used.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import (
    ReadContext,
    Source,
    finding_text,
    normal_age,
    normal_sex,
    note_missing,
    read_csv_rows,
)
from cxrlens.data.readers.vocabularies import RSNA
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

REQUIRED = ("patientId", "Target")
CLASS_REQUIRED = ("patientId", "class")
LABELS_GLOB = "stage_*_train_labels.csv"
NORMAL, OPACITY = "Normal", "Lung Opacity"
SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header) and "x" in header


def find(folder: Path) -> Path | None:
    found = sorted(folder.glob(LABELS_GLOB), reverse=True)  # stage 2 before stage 1
    return found[0] if found else None


def dicom_tags(path: Path) -> tuple[str, str, str]:
    """(view, sex, age) from a DICOM header; raises DataError when it is not readable."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition", "PatientSex", "PatientAge"])
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError) as err:
        raise DataError(f"not a readable DICOM file ({err})") from None
    return (
        str(ds.get("ViewPosition", "") or "").strip(),
        normal_sex(str(ds.get("PatientSex", "") or "")),
        normal_age(str(ds.get("PatientAge", "") or "")),
    )


class RsnaCsv(Source):
    layout = "rsna"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        stage = re.match(r"(stage_\d+)_", location.name)
        self.stage = stage.group(1) if stage else "stage_2"
        details = location.parent / f"{self.stage}_detailed_class_info.csv"
        self.details = details if details.is_file() else None

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return RSNA if self.details else RSNA[:1]

    def _classes(self) -> dict[str, str]:
        if self.details is None:
            return {}
        header, rows = read_csv_rows(self.details)
        missing = [c for c in CLASS_REQUIRED if c not in header]
        if missing:
            raise DataError(f"{self.details}: missing required column(s) {', '.join(missing)}")
        return {row["patientId"]: row["class"] for _, row in rows}

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        csv_path, root = self.location, self.base
        _, rows = read_csv_rows(csv_path)
        target: dict[str, int] = {}
        first_line: dict[str, int] = {}
        for line, row in rows:
            if row["Target"] not in {"0", "1"}:
                ctx.log.report(f"{csv_path.name}:{line}", f"Target is {row['Target']!r}; expected 0 or 1")
                continue
            patient = row["patientId"]
            target[patient] = max(target.get(patient, 0), int(row["Target"]))
            first_line.setdefault(patient, line)
        classes = self._classes()
        annotated = ctx.nodes(self.vocabulary)
        images = root / f"{self.stage}_train_images"
        records: list[ImageRecord] = []
        dropped = {"not a frontal view": 0}
        missing = 0
        for patient, value in target.items():
            where = f"{csv_path.name}:{first_line[patient]}"
            path = next((p for p in (images / f"{patient}{s}" for s in SUFFIXES) if p.is_file()), None)
            if path is None or "/" in patient or "\\" in patient:
                missing += 1
                continue
            view, sex, age = "", "", ""
            if path.suffix == ".dcm":
                try:
                    view, sex, age = dicom_tags(path)
                except DataError as err:
                    ctx.log.report(where, f"{path.name}: {err}")
                    continue
            if view and not ctx.kept_view(view):
                dropped["not a frontal view"] += 1
                continue
            positives = [OPACITY] if value else []
            if classes.get(patient) == NORMAL:
                positives.append("No Finding")
            record = ctx.record(
                finding_text(positives),
                where,
                annotated,
                path=path,
                filename=path.relative_to(root).as_posix(),
                patient_id=f"rsna-{patient}",
                source="rsna",
                view=view,
                sex=sex,
                age=age,
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        note_missing(ctx, csv_path, missing, len(target))
        return records
