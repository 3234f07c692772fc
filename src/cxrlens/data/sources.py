"""Read data sources into one :class:`Dataset`: detect each source's layout, grow the label tree, combine.

Layouts (one reader module each in :mod:`cxrlens.data.readers`), any number of them combined:

* **cxrlens CSV** (``metadata.csv``): ``filename, patient_id, finding`` (+ optional ``view, source, lung_mask,
  offset, date, license, sex, age, unknown``), paths relative to the CSV's folder;
* **Cohen's covid-chestxray-dataset** ``metadata.csv``: ``patientid, finding, view, modality, folder, filename``;
* **Kermany** folders ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/...``;
* **NIH ChestX-ray14** ``Data_Entry_2017.csv`` + ``images*/``; **CheXpert** ``train.csv``/``valid.csv``;
  **MIMIC-CXR-JPG** ``mimic-cxr-2.0.0-metadata.csv(.gz)`` + ``-chexpert``/``-negbio`` labels + ``files/``;
  **PadChest** ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` + ``<ImageDir>/<ImageID>``;
  **RSNA Pneumonia** ``stage_2_train_labels.csv`` + ``stage_2_detailed_class_info.csv`` + DICOMs;
  **COVIDx** ``train.txt``/``val.txt``/``test.txt`` + ``train/``, ``val/``, ``test/``.

A source is a folder (its layout detected from the files it holds), a CSV file (from its columns) or a COVIDx
split file. ``@sample`` is the embedded sample. The label tree is the configured one
(:func:`cxrlens.data.tree.configured_hierarchy`) grown with every source's vocabulary; each record's
``unknown`` labels are those its source does not annotate (see :mod:`cxrlens.data.readers.vocabularies`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers import chexpert, cohen, covidx, cxrlens_csv, kermany, mimic, nih, padchest, rsna
from cxrlens.data.readers.base import IMAGE_SUFFIXES, ReadContext, Source, normal_sex, read_csv_header, read_csv_rows
from cxrlens.data.readers.kermany import kermany_patient
from cxrlens.data.records import Dataset, ImageRecord, ProblemLog
from cxrlens.data.tree import configured_hierarchy
from cxrlens.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "SAMPLE",
    "detect_layout",
    "kermany_patient",
    "load_dataset",
    "normal_sex",
    "read_csv_rows",
    "resolve_source",
    "sample_root",
]

SAMPLE = "@sample"

#: layout name -> reader class
READERS: dict[str, type[Source]] = {
    "ours": cxrlens_csv.CxrlensCsv,
    "cohen": cohen.CohenCsv,
    "kermany": kermany.KermanyFolders,
    "nih": nih.NihCsv,
    "chexpert": chexpert.CheXpertCsv,
    "mimic": mimic.MimicCsv,
    "padchest": padchest.PadChestCsv,
    "rsna": rsna.RsnaCsv,
    "covidx": covidx.CovidxSplits,
}

#: CSV layouts in the order their columns are tested (the cxrlens CSV first: it may carry any extra column)
CSV_LAYOUTS: tuple[tuple[str, Callable[[list[str]], bool]], ...] = (
    ("ours", cxrlens_csv.matches),
    ("cohen", cohen.matches),
    ("nih", nih.matches),
    ("chexpert", chexpert.matches),
    ("mimic", mimic.matches),
    ("padchest", padchest.matches),
    ("rsna", rsna.matches),
)

#: folder layouts, tested after ``metadata.csv`` and before Kermany's class folders
FOLDER_LAYOUTS: tuple[tuple[str, Callable[[Path], Path | None]], ...] = (
    ("nih", nih.find),
    ("chexpert", chexpert.find),
    ("mimic", mimic.find),
    ("padchest", padchest.find),
    ("rsna", rsna.find),
    ("covidx", covidx.find),
)


def sample_root() -> Path:
    return Path(str(resources.files("cxrlens") / "sample"))


def resolve_source(source: str | Path) -> Path:
    if str(source) == SAMPLE:
        return sample_root()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data source not found")
    return path


def detect_layout(path: Path) -> tuple[str, Path]:
    """(layout, location): the CSV/split file of a table layout, or the folder (Kermany, CheXpert, COVIDx)."""
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".txt") and covidx.looks_like(path):
            return "covidx", path
        if not name.endswith((".csv", ".csv.gz")):
            raise DataError(f"{path}: expected a data folder, a CSV file or a COVIDx split file")
        return _csv_layout(path), path
    csv_path = path / "metadata.csv"
    if csv_path.is_file():
        return _csv_layout(csv_path), csv_path
    for layout, find in FOLDER_LAYOUTS:
        location = find(path)
        if location is not None:
            return layout, location
    if kermany.class_dirs(path):
        return "kermany", path
    raise DataError(
        f"{path}: no metadata.csv and no Kermany NORMAL/PNEUMONIA folders found, nor the files of NIH "
        "ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest, RSNA Pneumonia or COVIDx; "
        "see `cxrlens data --help` for the supported layouts"
    )


def _csv_layout(csv_path: Path) -> str:
    header = read_csv_header(csv_path)
    if not header:
        raise DataError(f"{csv_path}: empty CSV (no header row)")
    for layout, matches in CSV_LAYOUTS:
        if matches(header):
            return layout
    missing = [c for c in cxrlens_csv.REQUIRED if c not in header]
    raise DataError(
        f"{csv_path}: missing required column(s) {', '.join(missing)} "
        f"(cxrlens CSV needs {', '.join(cxrlens_csv.REQUIRED)}; Cohen's needs {', '.join(cohen.REQUIRED)}; "
        "or the label file of NIH, CheXpert, MIMIC-CXR-JPG, PadChest or RSNA)"
    )


def _common_root(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.resolve()) for p in paths]))


def open_sources(source_list: Iterable[str], cfg: DataConfig) -> list[Source]:
    """Every source detected and its files parsed (nothing resolved against the label tree yet)."""
    opened = []
    for source in source_list:
        layout, location = detect_layout(resolve_source(source))
        opened.append(READERS[layout](location, cfg))
    return opened


def load_dataset(sources: Iterable[str | Path] | None = None, cfg: DataConfig | None = None) -> Dataset:
    """Read and combine the sources of ``cfg`` (or ``sources``) into one validated table."""
    cfg = cfg or DataConfig()
    source_list = [str(s) for s in (sources if sources is not None else cfg.sources)]
    if not source_list:
        raise DataError("no data source given")
    opened = open_sources(source_list, cfg)
    hierarchy = configured_hierarchy(cfg.labels)
    for src in opened:
        hierarchy = hierarchy.grow(src.vocabulary)
    log = ProblemLog(cfg.skip_bad)
    ctx = ReadContext(cfg, hierarchy, log)
    parts: list[tuple[Path, list[ImageRecord]]] = []
    for src in opened:
        ctx.unresolved.clear()
        parts.append((src.base.resolve(), src.read(ctx)))

    root = parts[0][0] if len(parts) == 1 else _common_root([p for p, _ in parts])
    combined: list[ImageRecord] = []
    for base, records in [(b, select(r, cfg, ctx.notes)) for b, r in parts]:
        prefix = base.relative_to(root).as_posix() if base != root else ""
        for rec in records:
            name = f"{prefix}/{rec.filename}" if prefix else rec.filename
            combined.append(replace(rec, filename=name))
    combined = _drop_duplicates(combined, log)
    if not combined:
        raise DataError(f"no usable images in {', '.join(source_list)}")
    return Dataset(combined, root, hierarchy, log.problems, ctx.notes)


def select(records: list[ImageRecord], cfg: DataConfig, notes: list[str]) -> list[ImageRecord]:
    """``data.keep_labels`` and ``data.max_patients`` applied (what is left out is noted)."""
    kept = records
    for source, wanted in cfg.keep_labels.items():
        keep = set(wanted)
        before = len(kept)
        kept = [r for r in kept if r.source != source or r.labels & keep]
        if before > len(kept):
            notes.append(f"{source}: {before - len(kept):,} image(s) not positive for {', '.join(wanted)} left out")
    for source, limit in cfg.max_patients.items():
        patients = sorted({r.patient_id for r in kept if r.source == source}, key=_patient_order)
        if len(patients) > limit:
            chosen = set(patients[:limit])
            kept = [r for r in kept if r.source != source or r.patient_id in chosen]
            notes.append(f"{source}: {limit:,} of {len(patients):,} patients kept (data.max_patients)")
    return kept


def _patient_order(patient: str) -> str:
    """An order of patients that does not depend on the files' order: the same subset on every machine."""
    return hashlib.sha256(patient.encode("utf-8")).hexdigest()


def _drop_duplicates(records: list[ImageRecord], log: ProblemLog) -> list[ImageRecord]:
    first: dict[str, ImageRecord] = {}
    kept = []
    for rec in records:
        key = os.path.normpath(rec.filename)
        if key in first:
            log.report(rec.origin, f"duplicate row: {rec.filename} already listed at {first[key].origin}")
            continue
        first[key] = rec
        kept.append(rec)
    return kept
