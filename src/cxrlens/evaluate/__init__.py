"""Evaluation of a run directory: metrics per fold, mean ± std over folds, ensembles, thresholds, tables, figures.

Main entry points: :func:`evaluate_run`, :func:`write_evaluation` and :func:`markdown_table`.
"""

from __future__ import annotations

from cxrlens.evaluate.ensemble import ENSEMBLE_MEAN, ENSEMBLE_VOTE, mean_ensemble, vote_ensemble
from cxrlens.evaluate.evaluation import EntryEvaluation, EvaluationResult, Pooled, evaluate_run, write_evaluation
from cxrlens.evaluate.metrics import FoldMetrics, fold_metrics, label_prior_baseline, summarize_folds
from cxrlens.evaluate.tables import markdown_table
from cxrlens.evaluate.thresholds import parse_threshold, tune_thresholds
from cxrlens.run.predictions import Predictions, RunData, load_run

__all__ = [
    "ENSEMBLE_MEAN",
    "ENSEMBLE_VOTE",
    "EntryEvaluation",
    "EvaluationResult",
    "FoldMetrics",
    "Pooled",
    "Predictions",
    "RunData",
    "evaluate_run",
    "fold_metrics",
    "label_prior_baseline",
    "load_run",
    "markdown_table",
    "mean_ensemble",
    "parse_threshold",
    "summarize_folds",
    "tune_thresholds",
    "vote_ensemble",
    "write_evaluation",
]
