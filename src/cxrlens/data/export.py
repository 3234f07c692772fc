"""Write a dataset as a self-contained cxrlens-CSV folder (images, lung masks, ``metadata.csv``).

Used for an external set held out of the cross-validation (``cxrlens data split --external-out DIR``): the
folder is then read like any other data source, e.g. by ``cxrlens evaluate-external --data DIR``. Records of a
collection keep its name as their ``source`` and their unknown labels in the ``unknown`` column, so the folder reads
back with the same labels and unknown values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cxrlens.data.records import Dataset
from cxrlens.errors import DataError
from cxrlens.fileio import atomic_write_text, csv_text

COLUMNS = ("filename", "patient_id", "finding", "view", "source", "sex", "age", "offset", "date", "license",
           "lung_mask", "unknown")  # fmt: skip
METADATA = "metadata.csv"


def write_dataset_folder(dataset: Dataset, out_dir: str | Path) -> Path:
    """Copy every image (and lung mask) under ``out_dir`` with its metadata; returns the metadata CSV.

    Writing the same set again is a no-op (a re-run of the same seeded split); a folder holding another set is
    refused rather than mixed.
    """
    out = Path(out_dir)
    copies: list[tuple[Path, Path]] = []
    rows = []
    for rec in dataset.records:
        if out.resolve() in rec.path.resolve().parents:
            raise DataError(f"{out}: is inside the data it is made from; choose another folder")
        target = out / rec.filename
        copies.append((rec.path, target))
        mask = ""
        if rec.lung_mask is not None:
            mask_target = (out / "masks" / rec.filename).with_suffix(rec.lung_mask.suffix)
            mask_target = mask_target.with_name(f"{mask_target.stem}_mask{mask_target.suffix}")
            copies.append((rec.lung_mask, mask_target))
            mask = mask_target.relative_to(out).as_posix()
        values = {
            "filename": target.relative_to(out).as_posix(),
            "patient_id": rec.patient_id,
            "finding": rec.finding,
            "view": rec.view,
            "source": rec.source,
            "sex": rec.sex,
            "age": rec.age,
            "offset": rec.offset,
            "date": rec.date,
            "license": rec.license,
            "lung_mask": mask,
            "unknown": ";".join(sorted(rec.unknown)),  # read back by the cxrlens CSV reader
        }
        rows.append([values[c] for c in COLUMNS])
    text = csv_text(COLUMNS, rows)
    path = out / METADATA
    if path.exists():
        if path.read_text(encoding="utf-8") == text and all(target.is_file() for _, target in copies):
            return path  # the same set, written before
        raise DataError(f"{out}: already holds another {METADATA}; choose an empty folder")
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    atomic_write_text(path, text)
    return path
