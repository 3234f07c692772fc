"""``evaluation/thresholds.json``: the decision thresholds of the run's last ``cxrlens evaluate``.

Written by the evaluate stage, read by everything that decides (predict, explain, the report, external
validation), so that they all decide as the tables do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.errors import DamagedFileError, RunError
from cxrlens.fileio import read_json, write_json
from cxrlens.models.names import ENSEMBLE, ENSEMBLE_MEAN

FORMAT = "cxrlens-thresholds/1"


@dataclass(frozen=True)
class RunThresholds:
    """``mode`` (fixed or tuned), the fixed value or tuning fallback, and per entry and fold the thresholds."""

    mode: str
    value: float
    label_names: tuple[str, ...]
    entries: Mapping[str, Mapping[int, tuple[float, ...]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "mode": self.mode,
            "value": self.value,
            "label_names": list(self.label_names),
            "entries": {
                name: {str(fold): list(values) for fold, values in folds.items()}
                for name, folds in self.entries.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunThresholds:
        try:
            names = tuple(str(n) for n in data["label_names"])
            entries = {
                str(name): {int(fold): tuple(float(v) for v in values) for fold, values in folds.items()}
                for name, folds in data["entries"].items()
            }
            return cls(str(data["mode"]), float(data["value"]), names, entries)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DamagedFileError(f"{where}: not a thresholds file ({err}); rerun `cxrlens evaluate`") from None


def write_thresholds(path: Path, thresholds: RunThresholds) -> None:
    write_json(path, thresholds.to_dict())


def read_thresholds(path: Path) -> RunThresholds | None:
    """The stored thresholds, or None before the first ``cxrlens evaluate``."""
    return RunThresholds.from_dict(read_json(path), str(path)) if path.is_file() else None


def decision_thresholds(
    stored: RunThresholds | None,
    configured: float | str,
    label_names: Sequence[str],
    model: str = ENSEMBLE,
    fold: int | None = None,
    members: Sequence[str] = (),
) -> dict[str, float]:
    """Label -> threshold for ``model`` (those of ``fold``, or their mean over folds).

    The ensemble uses those of ``ensemble-mean``; when that was not evaluated (one member, or ensembles off),
    the mean of its ``members``' thresholds. A model not evaluated yet uses the configured number.
    """
    if stored is not None and list(stored.label_names) != list(label_names):
        raise RunError("the thresholds of the last evaluation are for other labels; rerun `cxrlens evaluate`")
    folds = (stored.entries.get(ENSEMBLE_MEAN if model == ENSEMBLE else model) or {}) if stored else {}
    chosen = [values for k, values in folds.items() if fold is None or k == fold]
    if chosen:
        mean = np.mean(np.asarray(chosen, dtype=np.float64), axis=0)
        return dict(zip(label_names, (float(t) for t in mean), strict=True))
    if model == ENSEMBLE and members:
        each = [decision_thresholds(stored, configured, label_names, m, fold) for m in members]
        return {name: float(np.mean([t[name] for t in each])) for name in label_names}
    if isinstance(configured, str):
        where = f"{model!r}" + ("" if fold is None else f" in fold {fold}")
        raise RunError(f"thresholds are 'tuned' but not computed for {where}; run `cxrlens evaluate`")
    return {name: float(configured) for name in label_names}
