"""The evaluate stage: the paper's metrics per label, per fold and over folds, ensembles, thresholds, Table 2.

Main entry points: :func:`evaluate_run` and :func:`write_evaluation`.
"""

from cxrlens.evaluate.ensemble import mean_ensemble, vote_ensemble
from cxrlens.evaluate.evaluation import evaluate_run, write_evaluation
from cxrlens.evaluate.metrics import FoldMetrics, fold_metrics, label_prior_baseline, summarize_folds
from cxrlens.evaluate.result import EntryEvaluation, EvaluationResult, Pooled
from cxrlens.evaluate.tables import markdown_table
from cxrlens.evaluate.thresholds import parse_threshold, tune_thresholds

__all__ = [
    "EntryEvaluation",
    "EvaluationResult",
    "FoldMetrics",
    "Pooled",
    "evaluate_run",
    "fold_metrics",
    "label_prior_baseline",
    "markdown_table",
    "mean_ensemble",
    "parse_threshold",
    "summarize_folds",
    "tune_thresholds",
    "vote_ensemble",
    "write_evaluation",
]
