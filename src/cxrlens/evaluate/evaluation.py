"""Evaluate a run: every model and ensemble, per fold and mean ± std over folds, and write it into the run.

Unknown values of ``labels.csv`` (empty cells) are left out of every number: each block's known mask goes with
its truth into the metrics, the threshold tuning and the pooled figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlens.config import EvaluateConfig
from cxrlens.data.labels import Hierarchy
from cxrlens.errors import RunError
from cxrlens.evaluate.ensemble import align, mean_ensemble, vote_ensemble
from cxrlens.evaluate.metrics import FoldMetrics, binarize, fold_metrics, summarize_folds
from cxrlens.evaluate.plots import write_figures
from cxrlens.evaluate.result import EntryEvaluation, EvaluationResult, Pooled
from cxrlens.evaluate.tables import markdown_table, per_label_csv, table2_csv
from cxrlens.evaluate.thresholds import FIXED, fixed_thresholds, parse_threshold, tune_thresholds
from cxrlens.fileio import atomic_write_text, write_json
from cxrlens.models.names import ENSEMBLE_MEAN, ENSEMBLE_VOTE
from cxrlens.run import Run
from cxrlens.run.predictions import RunData
from cxrlens.run.thresholds import RunThresholds, write_thresholds

Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # truth, scores, decisions, known


def _pool(parts: list[Part], n_labels: int) -> Pooled:
    if not parts:
        empty = np.zeros((0, n_labels))
        return Pooled(empty.astype(bool), empty, empty.astype(bool))
    known = np.concatenate([p[3] for p in parts]).astype(bool)
    return Pooled(
        y_true=np.concatenate([p[0] for p in parts]).astype(bool),
        scores=np.concatenate([p[1] for p in parts]),
        y_pred=np.concatenate([p[2] for p in parts]).astype(bool),
        known=None if known.all() else known,
    )


class _Evaluator:
    def __init__(self, run: RunData, mode: str, base: float, min_support: int, hierarchy: Hierarchy) -> None:
        self.run = run
        self.mode = mode
        self.base = base
        self.min_support = min_support
        self.labels = list(run.label_names)
        self.hierarchy = hierarchy
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
                        f"{self.run.path}: model {model!r} fold {fold} has no val rows; "
                        "cannot tune thresholds (use a fixed threshold)"
                    )
                self._thresholds[key] = tune_thresholds(val.truth, val.probs, self.base, val.known)
        return self._thresholds[key]

    def metrics(
        self,
        fold: int,
        truth: np.ndarray,
        scores: np.ndarray,
        thr: np.ndarray | None,
        pred: np.ndarray | None = None,
        known: np.ndarray | None = None,
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
            known=known,
        )

    def model(self, model: str) -> EntryEvaluation:
        folds: list[FoldMetrics] = []
        parts: list[Part] = []
        for fold in self.run.folds(model):
            test = self.run.blocks[(model, fold, "test")]  # folds() lists only folds with test rows
            thr = self.thresholds(model, fold)
            folds.append(self.metrics(fold, test.truth, test.probs, thr, known=test.known))
            parts.append((test.truth, test.probs, binarize(test.probs, thr), test.known_mask))
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
        mean_parts: list[Part] = []
        vote_parts: list[Part] = []
        for fold in common:
            tests = align([self.run.blocks[(m, fold, "test")] for m in members])
            n_common = len(tests[0])
            largest = max(len(self.run.blocks[(m, fold, "test")]) for m in members)
            if n_common == 0:
                notes.append(f"ensembles skip fold {fold}: the members share no test image")
                continue
            if n_common < largest:
                notes.append(f"ensembles, fold {fold}: {n_common} test images common to all members (of {largest})")
            truth, known = tests[0].truth, tests[0].known
            mean_probs = mean_ensemble([t.probs for t in tests])
            if self.mode == FIXED:
                mean_thr = fixed_thresholds(len(self.labels), self.base)
            else:
                vals = [self.run.get(m, fold, "val") for m in members]
                if any(v is None or len(v) == 0 for v in vals):
                    raise RunError(
                        f"{self.run.path}: fold {fold} lacks val rows for some ensemble "
                        "member; cannot tune ensemble thresholds"
                    )
                aligned_vals = align([v for v in vals if v is not None])
                mean_thr = tune_thresholds(
                    aligned_vals[0].truth,
                    mean_ensemble([v.probs for v in aligned_vals]),
                    self.base,
                    aligned_vals[0].known,
                )
            mean_folds.append(self.metrics(fold, truth, mean_probs, mean_thr, known=known))
            mean_parts.append((truth, mean_probs, binarize(mean_probs, mean_thr), tests[0].known_mask))
            decisions = [binarize(t.probs, self.thresholds(m, fold)) for m, t in zip(members, tests, strict=True)]
            vote_pred, fraction = vote_ensemble(decisions)
            vote_folds.append(self.metrics(fold, truth, fraction, None, vote_pred, known))
            vote_parts.append((truth, fraction, vote_pred, tests[0].known_mask))
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


def evaluate_run(run: Run, cfg: EvaluateConfig, models: Sequence[str] | None = None) -> EvaluationResult:
    """Evaluate every (or the given) model of a run, plus the two ensembles.

    ``cfg.threshold``: a number in [0, 1] (fixed for every label), ``"fixed"`` (0.5) or ``"tuned"`` (per model,
    fold and label, maximising F1 on that fold's val rows). ``cfg.ensembles``: the two ensembles, over
    ``cfg.members`` or else the evaluated models (they need at least two).
    """
    mode, base = parse_threshold(cfg.threshold)
    data = run.predictions()
    available = [m for m in data.models() if data.folds(m)]
    if not available:
        raise RunError(f"{data.path}: no test rows")
    chosen = _check_models(models, available, data.path, "model(s)") if models else list(available)
    if not cfg.ensembles:
        members: list[str] = []
    elif cfg.members:
        members = _check_models(cfg.members, available, data.path, "ensemble member(s)")
    else:
        members = list(chosen)
    evaluator = _Evaluator(data, mode, base, cfg.min_support, run.hierarchy)
    notes: list[str] = []
    entries = {model: evaluator.model(model) for model in chosen}
    if cfg.ensembles and len(members) < 2:
        notes.append(f"ensembles skipped: they need at least two models, got {members}")
        members = []
    if members:
        for entry in evaluator.ensembles(members, notes):
            entries[entry.name] = entry
    return EvaluationResult(
        run_dir=str(run.root),
        label_names=list(data.label_names),
        threshold_mode=mode,
        threshold=base,
        min_support=cfg.min_support,
        models=chosen,
        ensemble_members=list(members),
        entries=entries,
        notes=notes,
    )


def thresholds_of(result: EvaluationResult) -> RunThresholds:
    """The decision thresholds the evaluation used, per entry and fold (the vote has none of its own)."""
    entries = {
        name: {f.fold: tuple(f.thresholds) for f in entry.folds if f.thresholds is not None}
        for name, entry in result.entries.items()
        if entry.kind != ENSEMBLE_VOTE
    }
    return RunThresholds(result.threshold_mode, result.threshold, tuple(result.label_names), entries)


def write_evaluation(run: Run, result: EvaluationResult) -> list[Path]:
    """Write metrics.json, thresholds.json, table2.md/.csv, per_label.csv and the figures into the run."""
    layout = run.layout
    write_json(layout.evaluation_metrics, result.to_dict())
    write_thresholds(layout.thresholds, thresholds_of(result))
    written = [layout.evaluation_metrics, layout.thresholds]
    for path, text in (
        (layout.table2_md, markdown_table(result)),
        (layout.table2_csv, table2_csv(result)),
        (layout.per_label_csv, per_label_csv(result)),
    ):
        atomic_write_text(path, text)
        written.append(path)
    written.extend(write_figures(result, layout))
    return written
