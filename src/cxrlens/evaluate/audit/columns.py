"""The metadata columns the audit knows and the value each image has in them.

Columns: ``source`` (the collection), ``view`` (PA, AP, ...), ``sex`` (F / M) and ``age`` (years, put in bins by
``audit.age_bins``: edges ``[18, 40, 60, 80]`` give ``<18, 18-39, 40-59, 60-79, 80+``). An empty or unreadable
value is ``unknown``: it is a value of its own in the data and behaviour checks (missing metadata can itself
follow the collection), but not a concept of the representation checks (it is not something in the image).
A column with fewer than two known values cannot confound anything and is skipped with a note.

``audit.by`` may hold comma-separated names (``["source,view"]``, as ``--by source,view`` gives) as well as
one name per item; names are case-insensitive.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrlens.data.records import ImageRecord
from cxrlens.errors import ConfigError

COLUMNS = ("source", "view", "sex", "age")
UNKNOWN = "unknown"
#: how a value of a column reads in a sentence: "{phrase} {value}"
_PHRASES = {"source": "from", "view": "in view", "sex": "of sex", "age": "aged"}
#: the column as a noun ("within each <noun>")
NOUNS = {"source": "source", "view": "view", "sex": "sex", "age": "age group"}
_AGE = re.compile(r"\s*(\d+(?:[.,]\d+)?)\s*(?:y|yr|yrs|year|years)?\.?\s*", re.IGNORECASE)
MAX_AGE = 130.0


def parse_columns(by: Sequence[str]) -> list[str]:
    """The audited columns, in order, without repeats: ``["source,view", "Sex"]`` -> ``[source, view, sex]``."""
    out: list[str] = []
    for item in by:
        for part in str(item).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in COLUMNS:
                raise ConfigError(f"audit.by: unknown column {part.strip()!r}; valid: {', '.join(COLUMNS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError(f"audit.by: no column to audit; valid: {', '.join(COLUMNS)}")
    return out


def check_edges(edges: Sequence[int]) -> list[int]:
    edges = list(edges)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ConfigError(f"audit.age_bins: the edges must increase, got {edges}")
    return edges


def age_bin_names(edges: Sequence[int]) -> list[str]:
    """``[18, 40]`` -> ``["<18", "18-39", "40+"]``; no edges: one bin ``all ages``."""
    edges = check_edges(edges)
    if not edges:
        return ["all ages"]
    inner = [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]


def parse_age(text: str) -> float | None:
    """Years from the text a source wrote (``45``, ``45.5``, ``45 y``); None when empty or unreadable."""
    match = _AGE.fullmatch(text or "")
    if match is None:
        return None
    years = float(match.group(1).replace(",", "."))
    return years if math.isfinite(years) and 0.0 <= years <= MAX_AGE else None


def age_bin(text: str, edges: Sequence[int]) -> str:
    """The bin name of an age text (``unknown`` when it has no readable age)."""
    years = parse_age(text)
    if years is None:
        return UNKNOWN
    names = age_bin_names(edges)
    index = sum(1 for edge in edges if years >= edge)
    return names[index]


def value_of(record: ImageRecord, column: str, edges: Sequence[int]) -> str:
    if column == "age":
        return age_bin(record.age, edges)
    text = str(getattr(record, column)).strip()
    return text or UNKNOWN


@dataclass(frozen=True)
class ColumnValues:
    """One column over the audited images: ``values[i]`` belongs to image ``i``; ``order`` lists the values
    present (age bins in age order, others alphabetically; ``unknown`` last)."""

    name: str
    values: np.ndarray  # str objects, one per image
    order: tuple[str, ...]

    @property
    def known(self) -> tuple[str, ...]:
        return tuple(v for v in self.order if v != UNKNOWN)

    @property
    def noun(self) -> str:
        return NOUNS[self.name]

    def counts(self) -> dict[str, int]:
        return {value: int((self.values == value).sum()) for value in self.order}

    def skip_reason(self) -> str | None:
        """Why the column cannot be audited, or None."""
        if not self.known:
            return f"no image has its {self.name} recorded"
        if len(self.known) < 2:
            return f"every image with a {self.name} recorded has the same one ({self.known[0]})"
        return None


def column_values(records: Sequence[ImageRecord], column: str, edges: Sequence[int]) -> ColumnValues:
    values = np.array([value_of(r, column, edges) for r in records], dtype=object)
    present = set(values.tolist())
    if column == "age":
        ranked = [name for name in age_bin_names(edges) if name in present]
    else:
        ranked = sorted(present - {UNKNOWN})
    order = (*ranked, UNKNOWN) if UNKNOWN in present else tuple(ranked)
    return ColumnValues(column, values, tuple(order))


def describe(column: str, value: str) -> str:
    """``from cohen``, ``in view AP``, ``of sex F``, ``aged 18-39``; ``with unknown age``."""
    if value == UNKNOWN:
        return f"with unknown {column}"
    return f"{_PHRASES[column]} {value}"
