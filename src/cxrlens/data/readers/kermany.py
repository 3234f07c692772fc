"""Kermany folders ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/...``.

Viral/bacterial from the file name, the patient from ``personN`` / ``IM-XXXX``. Annotates the paper's tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxrlens.data.readers.base import IMAGE_SUFFIXES, ReadContext, Source, with_paper_unknown
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

_PERSON = re.compile(r"(person\d+)", re.IGNORECASE)
_NORMAL_ID = re.compile(r"(IM-\d+)", re.IGNORECASE)


def class_dirs(root: Path) -> list[Path]:
    """The NORMAL/PNEUMONIA folders up to three levels below ``root``."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            if name.upper() in {"NORMAL", "PNEUMONIA"}:
                found.append(Path(dirpath) / name)
        if len(Path(dirpath).relative_to(root).parts) >= 3:
            dirnames.clear()
    return sorted(found)


def kermany_patient(name: str) -> str | None:
    person = _PERSON.search(name)
    if person:
        return f"kermany-{person.group(1).lower()}"
    normal = _NORMAL_ID.search(name)
    if normal:
        return f"kermany-{normal.group(1).upper()}"
    return None


class KermanyFolders(Source):
    layout = "kermany"

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        root = self.location
        records: list[ImageRecord] = []
        own_patient = 0
        for class_dir in class_dirs(root):
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                    continue
                relative = path.relative_to(root).as_posix()
                lowered = path.name.lower()
                if class_dir.name.upper() == "NORMAL":
                    finding = "No Finding"
                elif "virus" in lowered or "viral" in lowered:
                    finding = "Pneumonia/Viral"
                elif "bacteria" in lowered or "bacterial" in lowered:
                    finding = "Pneumonia/Bacterial"
                else:
                    ctx.log.report(relative, "PNEUMONIA image whose name says neither 'virus' nor 'bacteria'")
                    continue
                patient = kermany_patient(path.name)
                if patient is None:
                    patient = f"kermany-{path.stem}"
                    own_patient += 1
                records.append(
                    ImageRecord(
                        filename=relative,
                        path=path,
                        patient_id=patient,
                        finding=finding,
                        labels=ctx.hierarchy.resolve(finding),
                        view="AP",
                        source="kermany",
                        license="CC BY 4.0",
                        origin=relative,
                    )
                )
        if own_patient:
            ctx.notes.append(
                f"{root}: {own_patient} Kermany file name(s) carry no personN/IM-XXXX id; "
                "each is treated as its own patient"
            )
        if not records:
            raise DataError(f"{root}: Kermany layout found but it holds no images")
        return with_paper_unknown(records, ctx)
