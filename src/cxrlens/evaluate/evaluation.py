"""Evaluate a run directory: every model and ensemble, per fold and mean ± std over folds, and write it out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.data.labels import Hierarchy
from cxrlens.errors import ConfigError, RunError
from cxrlens.evaluate.ensemble import ENSEMBLE_MEAN, ENSEMBLE_VOTE, align, mean_ensemble, vote_ensemble
from cxrlens.evaluate.metrics import (
    DEFAULT_MIN_SUPPORT,
    STD_DDOF,
    FoldMetrics,
    binarize,
    fold_metrics,
    summarize_folds,
)
from cxrlens.evaluate.plots import write_figures
from cxrlens.evaluate.tables import markdown_table, per_label_csv, table2_csv
from cxrlens.evaluate.thresholds import FIXED, fixed_thresholds, parse_threshold, tune_thresholds
from cxrlens.fileio import atomic_write_json, atomic_write_text
from cxrlens.run.predictions import PREDICTIONS_CSV, RunData, load_run

EVALUATION_DIR = "evaluation"
FORMAT = "cxrlens-evaluation/1"

CONVENTIONS = {
    "decision": "a label is positive when its score is >= its threshold",
    "zero_division": "precision, recall, F1 and specificity are 0 when undefined; ROC-AUC is null when a label "
    "has a single class",
    "micro": "pooled confusion counts over the evaluable labels; micro_all pools every label",
    "macro": "unweighted mean of per-label values over the evaluable labels (macro F1 = mean per-label F1)",
    "evaluable": "a label is evaluable in a fold with >= min_support positive and >= 1 negative test images",
    "std": f"sample std over folds (ddof={STD_DDOF}); 0 with a single fold",
    "per_label_summary": "per-label mean ± std over all folds; support sums the folds' test positives",
    "tuned_thresholds": "per fold and label, max F1 on that fold's val rows only; ties: closest to 0.5, then "
    "smaller; no positive in val: 0.5",
    "ensemble_mean": "mean of member probabilities on the test images common to all members, then thresholded "
    "(tuned on the mean val probabilities when thresholds are tuned)",
    "ensemble_vote": "strict majority (> half) of the members' decisions, each with its own thresholds; a tie is "
    "negative; ROC-AUC uses the vote fraction",
    "hierarchy_consistency": "share of test images whose predicted labels have no positive child under a "
    "negative parent",
    "pooled_figures": "confusion matrices and ROC curves pool every fold's test predictions",
}


@dataclass
class Pooled:
    """Every fold's test rows of one entry, stacked (used for the pooled figures; not serialised)."""

    y_true: np.ndarray
    scores: np.ndarray
    y_pred: np.ndarray


