"""COVIDx (v9/v10 style): split files ``train.txt`` / ``val.txt`` / ``test.txt`` (or ``train_COVIDx9A.txt``...).

Each line is ``patient_id filename label source`` separated by spaces; the label is ``COVID-19`` / ``normal`` /
``pneumonia`` (three classes: annotates No Finding, Pneumonia and COVID-19, and ``pneumonia`` means a pneumonia
that is not COVID-19) or ``positive`` / ``negative`` (later versions: annotates COVID-19 only). Images are in the
folder named like the split (``train/``, ``val/``, ``test/``). COVIDx gathers other collections (its ``source``
column: cohen, rsna, ricord, bimcv, ...): its Cohen and RSNA images are the same files as those collections'.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import ReadContext, Source, finding_text, note_missing, safe_join
from cxrlens.data.readers.vocabularies import COVIDX, COVIDX_BINARY
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

SPLIT_FILE = re.compile(r"^(train|val|test)([_\-.][\w.\-]*)?\.txt$", re.IGNORECASE)
THREE_CLASS = {"covid-19": ["COVID-19"], "normal": ["No Finding"], "pneumonia": ["Pneumonia"]}
BINARY = {"positive": ["COVID-19"], "negative": []}


def split_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and SPLIT_FILE.match(p.name) and looks_like(p))


def looks_like(path: Path) -> bool:
    """The first line is ``patient_id filename label source`` with a COVIDx label."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = next((line for line in handle if line.strip()), "")
    except OSError:
        return False
    parts = first.split()
    return len(parts) >= 4 and parts[-2].lower() in THREE_CLASS | BINARY


def find(folder: Path) -> Path | None:
    return folder if split_files(folder) else None


def parse_line(line: str) -> tuple[str, str, str, str] | None:
    """(patient, filename, label, source) of one line; None when it has fewer than four fields."""
    parts = line.split()
    if len(parts) < 4:
        return None
    return parts[0], " ".join(parts[1:-2]), parts[-2], parts[-1]


class CovidxSplits(Source):
    layout = "covidx"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        self.files = [location] if location.is_file() else split_files(location)
        if not self.files:
            raise DataError(f"{location}: no COVIDx split file (train.txt, val.txt, test.txt)")
        self.lines: list[tuple[Path, int, str]] = []
        for path in self.files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
            self.lines.extend((path, i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip())

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return COVIDX

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        root = self.base
        three, binary = ctx.nodes(COVIDX), ctx.nodes(COVIDX_BINARY)
        records: list[ImageRecord] = []
        missing = 0
        for path, line, text in self.lines:
            where = f"{path.name}:{line}"
            parsed = parse_line(text)
            if parsed is None:
                ctx.log.report(where, "expected 'patient_id filename label source'")
                continue
            patient, name, label, _ = parsed
            key = label.lower()
            if key not in THREE_CLASS and key not in BINARY:
                ctx.log.report(where, f"label {label!r}; expected COVID-19, normal, pneumonia, positive or negative")
                continue
            split = SPLIT_FILE.match(path.name)
            relative = f"{split.group(1).lower() if split else 'train'}/{name}"
            image = safe_join(root, relative)
            if image is None or not image.is_file():
                missing += 1
                continue
            record = ctx.record(
                finding_text(THREE_CLASS.get(key) or BINARY.get(key, [])),
                where,
                three if key in THREE_CLASS else binary,
                path=image,
                filename=relative,
                patient_id=f"covidx-{patient}",
                source="covidx",
            )
            if record is not None:
                records.append(record)
        ctx.raise_unknown(self.location)
        note_missing(ctx, self.location, missing, len(self.lines))
        return records
