"""Read data sources into one :class:`Dataset`.

Three layouts are recognised, and any number of them can be combined:

* **cxrlens CSV** (``metadata.csv``): columns ``filename, patient_id, finding``
  (+ optional ``view, source, lung_mask, offset, date, license, sex, age``), paths relative to the CSV's folder;
* **Cohen's covid-chestxray-dataset** ``metadata.csv``: columns ``patientid, finding, view, modality,
  folder, filename``; frontal X-rays kept, CT and lateral views dropped;
* **Kermany** folders ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/...``: viral/bacterial from the
  file name, the patient from ``personN`` / ``IM-XXXX``.

A source is a folder (its layout detected) or a CSV file. ``@sample`` is the embedded sample.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.labels import Hierarchy
from cxrlens.data.records import Dataset, ImageRecord, ProblemLog
from cxrlens.errors import DataError, LabelError

SAMPLE = "@sample"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".dic"}
OURS_REQUIRED = ("filename", "patient_id", "finding")
COHEN_REQUIRED = ("patientid", "finding", "view", "modality", "folder", "filename")
_PERSON = re.compile(r"(person\d+)", re.IGNORECASE)
_NORMAL_ID = re.compile(r"(IM-\d+)", re.IGNORECASE)


def sample_root() -> Path:
    return Path(str(resources.files("cxrlens") / "sample"))


def resolve_source(source: str | Path) -> Path:
    if str(source) == SAMPLE:
        return sample_root()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data source not found")
    return path


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a UTF-8 CSV; clear errors for encoding problems."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 (invalid byte 0x{raw[err.start]:02x} on line {line}); re-save it as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DataError(f"{path}: empty CSV (no header row)")
    reader.fieldnames = header
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than columns in the header")
            clean = {k: (v or "").strip() for k, v in row.items()}
            if any(clean.values()):
                rows.append((reader.line_num, clean))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return header, rows


def _safe_join(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it stays inside ``root`` (lexically: symlinks inside are allowed).

    Windows separators in a CSV made on Windows (``images\\a.png``) are read as ``/``.
    """
    if not relative or Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        return None
    if re.match(r"^[A-Za-z]:[\\/]", relative):  # a Windows drive path is absolute too
        return None
    relative = relative.replace("\\", "/")
    joined = Path(os.path.normpath(root / relative))
    root_norm = Path(os.path.normpath(root))
    if joined != root_norm and root_norm in joined.parents:
        return joined
    return None