@dataclass
class EntryEvaluation:
    """One row of Table 2: a model or an ensemble, per fold and summarised over folds."""

    name: str
    kind: str  # "model", "ensemble-mean" or "ensemble-vote"
    members: list[str]
    folds: list[FoldMetrics]
    summary: dict[str, Any]
    pooled: Pooled | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "members": list(self.members),
            "summary": self.summary,
            "folds": [f.to_dict() for f in self.folds],
        }


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_run` computed; :meth:`to_dict` is JSON-ready (NaN becomes null)."""

    run_dir: str
    label_names: list[str]
    threshold_mode: str  # "fixed" or "tuned"
    threshold: float  # the fixed value, or the fallback of tuned thresholds
    min_support: int
    models: list[str]
    ensemble_members: list[str]
    entries: dict[str, EntryEvaluation]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(
            {
                "format": FORMAT,
                "run_dir": self.run_dir,
                "label_names": list(self.label_names),
                "threshold": {"mode": self.threshold_mode, "value": self.threshold},
                "min_support": self.min_support,
                "models": list(self.models),
                "ensemble_members": list(self.ensemble_members),
                "conventions": dict(CONVENTIONS),
                "notes": list(self.notes),
                "entries": {name: entry.to_dict() for name, entry in self.entries.items()},
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _pool(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_labels: int) -> Pooled:
    if not parts:
        empty = np.zeros((0, n_labels))
        return Pooled(empty.astype(bool), empty, empty.astype(bool))
    return Pooled(
        y_true=np.concatenate([p[0] for p in parts]).astype(bool),
        scores=np.concatenate([p[1] for p in parts]),
        y_pred=np.concatenate([p[2] for p in parts]).astype(bool),
    )


class _Evaluator:
    def __init__(self, run: RunData, mode: str, base: float, min_support: int) -> None:
        self.run = run
        self.mode = mode
        self.base = base
        self.min_support = min_support
        self.labels = list(run.label_names)
        self.hierarchy = Hierarchy.build()
        self._thresholds: dict[tuple[str, int], np.ndarray] = {}

    def thresholds(self, model: str, fold: int) -> np.ndarray:
        key = (model, fold)
        if key not in self._thresholds:
            if self.mode == FIXED:
                self._thresholds[key] = fixed_thresholds(len(self.labels), self.base)
            else:
                val = self.run.get(model, fold, "val")
                if val is None or len(val) == 0:
                    raise RunError(
                        f"{self.run.run_dir / PREDICTIONS_CSV}: model {model!r} fold {fold} has no val rows; "
                        "cannot tune thresholds (use a fixed threshold)"
                    )
                self._thresholds[key] = tune_thresholds(val.truth, val.probs, self.base)
        return self._thresholds[key]

    def metrics(
        self, fold: int, truth: np.ndarray, scores: np.ndarray, thr: np.ndarray | None, pred: np.ndarray | None = None
    ) -> FoldMetrics:
        return fold_metrics(
            truth,
            scores,
            self.labels,
            thr,
            y_pred=pred,
            fold=fold,
            min_support=self.min_support,
            hierarchy=self.hierarchy,
        )

    def model(self, model: str) -> EntryEvaluation:
        folds: list[FoldMetrics] = []
        parts = []
        for fold in self.run.folds(model):
            test = self.run.blocks[(model, fold, "test")]  # folds() lists only folds with test rows
            thr = self.thresholds(model, fold)
            folds.append(self.metrics(fold, test.truth, test.probs, thr))
            parts.append((test.truth, test.probs, binarize(test.probs, thr)))
        return EntryEvaluation(
            name=model,
            kind="model",
            members=[model],
            folds=folds,
            summary=summarize_folds(folds, self.labels),
            pooled=_pool(parts, len(self.labels)),
        )

    def ensembles(self, members: Sequence[str], notes: list[str]) -> list[EntryEvaluation]:
        fold_sets = [set(self.run.folds(m)) for m in members]
        common = sorted(set.intersection(*fold_sets))
        skipped = sorted(set.union(*fold_sets) - set(common))
        if skipped:
            notes.append(f"ensembles skip fold(s) {skipped}: not every member has test predictions there")
        mean_folds: list[FoldMetrics] = []
        vote_folds: list[FoldMetrics] = []
        mean_parts = []
        vote_parts = []
        for fold in common:
            tests = align([self.run.blocks[(m, fold, "test")] for m in members])
            n_common = len(tests[0])
            largest = max(len(self.run.blocks[(m, fold, "test")]) for m in members)
            if n_common == 0:
                notes.append(f"ensembles skip fold {fold}: the members share no test image")
                continue
            if n_common < largest:
                notes.append(f"ensembles, fold {fold}: {n_common} test images common to all members (of {largest})")
            truth = tests[0].truth
            mean_probs = mean_ensemble([t.probs for t in tests])
            if self.mode == FIXED:
                mean_thr = fixed_thresholds(len(self.labels), self.base)
            else:
                vals = [self.run.get(m, fold, "val") for m in members]
                if any(v is None or len(v) == 0 for v in vals):
                    raise RunError(
                        f"{self.run.run_dir / PREDICTIONS_CSV}: fold {fold} lacks val rows for some ensemble "
                        "member; cannot tune ensemble thresholds"
                    )
                aligned_vals = align([v for v in vals if v is not None])
                mean_thr = tune_thresholds(
                    aligned_vals[0].truth, mean_ensemble([v.probs for v in aligned_vals]), self.base
                )
            mean_folds.append(self.metrics(fold, truth, mean_probs, mean_thr))
            mean_parts.append((truth, mean_probs, binarize(mean_probs, mean_thr)))
            decisions = [binarize(t.probs, self.thresholds(m, fold)) for m, t in zip(members, tests, strict=True)]
            vote_pred, fraction = vote_ensemble(decisions)
            vote_folds.append(self.metrics(fold, truth, fraction, None, vote_pred))
            vote_parts.append((truth, fraction, vote_pred))
        if not mean_folds:
            notes.append("ensembles skipped: no fold with test images common to all members")
            return []
        return [
            EntryEvaluation(
                name=name,
                kind=name,
                members=list(members),
                folds=folds,
                summary=summarize_folds(folds, self.labels),
                pooled=_pool(parts, len(self.labels)),
            )
            for name, folds, parts in (
                (ENSEMBLE_MEAN, mean_folds, mean_parts),
                (ENSEMBLE_VOTE, vote_folds, vote_parts),
            )
        ]


def _check_models(requested: Sequence[str], available: Sequence[str], path: Path, what: str) -> list[str]:
    unknown = [m for m in requested if m not in available]
    if unknown:
        raise RunError(f"{path}: no test predictions for {what} {unknown}; available: {', '.join(available)}")
    return list(dict.fromkeys(requested))


def evaluate_run(
    run_dir: str | Path,
    threshold: float | str = 0.5,
    min_support: int = DEFAULT_MIN_SUPPORT,
    models: list[str] | None = None,
    ensembles: bool | Sequence[str] = True,
) -> EvaluationResult:
    """Evaluate every (or the given) model of a run directory, plus the two ensembles.

    ``threshold``: a number in [0, 1] (fixed for every label), ``"fixed"`` (0.5) or ``"tuned"`` (per model,
    fold and label, maximising F1 on that fold's val rows). ``ensembles``: True for ensembles over the evaluated
    models, False for none, or the list of member models. Ensembles need at least two members.
    """
    mode, base = parse_threshold(threshold)
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
        raise ConfigError(f"min_support must be a positive integer, got {min_support!r}")
    run = load_run(run_dir)
    path = run.run_dir / PREDICTIONS_CSV
    available = [m for m in run.models() if run.folds(m)]
    if not available:
        raise RunError(f"{path}: no test rows")
    chosen = _check_models(models, available, path, "model(s)") if models else list(available)
    if ensembles is True:
        members = chosen
    elif ensembles is False:
        members = []
    else:
        members = _check_models(list(ensembles), available, path, "ensemble member(s)")
    evaluator = _Evaluator(run, mode, base, min_support)
    notes: list[str] = []
    entries = {model: evaluator.model(model) for model in chosen}
    if ensembles is not False and len(members) < 2:
        notes.append(f"ensembles skipped: they need at least two models, got {members}")
        members = []
    if members:
        for entry in evaluator.ensembles(members, notes):
            entries[entry.name] = entry
    return EvaluationResult(
        run_dir=str(run.run_dir),
        label_names=list(run.label_names),
        threshold_mode=mode,
        threshold=base,
        min_support=min_support,
        models=chosen,
        ensemble_members=list(members),
        entries=entries,
        notes=notes,
    )


def write_evaluation(run_dir: str | Path, result: EvaluationResult) -> list[Path]:
    """Write metrics.json, table2.md, table2.csv, per_label.csv and figures/*.png under ``run_dir/evaluation``."""
    out = Path(run_dir) / EVALUATION_DIR
    written: list[Path] = []
    atomic_write_json(out / "metrics.json", result.to_dict())
    written.append(out / "metrics.json")
    for name, text in (
        ("table2.md", markdown_table(result)),
        ("table2.csv", table2_csv(result)),
        ("per_label.csv", per_label_csv(result)),
    ):
        atomic_write_text(out / name, text)
        written.append(out / name)
    written.extend(write_figures(result, out / "figures"))
    return written
