"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or ``_v2020``) and the ``images*/`` folders.

Columns ``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender`` (``Patient Sex``
in v2020) ``, View Position, ...``; findings joined by ``|`` (``Effusion|Infiltration``, ``No Finding``).
The image files are found by name anywhere below the CSV's folder (``images_001/images/00000001_000.png`` as
unpacked from the archives, or a flat ``images/``). Annotates its 14 findings + No Finding.
"""

from __future__ import annotations

from pathlib import Path

from cxrlens.data.readers.base import (
    ReadContext,
    Source,
    finding_text,
    index_images,
    iter_csv_rows,
    normal_age,
    normal_sex,
    note_missing,
)
from cxrlens.data.readers.vocabularies import vocabulary
from cxrlens.data.records import ImageRecord

REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
USED = (*REQUIRED, "Patient Age", "Patient Gender", "Patient Sex", "View Position")
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header)


def find(folder: Path) -> Path | None:
    for name in CSV_NAMES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def findings(text: str) -> list[str]:
    """``Effusion|Pleural_Thickening`` -> ["Effusion", "Pleural Thickening"]."""
    return [part.strip().replace("_", " ") for part in text.split("|") if part.strip()]


class NihCsv(Source):
    layout = "nih"

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return vocabulary("nih")

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        csv_path, root = self.location, self.base
        _, lazy = iter_csv_rows(csv_path, USED)
        rows = list(lazy)
        index = index_images(root, {row["Image Index"] for _, row in rows})
        annotated = ctx.nodes(self.vocabulary)
        records: list[ImageRecord] = []
        dropped = {"not a frontal view": 0, "no finding labels": 0}
        missing = listed = 0
        for line, row in rows:
            where = f"{csv_path.name}:{line}"
            view = row.get("View Position", "")
            if not ctx.kept_view(view):
                dropped["not a frontal view"] += 1
                continue
            positives = findings(row["Finding Labels"])
            if not positives:
                dropped["no finding labels"] += 1
                continue
            listed += 1
            path = index.get(row["Image Index"])
            if path is None:
                missing += 1
                continue
            record = ctx.record(
                finding_text(positives),
                where,
                annotated,
                path=path,
                filename=path.relative_to(root).as_posix(),
                patient_id=f"nih-{row['Patient ID']}",
                source="nih",
                view=view,
                sex=normal_sex(row["Patient Gender"] or row["Patient Sex"]),
                age=normal_age(row.get("Patient Age", "")),
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        note_missing(ctx, csv_path, missing, listed)
        return records
