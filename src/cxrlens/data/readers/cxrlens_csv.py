"""The cxrlens CSV (``metadata.csv``): ``filename, patient_id, finding`` + optional columns.

Optional: ``view, source, lung_mask, offset, date, license, sex, age`` and ``unknown``. Paths are relative to
the CSV's folder.

What a row annotates: a row whose ``source`` names a collection (``nih``, ``chexpert``, ``mimic``, ``padchest``,
``rsna``, ``covidx``, as :func:`cxrlens.data.export.write_dataset_folder` writes them) annotates that
collection's vocabulary; any other row annotates the paper's tree (plus ``labels.extra_nodes``). Both also
annotate every finding that rows of the same source are positive for. The optional ``unknown`` column takes labels
out of that, for one row: ``;``-separated label names (e.g. ``ARDS;Tuberculosis``); a label both positive and
unknown is a bad row, a name the tree lacks becomes a node. A row's unknown labels are then the tree's labels it
does not annotate (e.g. NIH's findings for a paper row), unless the tree implies their value (a negative parent
makes its children negative, a positive child its parents positive). Without the column and with only the
paper's sources, nothing is unknown.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import ReadContext, Source, normal_sex, read_csv_rows, safe_join
from cxrlens.data.readers.vocabularies import VOCABULARIES, vocabulary
from cxrlens.data.records import ImageRecord
from cxrlens.errors import DataError

REQUIRED = ("filename", "patient_id", "finding")
UNKNOWN_COLUMN = "unknown"


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header)


def split_unknown(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


class CxrlensCsv(Source):
    layout = "ours"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        self.header, self.rows = read_csv_rows(location)
        missing = [c for c in REQUIRED if c not in self.header]
        if missing:
            raise DataError(f"{location}: missing required column(s) {', '.join(missing)}")

    def _source(self, row: dict[str, str]) -> str:
        return row.get("source", "") or self.location.parent.name

    @property
    def vocabulary(self) -> list[str]:
        names: list[str] = []
        for source in sorted({self._source(row) for _, row in self.rows}):
            names.extend(vocabulary(source))
        for _, row in self.rows:
            names.extend(split_unknown(row.get(UNKNOWN_COLUMN, "")))
        return names

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        csv_path, root = self.location, self.location.parent
        kept: list[tuple[ImageRecord, frozenset[str]]] = []
        dropped_views = 0
        for line, row in self.rows:
            where = f"{csv_path.name}:{line}"
            if not row["filename"]:
                ctx.log.report(where, "empty filename")
                continue
            if not row["patient_id"]:
                ctx.log.report(where, f"empty patient_id for {row['filename']}")
                continue
            if row.get("view") and not ctx.kept_view(row["view"]):
                dropped_views += 1
                continue
            if ctx.hierarchy.is_unlabelled(row["finding"]):
                ctx.log.report(where, f"no finding for {row['filename']}")
                continue
            labels = ctx.labels(row["finding"], where)
            path = ctx.image_path(root, row["filename"], where)
            if labels is None or path is None:
                continue
            unknown = self._explicit_unknown(row, labels, where, ctx)
            if unknown is None:
                continue
            record = ImageRecord(
                filename=row["filename"],
                path=path,
                patient_id=row["patient_id"],
                finding=row["finding"],
                labels=labels,
                view=row.get("view", ""),
                source=self._source(row),
                lung_mask=self._mask(row, root, where, ctx),
                offset=row.get("offset", ""),
                date=row.get("date", ""),
                license=row.get("license", ""),
                sex=normal_sex(row.get("sex", "")),
                age=row.get("age", "").strip(),
                origin=where,
            )
            kept.append((record, unknown))
        ctx.raise_unknown(csv_path)
        if dropped_views:
            ctx.notes.append(f"{csv_path}: {dropped_views} non-frontal row(s) dropped")
        return self._with_unknown(kept, ctx)

    @staticmethod
    def _explicit_unknown(
        row: dict[str, str], labels: frozenset[str], where: str, ctx: ReadContext
    ) -> frozenset[str] | None:
        """The nodes the row's ``unknown`` column names; None for a bad row (reported)."""
        nodes = set()
        for name in split_unknown(row.get(UNKNOWN_COLUMN, "")):
            node = ctx.hierarchy.node(name)
            if node is None:  # cannot happen: the tree grew with the column's names
                ctx.log.report(where, f"unknown label {name!r} is not in the label tree")
                return None
            if ctx.hierarchy.label_name(node) in labels:
                ctx.log.report(where, f"{name!r} is both positive (finding {row['finding']!r}) and unknown")
                return None
            nodes.add(node)
        return frozenset(nodes)

    @staticmethod
    def _mask(row: dict[str, str], root: Path, where: str, ctx: ReadContext) -> Path | None:
        if not row.get("lung_mask"):
            return None
        mask = safe_join(root, row["lung_mask"])
        if mask is None or not mask.is_file():
            ctx.log.report(where, f"lung mask not found or outside the data folder: {row['lung_mask']}")
            return None
        return mask

    @staticmethod
    def _with_unknown(kept: list[tuple[ImageRecord, frozenset[str]]], ctx: ReadContext) -> list[ImageRecord]:
        by_source: dict[str, list[frozenset[str]]] = defaultdict(list)
        for record, _ in kept:
            by_source[record.source].append(record.labels)
        annotated: dict[str, frozenset[str]] = {}
        for source, label_sets in by_source.items():
            base = ctx.nodes(vocabulary(source)) if source in VOCABULARIES else ctx.paper_nodes
            annotated[source] = base | ctx.nodes_of_labels(label_sets)
        return [
            replace(record, unknown=ctx.unknown(record.labels, annotated[record.source] - explicit))
            for record, explicit in kept
        ]
