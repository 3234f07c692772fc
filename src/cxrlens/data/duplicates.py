"""Identical image files under different names: the same X-ray must never be in train and test.

Public collections re-post images (the Cohen collection holds some twice, under other patient ids;
a Kaggle download of Kermany's set can contain a second copy of the folders). Files are compared by
size first and hashed only when sizes match, so a dataset without duplicates costs one ``stat`` per file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from cxrlens.data.records import ImageRecord
from cxrlens.fileio import sha256_file


def identical_files(records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
    """Groups (two or more, in record order) of records whose files have the same bytes."""
    by_size: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_size[record.path.stat().st_size].append(record)
    groups: list[list[ImageRecord]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in same_size:
            by_hash[sha256_file(record.path)].append(record)
        groups.extend(group for group in by_hash.values() if len(group) > 1)
    order = {record.filename: i for i, record in enumerate(records)}
    return sorted(groups, key=lambda group: order[group[0].filename])


def linked_patients(records: Sequence[ImageRecord]) -> dict[str, str]:
    """Each patient id -> the id of its split unit: patients that share an identical image file are one
    unit (union-find), so a split keeps them in the same subset."""
    parent = {r.patient_id: r.patient_id for r in records}

    def root(patient: str) -> str:
        while parent[patient] != patient:
            parent[patient] = parent[parent[patient]]
            patient = parent[patient]
        return patient

    for group in identical_files(records):
        first = root(group[0].patient_id)
        for record in group[1:]:
            other = root(record.patient_id)
            if other != first:
                parent[max(first, other)] = min(first, other)
                first = min(first, other)
    return {patient: root(patient) for patient in parent}