def detect_layout(path: Path) -> tuple[str, Path]:
    """("ours" | "cohen", csv) or ("kermany", folder)."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: expected a data folder or a CSV file")
        return _csv_layout(path), path
    csv_path = path / "metadata.csv"
    if csv_path.is_file():
        return _csv_layout(csv_path), csv_path
    if _kermany_class_dirs(path):
        return "kermany", path
    raise DataError(
        f"{path}: no metadata.csv and no Kermany NORMAL/PNEUMONIA folders found; "
        "see `cxrlens data --help` for the supported layouts"
    )


def _csv_layout(csv_path: Path) -> str:
    header, _ = read_csv_rows(csv_path)
    columns = set(header)
    if set(OURS_REQUIRED) <= columns:
        return "ours"
    if set(COHEN_REQUIRED) <= columns:
        return "cohen"
    missing = [c for c in OURS_REQUIRED if c not in columns]
    raise DataError(
        f"{csv_path}: missing required column(s) {', '.join(missing)} "
        f"(cxrlens CSV needs {', '.join(OURS_REQUIRED)}; Cohen's needs {', '.join(COHEN_REQUIRED)})"
    )


def _kermany_class_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            if name.upper() in {"NORMAL", "PNEUMONIA"}:
                found.append(Path(dirpath) / name)
        if len(Path(dirpath).relative_to(root).parts) >= 3:
            dirnames.clear()
    return sorted(found)


class _Reader:
    """Shared row handling: paths, duplicates, labels, problems."""

    def __init__(self, cfg: DataConfig, hierarchy: Hierarchy, log: ProblemLog) -> None:
        self.cfg = cfg
        self.hierarchy = hierarchy
        self.log = log
        self.notes: list[str] = []
        self.unknown: dict[str, list[str]] = {}

    def labels(self, finding: str, where: str) -> frozenset[str] | None:
        try:
            return self.hierarchy.resolve(finding)
        except LabelError as err:
            self.unknown.setdefault(finding, []).append(where)
            if self.log.skip_bad:
                self.log.report(where, str(err))
            return None

    def raise_unknown(self, source: Path) -> None:
        if not self.unknown or self.log.skip_bad:
            return
        listed = "; ".join(
            f"{finding!r} ({len(places)} row(s), first {places[0]})" for finding, places in self.unknown.items()
        )
        raise DataError(
            f"{source}: unknown finding(s): {listed}. Map them with labels.aliases "
            "(spelling -> known finding) or add nodes with labels.extra_nodes, or pass --skip-bad"
        )

    def image_path(self, root: Path, relative: str, where: str) -> Path | None:
        path = _safe_join(root, relative)
        if path is None:
            self.log.report(where, f"filename {relative!r} is outside the data folder {root}")
            return None
        if not path.is_file():
            self.log.report(where, f"image file not found: {relative}")
            return None
        return path


def _read_ours(csv_path: Path, reader: _Reader) -> list[ImageRecord]:
    root = csv_path.parent
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in OURS_REQUIRED if c not in header]
    if missing:
        raise DataError(f"{csv_path}: missing required column(s) {', '.join(missing)}")
    records: list[ImageRecord] = []
    frontal = set(reader.cfg.frontal_views)
    dropped_views = 0
    for line, row in rows:
        where = f"{csv_path.name}:{line}"
        if not row["filename"]:
            reader.log.report(where, "empty filename")
            continue
        if not row["patient_id"]:
            reader.log.report(where, f"empty patient_id for {row['filename']}")
            continue
        if row.get("view") and row["view"] not in frontal:
            dropped_views += 1
            continue
        if reader.hierarchy.is_unlabelled(row["finding"]):
            reader.log.report(where, f"no finding for {row['filename']}")
            continue
        labels = reader.labels(row["finding"], where)
        path = reader.image_path(root, row["filename"], where)
        if labels is None or path is None:
            continue
        mask = None
        if row.get("lung_mask"):
            mask = _safe_join(root, row["lung_mask"])
            if mask is None or not mask.is_file():
                reader.log.report(where, f"lung mask not found or outside the data folder: {row['lung_mask']}")
                mask = None
        records.append(
            ImageRecord(
                filename=row["filename"],
                path=path,
                patient_id=row["patient_id"],
                finding=row["finding"],
                labels=labels,
                view=row.get("view", ""),
                source=row.get("source", "") or csv_path.parent.name,
                lung_mask=mask,
                offset=row.get("offset", ""),
                date=row.get("date", ""),
                license=row.get("license", ""),
                sex=normal_sex(row.get("sex", "")),
                age=row.get("age", "").strip(),
                origin=where,
            )
        )
    reader.raise_unknown(csv_path)
    if dropped_views:
        reader.notes.append(f"{csv_path}: {dropped_views} non-frontal row(s) dropped")
    return records


def _read_cohen(csv_path: Path, reader: _Reader) -> list[ImageRecord]:
    root = csv_path.parent
    _, rows = read_csv_rows(csv_path)
    frontal = set(reader.cfg.frontal_views)
    records: list[ImageRecord] = []
    dropped = {"not an X-ray": 0, "not a frontal view": 0, "not yet labelled": 0}
    for line, row in rows:
        where = f"{csv_path.name}:{line}"
        if row["modality"].lower() not in {"x-ray", "xray", "cr", "dx"}:
            dropped["not an X-ray"] += 1
            continue
        if row["view"] not in frontal:
            dropped["not a frontal view"] += 1
            continue
        if reader.hierarchy.is_unlabelled(row["finding"]):
            dropped["not yet labelled"] += 1
            continue
        labels = reader.labels(row["finding"], where)
        relative = f"{row['folder']}/{row['filename']}" if row["folder"] else row["filename"]
        path = reader.image_path(root, relative, where)
        if labels is None or path is None:
            continue
        records.append(
            ImageRecord(
                filename=relative,
                path=path,
                patient_id=f"cohen-{row['patientid']}",
                finding=row["finding"],
                labels=labels,
                view=row["view"],
                source="cohen",
                offset=row.get("offset", ""),
                date=row.get("date", ""),
                license=row.get("license", ""),
                sex=normal_sex(row.get("sex", "")),
                age=row.get("age", "").strip(),
                origin=where,
            )
        )
    reader.raise_unknown(csv_path)
    for why, count in dropped.items():
        if count:
            reader.notes.append(f"{csv_path}: {count} row(s) dropped ({why})")
    return records


def normal_sex(value: str) -> str:
    """``F`` or ``M`` from the spellings sources use (F, female, w, ...); "" when unknown."""
    text = value.strip().lower()
    if text in {"f", "female", "w", "woman"}:
        return "F"
    if text in {"m", "male", "man"}:
        return "M"
    return ""


def kermany_patient(name: str) -> str | None:
    person = _PERSON.search(name)
    if person:
        return f"kermany-{person.group(1).lower()}"
    normal = _NORMAL_ID.search(name)
    if normal:
        return f"kermany-{normal.group(1).upper()}"
    return None


def _read_kermany(root: Path, reader: _Reader) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    own_patient = 0
    for class_dir in _kermany_class_dirs(root):
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
                reader.log.report(relative, "PNEUMONIA image whose name says neither 'virus' nor 'bacteria'")
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
                    labels=reader.hierarchy.resolve(finding),
                    view="AP",
                    source="kermany",
                    license="CC BY 4.0",
                    origin=relative,
                )
            )
    if own_patient:
        reader.notes.append(
            f"{root}: {own_patient} Kermany file name(s) carry no personN/IM-XXXX id; "
            "each is treated as its own patient"
        )
    if not records:
        raise DataError(f"{root}: Kermany layout found but it holds no images")
    return records


def _common_root(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.resolve()) for p in paths]))


def load_dataset(sources: Iterable[str | Path] | None = None, cfg: DataConfig | None = None) -> Dataset:
    """Read and combine the sources of ``cfg`` (or ``sources``) into one validated table."""
    cfg = cfg or DataConfig()
    source_list = [str(s) for s in (sources if sources is not None else cfg.sources)]
    if not source_list:
        raise DataError("no data source given")
    hierarchy = Hierarchy.build(cfg.labels.extra_nodes, cfg.labels.aliases)
    log = ProblemLog(cfg.skip_bad)
    reader = _Reader(cfg, hierarchy, log)
    parts: list[tuple[Path, list[ImageRecord]]] = []
    for source in source_list:
        path = resolve_source(source)
        layout, location = detect_layout(path)
        if layout == "ours":
            records = _read_ours(location, reader)
        elif layout == "cohen":
            records = _read_cohen(location, reader)
        else:
            records = _read_kermany(location, reader)
        base = location.parent if location.is_file() else location
        parts.append((base.resolve(), records))

    root = parts[0][0] if len(parts) == 1 else _common_root([p for p, _ in parts])
    combined: list[ImageRecord] = []
    for base, records in parts:
        prefix = base.relative_to(root).as_posix() if base != root else ""
        for rec in records:
            name = f"{prefix}/{rec.filename}" if prefix else rec.filename
            combined.append(replace(rec, filename=name))
    combined = _drop_duplicates(combined, log)
    if not combined:
        raise DataError(f"no usable images in {', '.join(source_list)}")
    return Dataset(combined, root, hierarchy, log.problems, reader.notes)


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
