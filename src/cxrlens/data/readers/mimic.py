"""MIMIC-CXR-JPG: ``mimic-cxr-2.0.0-metadata.csv(.gz)`` + ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (or ``-negbio``).

The metadata has one row per image (``dicom_id, subject_id, study_id, ViewPosition, StudyDate, ...``), the
labels one row per study (``subject_id, study_id`` + CheXpert's 14 observations, same values and the same
``labels.uncertain`` / ``labels.unmentioned`` rules as CheXpert). Images are
``files/p10/p10000032/s50414267/<dicom_id>.jpg`` below the folder of the CSVs. The CheXpert labeler's file is
used when both are there. MIMIC-CXR-JPG has no age or sex (they are in MIMIC-IV).
"""

from __future__ import annotations

from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import ReadContext, Source, finding_text, iter_csv_rows, note_missing
from cxrlens.data.readers.chexpert import observations
from cxrlens.data.readers.vocabularies import CHEXPERT, vocabulary
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABEL_FILES = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-negbio.csv")
REQUIRED = ("dicom_id", "subject_id", "study_id", "ViewPosition")
USED = (*REQUIRED, "StudyDate")


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header)


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find(folder: Path) -> Path | None:
    return _existing(folder, METADATA)


def image_relative(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


class MimicCsv(Source):
    layout = "mimic"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        folder = location.parent
        found = [p for p in (_existing(folder, n) for n in LABEL_FILES) if p is not None]
        if not found:
            raise DataError(f"{location}: no {LABEL_FILES[0]}(.gz) or {LABEL_FILES[1]}(.gz) beside it (the labels)")
        self.labels_csv = found[0]

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return vocabulary("mimic")

    def _study_labels(self, ctx: ReadContext) -> dict[str, tuple[str, frozenset[str]]]:
        """study_id -> (finding, annotated nodes)."""
        header, rows = iter_csv_rows(self.labels_csv)
        if "study_id" not in header:
            raise DataError(f"{self.labels_csv}: missing required column study_id")
        columns = [c for c in CHEXPERT if c in header]
        nodes: dict[frozenset[str], frozenset[str]] = {}
        studies: dict[str, tuple[str, frozenset[str]]] = {}
        for line, row in rows:
            read = observations(row, columns, ctx.cfg.labels, f"{self.labels_csv.name}:{line}", ctx)
            if read is None:
                continue
            positives, annotated = read
            if annotated not in nodes:
                nodes[annotated] = ctx.nodes(annotated)
            studies[row["study_id"]] = (finding_text(positives), nodes[annotated])
        return studies

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        root, csv_path = self.base, self.location
        studies = self._study_labels(ctx)
        _, rows = iter_csv_rows(csv_path, USED)
        records: list[ImageRecord] = []
        dropped = {"not a frontal view": 0, "study without labels": 0}
        missing = listed = 0
        for line, row in rows:
            where = f"{csv_path.name}:{line}"
            view = row.get("ViewPosition", "")
            if not ctx.kept_view(view):
                dropped["not a frontal view"] += 1
                continue
            study = studies.get(row["study_id"])
            if study is None:
                dropped["study without labels"] += 1
                continue
            listed += 1
            relative = image_relative(row["subject_id"], row["study_id"], row["dicom_id"])
            path = root / relative
            if not path.is_file():
                missing += 1
                continue
            finding, annotated = study
            date = row.get("StudyDate", "")
            record = ctx.record(
                finding,
                where,
                annotated,
                path=path,
                filename=relative,
                patient_id=f"mimic-{row['subject_id']}",
                source="mimic",
                view=view,
                date=f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date,
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        note_missing(ctx, csv_path, missing, listed)
        return records
