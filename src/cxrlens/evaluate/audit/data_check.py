"""Part 1 of the audit, in the data: does a metadata column alone predict a label?

The audited images are every image of the run's splits (train, validation and test of every fold: the
confounding a model can learn is in all of them). Their labels are the run's ``labels.csv`` (what the models
were trained and evaluated on); their metadata (source, view, sex, age) come from the run's data, read again
from its sources. An image of the splits that is no longer in the data is left out with a note.

Per label and column: positives and images per value, the value's prevalence, the one-column AUROC and
Cramér's V (:mod:`.stats`), ``confounded`` = one-column AUROC >= ``audit.flag_auroc``, and a sentence naming
the value that holds most of the label's positives (ties: the one where the label is most frequent).

A label's value that an image's source does not annotate (an empty cell of ``labels.csv``) is unknown, not
negative: each label is checked on the images where it is known only (else a label one collection never
annotates would look perfectly confounded with the collection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrlens.config import AuditConfig
from cxrlens.errors import RunError
from cxrlens.evaluate.audit.columns import ColumnValues, column_values, parse_columns
from cxrlens.evaluate.audit.sentences import confounded_flag, data_sentence
from cxrlens.evaluate.audit.stats import cramers_v, one_column_auroc
from cxrlens.run import Run
from cxrlens.run.predictions import read_truth


@dataclass(frozen=True)
class AuditData:
    """The audited images: ``filenames[i]`` has ``patients[i]``, labels ``truth[i]`` and the columns' values."""

    filenames: tuple[str, ...]
    patients: np.ndarray
    truth: np.ndarray  # bool, images x labels
    label_names: tuple[str, ...]
    columns: dict[str, ColumnValues]  # the audited columns (skipped ones are not here)
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is not audited
    notes: tuple[str, ...] = ()
    known: np.ndarray | None = None  # bool, images x labels: False where the label is unknown; None: all known

    @property
    def known_mask(self) -> np.ndarray:
        return np.ones(self.truth.shape, dtype=bool) if self.known is None else self.known

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.filenames)}


def load_audit_data(run: Run, cfg: AuditConfig) -> AuditData:
    """The run's images with labels and metadata (see the module docstring)."""
    wanted = parse_columns(cfg.by)
    split_files = sorted({row.filename for row in run.splits()})
    if not split_files:
        raise RunError(f"{run.root}: the splits list no image")
    truth_of = read_truth(run.layout.labels, run.label_names)
    records = run.dataset.by_filename()
    kept = [name for name in split_files if name in records and name in truth_of]
    notes: list[str] = []
    gone = len(split_files) - len(kept)
    if gone:
        notes.append(f"{gone} image(s) of the splits are no longer in the data (or labels) and are left out.")
    if not kept:
        raise RunError(f"{run.root}: none of the splits' images is in the run's data any more")
    chosen = [records[name] for name in kept]
    columns: dict[str, ColumnValues] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        values = column_values(chosen, name, cfg.age_bins)
        reason = values.skip_reason()
        if reason is None:
            columns[name] = values
        else:
            skipped[name] = reason
            notes.append(f"{name} is not audited: {reason}.")
    known = np.stack([truth_of[name][2] for name in kept])
    return AuditData(
        filenames=tuple(kept),
        patients=np.array([truth_of[name][0] for name in kept], dtype=object),
        truth=np.stack([truth_of[name][1] for name in kept]).astype(bool),
        label_names=tuple(run.label_names),
        columns=columns,
        skipped=skipped,
        notes=tuple(notes),
        known=None if known.all() else known,
    )


def check_label(label: str, truth: np.ndarray, column: ColumnValues, flag_auroc: float) -> dict[str, Any]:
    """The data part of one label and one column (JSON-ready)."""
    truth = np.asarray(truth, dtype=bool)
    images = column.counts()
    counts = {value: int(truth[column.values == value].sum()) for value in column.order}
    positives = int(truth.sum())
    prevalence = {value: (counts[value] / images[value] if images[value] else None) for value in column.order}
    auroc = one_column_auroc(truth, column.values)
    top = max(column.order, key=lambda v: (counts[v], prevalence[v] or 0.0)) if positives else None
    share_pos = counts[top] / positives if top is not None else None
    share_img = images[top] / len(truth) if top is not None else None
    confounded = auroc is not None and auroc >= flag_auroc
    v = cramers_v(truth, column.values)
    sentence = None
    if confounded and auroc is not None and top is not None and share_pos is not None and share_img is not None:
        sentence = confounded_flag(label, column.name, auroc, v, top, share_pos, share_img)
    return {
        "positives": positives,
        "counts": counts,
        "prevalence": prevalence,
        "one_column_auroc": auroc,
        "cramers_v": v,
        "confounded": confounded,
        "top_value": top,
        "share_of_positives": share_pos,
        "share_of_images": share_img,
        "sentence": data_sentence(label, column.name, top, share_pos or 0.0, share_img or 0.0, positives),
        "confounded_sentence": sentence,
    }


def known_rows(column: ColumnValues, rows: np.ndarray) -> ColumnValues:
    """The column on the given images only (same value order: a value without an image there counts 0)."""
    return ColumnValues(column.name, column.values[rows], column.order)


def check_column(data: AuditData, column: ColumnValues, flag_auroc: float) -> dict[str, dict[str, Any]]:
    """Label -> its data part for one column, over the images where the label is known."""
    out = {}
    for j, label in enumerate(data.label_names):
        rows = data.known_mask[:, j]
        out[label] = check_label(label, data.truth[rows, j], known_rows(column, rows), flag_auroc)
        out[label]["unknown"] = int((~rows).sum())
    return out
