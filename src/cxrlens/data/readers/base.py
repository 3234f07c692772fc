"""What every reader shares: CSV reading, safe paths, sex/age spellings, the read context and the Source base."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from cxrlens.config import DataConfig
from cxrlens.data.labels import NO_POSITIVE, PAPER_NODES, Hierarchy
from cxrlens.data.records import ImageRecord, ProblemLog
from cxrlens.errors import DataError, LabelError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".dic"}


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 (invalid byte 0x{raw[err.start]:02x} on line {line}); re-save it as UTF-8"
        ) from None


def _raw_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable gzip file ({err})") from None
    return raw


def iter_csv_rows(
    path: Path, columns: Sequence[str] | None = None
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and a lazy iterator of (line number, row) of a UTF-8 CSV (``.csv.gz`` too); blank rows skipped.

    With ``columns``, each row holds only those (missing ones as ""): much faster on wide files.
    """
    text = _decode(path, _raw_bytes(path))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as err:
        raise DataError(f"{path}:1: malformed CSV ({err})") from None
    if not header:
        raise DataError(f"{path}: empty CSV (no header row)")
    wanted = [(name, header.index(name)) for name in (columns if columns is not None else header) if name in header]
    absent = [name for name in columns or () if name not in header]
    width = len(header)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for values in reader:
                if len(values) > width:
                    raise DataError(f"{path}:{reader.line_num}: more fields than columns in the header")
                if not "".join(values).strip():
                    continue
                row = {name: values[i].strip() if i < len(values) else "" for name, i in wanted}
                row.update(dict.fromkeys(absent, ""))
                yield reader.line_num, row
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None

    return header, rows()


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a UTF-8 CSV (``.csv.gz`` too); clear errors for encoding problems."""
    header, rows = iter_csv_rows(path)
    return header, list(rows)


def read_csv_header(path: Path) -> list[str]:
    """The column names of a CSV (``.csv.gz`` too) without reading the whole file."""
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                first = handle.readline()
        else:
            with path.open("rb") as handle:
                first = handle.readline()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    line = _decode(path, first).strip()
    return [h.strip() for h in next(csv.reader([line]), [])] if line else []


def safe_join(root: Path, relative: str) -> Path | None:
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


def normal_sex(value: str) -> str:
    """``F`` or ``M`` from the spellings sources use (F, female, w, ...); "" when unknown."""
    text = value.strip().lower()
    if text in {"f", "female", "w", "woman"}:
        return "F"
    if text in {"m", "male", "man"}:
        return "M"
    return ""


def normal_age(value: str) -> str:
    """Years as a plain number from ``58``, ``58.0``, ``058Y`` (DICOM), ``006M``; "" for 0, blanks and junk."""
    match = re.fullmatch(r"0*(\d+(?:\.\d+)?)\s*([YMWD]?)", value.strip().upper())
    if not match:
        return ""
    number, unit = float(match.group(1)), match.group(2) or "Y"
    years = number / {"Y": 1, "M": 12, "W": 52, "D": 365}[unit]
    if years <= 0 or years > 120:
        return ""
    return str(int(years)) if years == int(years) else f"{years:.1f}"


def finding_text(positives: Sequence[str]) -> str:
    """The finding of a record from its positive label spellings (``(none)`` when there is none)."""
    return ";".join(positives) if positives else NO_POSITIVE


class ReadContext:
    """Shared row handling: paths, label resolution, unknown labels, problems and notes."""

    def __init__(self, cfg: DataConfig, hierarchy: Hierarchy, log: ProblemLog) -> None:
        self.cfg = cfg
        self.hierarchy = hierarchy
        self.log = log
        self.notes: list[str] = []
        self.unresolved: dict[str, list[str]] = {}
        self.frontal = set(cfg.frontal_views)
        self.paper_nodes = frozenset(PAPER_NODES | set(cfg.labels.extra_nodes))
        self._resolved: dict[str, frozenset[str]] = {}
        self._unknown: dict[tuple[frozenset[str], frozenset[str]], frozenset[str]] = {}

    def labels(self, finding: str, where: str) -> frozenset[str] | None:
        """Label names (ancestors included) of a finding; None (and remembered) when it is unknown."""
        cached = self._resolved.get(finding)
        if cached is not None:
            return cached
        try:
            labels = self.hierarchy.resolve(finding)
        except LabelError as err:
            self.unresolved.setdefault(finding, []).append(where)
            if self.log.skip_bad:
                self.log.report(where, str(err))
            return None
        self._resolved[finding] = labels
        return labels

    def record(
        self,
        finding: str,
        where: str,
        annotated: frozenset[str],
        *,
        path: Path,
        filename: str,
        patient_id: str,
        source: str,
        view: str = "",
        sex: str = "",
        age: str = "",
        date: str = "",
    ) -> ImageRecord | None:
        """The record of one row: labels resolved (None when the finding is unknown: see ``labels``) and the
        labels its source does not annotate (``annotated``: the nodes it does) set unknown."""
        labels = self.labels(finding, where)
        if labels is None:
            return None
        return ImageRecord(
            filename=filename,
            path=path,
            patient_id=patient_id,
            finding=finding,
            labels=labels,
            view=view,
            source=source,
            date=date,
            sex=sex,
            age=age,
            origin=where,
            unknown=self.unknown(labels, annotated),
        )

    def raise_unknown(self, source: Path) -> None:
        if not self.unresolved or self.log.skip_bad:
            return
        listed = "; ".join(
            f"{finding!r} ({len(places)} row(s), first {places[0]})" for finding, places in self.unresolved.items()
        )
        raise DataError(
            f"{source}: unknown finding(s): {listed}. Map them with labels.aliases "
            "(spelling -> known finding) or add nodes with labels.extra_nodes or labels.tree, or pass --skip-bad"
        )

    def nodes(self, names: Iterable[str]) -> frozenset[str]:
        """The tree nodes of label spellings (those the tree does not know are left out)."""
        found = (self.hierarchy.node(name) for name in names)
        return frozenset(node for node in found if node is not None)

    def nodes_of_labels(self, label_sets: Iterable[frozenset[str]]) -> frozenset[str]:
        """Every node positive in any of the label sets."""
        seen: set[str] = set()
        for labels in label_sets:
            seen |= labels
        return self.nodes(seen)

    def unknown(self, labels: frozenset[str], annotated: frozenset[str]) -> frozenset[str]:
        """Unknown label names of an image with ``labels`` from a source annotating the ``annotated`` nodes."""
        key = (labels, annotated)
        found = self._unknown.get(key)
        if found is None:
            found = self.hierarchy.unknown_labels(annotated, labels)
            self._unknown[key] = found
        return found

    def image_path(self, root: Path, relative: str, where: str) -> Path | None:
        path = safe_join(root, relative)
        if path is None:
            self.log.report(where, f"filename {relative!r} is outside the data folder {root}")
            return None
        if not path.is_file() and not self.cfg.streaming:  # streaming: the images are in the shards
            self.log.report(where, f"image file not found: {relative}")
            return None
        return path

    def kept_view(self, view: str) -> bool:
        return view in self.frontal

    def note_dropped(self, location: Path, dropped: dict[str, int]) -> None:
        for why, count in dropped.items():
            if count:
                self.notes.append(f"{location}: {count:,} row(s) dropped ({why})")


class Source(ABC):
    """One data source of a known layout: its files are parsed on construction, its records read later.

    ``vocabulary`` (the findings the source annotates) is known before reading, so the label tree can grow
    with every source first; ``read`` then resolves labels against the final tree.
    """

    layout: ClassVar[str]

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        self.location = location
        self.cfg = cfg

    @property
    def base(self) -> Path:
        """The folder that record filenames are relative to."""
        return self.location.parent if self.location.is_file() else self.location

    @property
    def vocabulary(self) -> Sequence[str]:
        """Label spellings this source annotates (new ones become root nodes of the tree)."""
        return ()

    @abstractmethod
    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        """The records, labels resolved and unknown labels set."""


def with_paper_unknown(records: list[ImageRecord], ctx: ReadContext) -> list[ImageRecord]:
    """Records of a paper source (Cohen, Kermany): it annotates the paper's tree and every finding it is positive
    for, so only nodes other collections bring are unknown for it."""
    annotated = ctx.paper_nodes | ctx.nodes_of_labels(r.labels for r in records)
    return [replace(r, unknown=ctx.unknown(r.labels, annotated)) for r in records]


def index_images(root: Path, names: set[str]) -> dict[str, Path]:
    """Where under ``root`` each file name of ``names`` is (the first found, folders walked in sorted order).

    Symlinked folders are followed (an ``images`` link to a shared copy), each real folder once.
    """
    found: dict[str, Path] = {}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            if name in names and name not in found:
                found[name] = Path(dirpath) / name
    return found


def note_missing(ctx: ReadContext, location: Path, missing: int, listed: int) -> None:
    """Collections list every image of their release; a partial copy is normal, so missing files are noted."""
    if missing == listed and listed:
        raise DataError(f"{location}: none of the {listed:,} listed images was found under {location.parent}")
    if missing:
        ctx.notes.append(f"{location}: {missing:,} of {listed:,} listed image(s) not found (a partial copy?): skipped")
