"""The one table every source is read into: an image, its patient, finding, labels and unknown labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlens.data.labels import Hierarchy, LabelSpace
from cxrlens.errors import DataError


@dataclass(frozen=True)
class ImageRecord:
    filename: str  # unique key, relative to the dataset root
    path: Path  # absolute path of the image file
    patient_id: str
    finding: str  # as the source says it, resolvable by Hierarchy.resolve ("(none)": no positive label)
    labels: frozenset[str]  # positive label names, every ancestor included
    view: str = ""
    source: str = ""
    lung_mask: Path | None = None
    offset: str = ""  # days since first symptoms (Cohen), used to order follow-up images
    date: str = ""
    license: str = ""
    sex: str = ""  # "F", "M" or "" (unknown)
    age: str = ""  # years as written by the source, "" when unknown
    origin: str = ""  # "<file>:<row>" where the record came from, for messages
    # label names whose value is not known for this image (not annotated by its source, or uncertain under
    # labels.uncertain=ignore); never a positive label. LabelSpace.known_mask turns them into a mask.
    unknown: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ProblemLog:
    """Collects bad rows when skipping, or raises at the first one otherwise."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.problems: list[Problem] = []

    def report(self, where: str, message: str) -> None:
        problem = Problem(where, message)
        if not self.skip_bad:
            raise DataError(f"{problem} (pass --skip-bad to skip such rows)")
        self.problems.append(problem)


@dataclass
class Dataset:
    records: list[ImageRecord]
    root: Path
    hierarchy: Hierarchy
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # dropped-by-design rows (lateral views, 'todo', ...)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def patients(self) -> list[str]:
        return sorted({r.patient_id for r in self.records})

    def label_matrix(self, space: LabelSpace) -> np.ndarray:
        return space.encode_many(r.labels for r in self.records)

    def known_matrix(self, space: LabelSpace) -> np.ndarray:
        """Images x labels, bool: True where the value in :meth:`label_matrix` is known."""
        return space.known_mask(r.unknown for r in self.records)

    def by_filename(self) -> dict[str, ImageRecord]:
        return {r.filename: r for r in self.records}

    def subset(self, filenames: Sequence[str]) -> Dataset:
        index = self.by_filename()
        missing = [f for f in filenames if f not in index]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) are not in the dataset, e.g. {missing[0]!r}; "
                "was the split made for other data?"
            )
        return Dataset([index[f] for f in filenames], self.root, self.hierarchy, list(self.problems))
