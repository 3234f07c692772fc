"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` with the CheXpert labeler's 14 observation columns.

Columns ``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, Enlarged Cardiomediastinum, ..., Support Devices``;
values ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned. ``Path`` is like
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``: its first part (the release folder, the one
holding the CSV) is dropped. Uncertain values follow ``labels.uncertain`` (ignore: unknown, zeros: negative,
ones: positive, as in the CheXpert paper), blanks ``labels.unmentioned`` (negative by default; No Finding's
blank is always negative: the labeler sets it only when nothing is positive or uncertain). The same rules read
MIMIC-CXR-JPG's labels (:mod:`cxrlens.data.readers.mimic`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cxrlens.config import DataConfig, LabelConfig
from cxrlens.data.readers.base import (
    ReadContext,
    Source,
    finding_text,
    normal_age,
    normal_sex,
    note_missing,
    read_csv_header,
    read_csv_rows,
)
from cxrlens.data.readers.vocabularies import CHEXPERT, vocabulary
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

REQUIRED = ("Path", "Frontal/Lateral", "No Finding")
CSV_NAMES = ("train.csv", "valid.csv")
_PATIENT = re.compile(r"(patient\d+)")
_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}


def matches(header: Sequence[str]) -> bool:
    return set(REQUIRED) <= set(header)


def find(folder: Path) -> Path | None:
    """The folder holding CheXpert's CSVs: ``folder`` itself or its ``CheXpert-v1.0*`` subfolder."""
    for candidate in (folder, *sorted(folder.glob("CheXpert-v1.0*"))):
        if any((candidate / n).is_file() and matches(read_csv_header(candidate / n)) for n in CSV_NAMES):
            return candidate
    return None


def observations(
    row: dict[str, str], columns: Sequence[str], labels: LabelConfig, where: str, ctx: ReadContext
) -> tuple[list[str], frozenset[str]] | None:
    """(positive columns, annotated columns) of one labeler row under the uncertain/blank policies."""
    positives: list[str] = []
    annotated: list[str] = []
    for column in columns:
        raw = row.get(column, "")
        if raw not in _VALUES:
            ctx.log.report(where, f"{column} is {raw!r}; expected 1.0, 0.0, -1.0 or blank")
            return None
        value = _VALUES[raw]
        if value is None:
            if labels.unmentioned == "negative" or column == "No Finding":
                annotated.append(column)
        elif value == -1:
            if labels.uncertain == "ones":
                positives.append(column)
            if labels.uncertain != "ignore":
                annotated.append(column)
        else:
            annotated.append(column)
            if value == 1:
                positives.append(column)
    return positives, frozenset(annotated)


def chexpert_view(frontal_lateral: str, ap_pa: str) -> str:
    """``AP``/``PA`` for a frontal image with a known projection, else ``Frontal``; ``Lateral`` otherwise."""
    if frontal_lateral.strip().lower() != "frontal":
        return "Lateral"
    return ap_pa.strip().upper() if ap_pa.strip().upper() in {"AP", "PA"} else "Frontal"


class CheXpertCsv(Source):
    layout = "chexpert"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        if location.is_file():
            self.csv_files = [location]
        else:
            self.csv_files = [location / n for n in CSV_NAMES if (location / n).is_file()]
        if not self.csv_files:
            raise DataError(f"{location}: no CheXpert train.csv or valid.csv")

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return vocabulary("chexpert")

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for csv_path in self.csv_files:
            records.extend(self._read_csv(csv_path, ctx))
        return records

    def _read_csv(self, csv_path: Path, ctx: ReadContext) -> list[ImageRecord]:
        root = self.base
        header, rows = read_csv_rows(csv_path)
        columns = [c for c in CHEXPERT if c in header]
        annotated_nodes: dict[frozenset[str], frozenset[str]] = {}
        records: list[ImageRecord] = []
        dropped = {"not a frontal view": 0}
        missing = listed = 0
        for line, row in rows:
            where = f"{csv_path.name}:{line}"
            view = chexpert_view(row.get("Frontal/Lateral", ""), row.get("AP/PA", ""))
            if not ctx.kept_view(view):
                dropped["not a frontal view"] += 1
                continue
            read = observations(row, columns, ctx.cfg.labels, where, ctx)
            if read is None:
                continue
            positives, annotated = read
            listed += 1
            relative = release_relative(row["Path"], root.name)
            path = root / relative
            if not relative or not path.is_file():
                missing += 1
                continue
            nodes = annotated_nodes.get(annotated)
            if nodes is None:
                nodes = annotated_nodes[annotated] = ctx.nodes(annotated)
            patient = _PATIENT.search(row["Path"])
            record = ctx.record(
                finding_text(positives),
                where,
                nodes,
                path=path,
                filename=relative,
                patient_id=f"chexpert-{patient.group(1) if patient else Path(relative).parent.as_posix()}",
                source="chexpert",
                view=view,
                sex=normal_sex(row.get("Sex", "")),
                age=normal_age(row.get("Age", "")),
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        note_missing(ctx, csv_path, missing, listed)
        return records


def release_relative(path: str, folder_name: str) -> str:
    """``CheXpert-v1.0-small/train/...`` -> ``train/...`` (the release folder is the one holding the CSV)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if parts and (parts[0] == folder_name or parts[0].startswith("CheXpert-v1.0")):
        parts = parts[1:]
    if any(p in {"..", "."} for p in parts):
        return ""
    return "/".join(parts)
