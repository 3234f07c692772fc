"""PadChest (BIMCV): ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``).

Columns used: ``ImageID, ImageDir, PatientID, Projection, ViewPosition_DICOM, PatientSex_DICOM, PatientBirth,
StudyDate_DICOM, Labels``; ``Labels`` is a Python-list-like string (``['normal']``,
``['pneumonia', 'infiltrates']``). Images are ``<ImageDir>/<ImageID>`` (16-bit PNG) below the CSV's folder (or
flat beside it). ``Projection`` codes: PA, AP, ``AP_horizontal`` (lying: read as ``AP Supine``), L, COSTAL, ...
(``ViewPosition_DICOM`` when Projection is UNK). Age is the study year less the birth year. Annotates its
findings and differential diagnoses (and any other term its file uses); ``exclude`` rows are dropped, and
``unchanged`` / ``suboptimal study`` are not findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import ReadContext, Source, finding_text, iter_csv_rows, normal_sex, note_missing
from cxrlens.data.readers.vocabularies import PADCHEST_NOT_FINDINGS, display_name, vocabulary
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

REQUIRED = ("ImageID", "ImageDir", "PatientID", "Labels")
USED = (*REQUIRED, "Projection", "ViewPosition_DICOM", "PatientSex_DICOM", "PatientBirth", "StudyDate_DICOM")
_SEPARATORS = re.compile(r"[/;,]")  # not in node names: they separate findings and paths
_TERM = re.compile(r"'([^']*)'|\"([^\"]*)\"")
CSV_GLOB = "PADCHEST_chest_x_ray_images_labels_160K*.csv*"
PROJECTIONS = {"AP_HORIZONTAL": "AP Supine"}
DICOM_VIEWS = {"POSTEROANTERIOR": "PA", "PA": "PA", "ANTEROPOSTERIOR": "AP", "AP": "AP", "LATERAL": "L", "LL": "L"}


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header)


def find(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob(CSV_GLOB) if p.name.endswith((".csv", ".csv.gz")))
    return found[0] if found else None


def parse_labels(text: str) -> list[str] | None:
    """``['pneumonia', ' infiltrates']`` -> ["pneumonia", "infiltrates"]; None when there is no list."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return None
    items = [single or double for single, double in _TERM.findall(text)]
    return [_SEPARATORS.sub(" ", item).strip() for item in items if item.strip()]


def padchest_view(projection: str, dicom_view: str) -> str:
    code = projection.strip()
    if code.upper() in PROJECTIONS:
        return PROJECTIONS[code.upper()]
    if code and code.upper() not in {"UNK", "UNKNOWN"}:
        return code
    return DICOM_VIEWS.get(dicom_view.strip().upper(), code)


def age_at(study_date: str, birth_year: str) -> str:
    try:
        age = int(study_date.strip()[:4]) - int(float(birth_year))
    except ValueError:
        return ""
    return str(age) if 0 <= age <= 120 else ""


@dataclass(frozen=True)
class _Row:
    line: int
    image: str
    folder: str
    patient: str
    view: str
    sex: str
    age: str
    date: str
    terms: tuple[str, ...] | None


class PadChestCsv(Source):
    layout = "padchest"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        header, rows = iter_csv_rows(location, USED)
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(f"{location}: missing required column(s) {', '.join(missing)}")
        self.rows = [self._row(line, row) for line, row in rows]
        self._listings: dict[Path, frozenset[str]] = {}

    @staticmethod
    def _row(line: int, row: dict[str, str]) -> _Row:
        terms = parse_labels(row["Labels"])
        date = row.get("StudyDate_DICOM", "")
        folder = row["ImageDir"]
        return _Row(
            line=line,
            image=row["ImageID"],
            folder=folder[:-2] if folder.endswith(".0") else folder,
            patient=row["PatientID"],
            view=padchest_view(row.get("Projection", ""), row.get("ViewPosition_DICOM", "")),
            sex=normal_sex(row.get("PatientSex_DICOM", "")),
            age=age_at(date, row.get("PatientBirth", "")),
            date=f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date,
            terms=None if terms is None else tuple(terms),
        )

    @property
    def vocabulary(self) -> list[str]:
        found = {t.lower() for row in self.rows for t in (row.terms or ()) if t.lower() not in PADCHEST_NOT_FINDINGS}
        static = vocabulary("padchest")
        known = {name.lower() for name in static}
        return [*static, *sorted(display_name(t) for t in found if t not in known)]

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        csv_path, root = self.location, self.base
        annotated = ctx.nodes(self.vocabulary)
        records: list[ImageRecord] = []
        dropped = {"not a frontal view": 0, "not labelled": 0, "marked exclude": 0, "no finding term": 0}
        missing = listed = 0
        for row in self.rows:
            where = f"{csv_path.name}:{row.line}"
            if not ctx.kept_view(row.view):
                dropped["not a frontal view"] += 1
                continue
            if row.terms is None:
                dropped["not labelled"] += 1
                continue
            lowered = [t.lower() for t in row.terms]
            if "exclude" in lowered:
                dropped["marked exclude"] += 1
                continue
            terms = sorted({display_name(t) for t in row.terms if t.lower() not in PADCHEST_NOT_FINDINGS})
            if not terms:
                dropped["no finding term"] += 1
                continue
            listed += 1
            path = self._image(root, row)
            if path is None:
                missing += 1
                continue
            record = ctx.record(
                finding_text(terms),
                where,
                annotated,
                path=path,
                filename=path.relative_to(root).as_posix(),
                patient_id=f"padchest-{row.patient}",
                source="padchest",
                view=row.view,
                sex=row.sex,
                age=row.age,
                date=row.date,
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        note_missing(ctx, csv_path, missing, listed)
        return records

    def _image(self, root: Path, row: _Row) -> Path | None:
        """``<ImageDir>/<ImageID>``, else ``<ImageID>`` beside the CSV (each folder listed once, not a stat a row)."""
        if "/" in row.image or "\\" in row.image or row.image in {"", ".", ".."}:
            return None
        folder = row.folder if re.fullmatch(r"\w+", row.folder or "") else ""
        for where in (folder, "") if folder else ("",):
            if row.image in self._listing(root / where if where else root):
                return (root / where / row.image) if where else root / row.image
        return None

    def _listing(self, folder: Path) -> frozenset[str]:
        names = self._listings.get(folder)
        if names is None:
            names = frozenset(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else frozenset()
            self._listings[folder] = names
        return names
