"""`cxrlens audit`: :func:`run_audit` checks, for each metadata column, whether each label can be told apart
from where an image comes from — in the data, in the models' behaviour and in their representation — and
writes ``RUN/audit/`` (``metrics.json`` = :meth:`AuditResult.to_dict`, tables, a figure, TCAV's CAVs).

``metrics.json``::

    format, label_names, images, patients, models, settings, checked, flags, notes, skipped, files,
    columns: {COLUMN: {
        noun, values, images (value -> images),
        labels: {LABEL: {
            positives, counts (value -> positives), prevalence, one_column_auroc, cramers_v, confounded,
            top_value, share_of_positives, share_of_images, sentence, confounded_sentence,
            pooled_auroc, within_auroc (value -> AUROC or null), within_notes, scored_images,
            behaviour_flag, behaviour_sentence, by_model (model -> pooled_auroc, within_auroc, behaviour_flag)}},
        probe_auroc (model -> mean over folds), probe (model -> {folds: {fold: auroc, images, classes, ...}}),
        tcav (model -> label -> value -> score, or null), tcav_detail (model -> fold, layer,
            labels: label -> value -> score, scores, random_score, p_value, significant)}}

Parts that cannot run are null with a note: behaviour without ``predictions.csv``, the representation without a
trained model, TCAV with ``audit.tcav`` false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrlens.config import AuditConfig
from cxrlens.evaluate.audit.behaviour import check_behaviour, out_of_fold
from cxrlens.evaluate.audit.columns import parse_columns
from cxrlens.evaluate.audit.data_check import AuditData, check_column, load_audit_data
from cxrlens.evaluate.audit.files import write_files
from cxrlens.evaluate.audit.representation import Representation, audit_representation
from cxrlens.evaluate.audit.sentences import checked_sentence, probe_flag, tcav_flag
from cxrlens.fileio import write_json
from cxrlens.run import Run

FORMAT = "cxrlens-audit/1"


@dataclass(frozen=True)
class AuditResult:
    """What the audit found; :meth:`to_dict` is what it wrote to ``audit/metrics.json``."""

    metrics: dict[str, Any]
    folder: Path

    @property
    def flags(self) -> list[str]:
        return list(self.metrics["flags"])

    @property
    def checked(self) -> str:
        return str(self.metrics["checked"])

    def to_dict(self) -> dict[str, Any]:
        return self.metrics


def _tcav_of(rep: Representation, column: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(model -> label -> value -> score, the detail) of one column; (None, None) when TCAV did not run."""
    if not rep.tcav:
        return None, None
    scores: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for model, result in rep.tcav.items():
        labels: dict[str, Any] = {}
        for label, entry in result["labels"].items():
            values = (entry or {}).get("columns", {}).get(column) if entry else None
            labels[label] = {v: {**s, "images": entry["images"]} for v, s in values.items()} if values else None
        scores[model] = {
            label: ({v: s["score"] for v, s in values.items()} if values else None) for label, values in labels.items()
        }
        detail[model] = {
            "fold": result["fold"],
            "layer": result["layer"],
            "labels": labels,
        }
    return scores, detail


def _flags(columns: dict[str, Any], flag_auroc: float) -> tuple[list[str], list[str]]:
    """(flag sentences, notes). The probe and TCAV flag a column only where it confounds the label in the data:
    they say whether the model *can* use a confounder; a significant TCAV score elsewhere is noted, not flagged
    (each of many tests at p < 0.05 comes out significant by chance one time in twenty)."""
    flags: list[str] = []
    for entry in columns.values():
        for row in entry["labels"].values():
            flags += [s for s in (row["confounded_sentence"], row["behaviour_sentence"]) if s]
    for column, entry in columns.items():
        confounded = [label for label, row in entry["labels"].items() if row["confounded"]]
        for model, auroc in (entry["probe_auroc"] or {}).items():
            if confounded and auroc is not None and auroc >= flag_auroc:
                flags.append(probe_flag(model, column, auroc, confounded))
    tests = elsewhere = 0
    for column, entry in columns.items():
        for model, detail in (entry["tcav_detail"] or {}).items():
            for label, values in detail["labels"].items():
                for value, s in (values or {}).items():
                    tests += 1
                    rises = s["random_score"] is not None and s["score"] > s["random_score"]
                    if not (s["significant"] and rises):
                        continue
                    if entry["labels"][label]["confounded"]:
                        flags.append(
                            tcav_flag(model, label, column, value, s["score"], s["random_score"], s["p_value"])
                        )
                    else:
                        elsewhere += 1
    notes = []
    if elsewhere:
        notes.append(
            f"{elsewhere} of {tests} TCAV scores are significantly above random (p < 0.05) for a column that does "
            "not predict the label in the data; about one in twenty is expected by chance (see tcav_detail)."
        )
    return flags, notes


def _columns(data: AuditData, cfg: AuditConfig, per_model: dict[str, Any], rep: Representation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probes_ran = bool(rep.probes) or bool(rep.tcav)
    for name, column in data.columns.items():
        labels = check_column(data, column, cfg.flag_auroc)
        for j, label in enumerate(data.label_names):
            known = None if data.known is None else data.known[:, j]
            labels[label].update(check_behaviour(j, label, data.truth[:, j], per_model, column, cfg, known))
        tcav, tcav_detail = _tcav_of(rep, name)
        out[name] = {
            "noun": column.noun,
            "values": list(column.order),
            "images": column.counts(),
            "labels": labels,
            "probe_auroc": rep.probe_auroc(name) if probes_ran else None,
            "probe": {m: {"folds": f} for m, f in rep.probes.get(name, {}).items()} if probes_ran else None,
            "tcav": tcav,
            "tcav_detail": tcav_detail,
        }
    return out


def run_audit(run: Run, cfg: AuditConfig, progress: Callable[[int], None] | None = None) -> AuditResult:
    """Audit the run (see the module docstring); ``progress(n)`` is called as images are processed."""
    cfg = cfg.model_copy(update={"by": parse_columns(cfg.by)})
    data = load_audit_data(run, cfg)
    notes = list(data.notes)
    per_model: dict[str, Any] = {}
    if run.layout.predictions.is_file():
        per_model = out_of_fold(run.predictions(), data.filenames)
    else:
        notes.append("No out-of-fold predictions (predictions.csv): the models' behaviour is not checked.")
    rep = audit_representation(run, data, cfg, progress)
    notes += rep.notes
    if not cfg.tcav:
        notes.append("TCAV is off (audit.tcav false).")
    columns = _columns(data, cfg, per_model, rep)
    flags, flag_notes = _flags(columns, cfg.flag_auroc)
    notes += flag_notes
    parts = ["in the data (one-column AUROC, Cramér's V)"]
    if per_model:
        parts.append(
            f"in the out-of-fold scores within each value (with at least {cfg.min_within} positives and "
            f"{cfg.min_within} negatives)"
        )
    if rep.probes:
        parts.append("in the models' features (probe" + (", TCAV)" if rep.tcav else ")"))
    models = sorted(set(per_model) | {m for c in rep.probes.values() for m in c})
    metrics: dict[str, Any] = {
        "format": FORMAT,
        "label_names": list(data.label_names),
        "images": len(data.filenames),
        "patients": len(set(data.patients.tolist())),
        "models": models,
        "settings": cfg.model_dump(),
        "checked": checked_sentence(
            data.label_names, list(data.columns), len(data.filenames), models, parts, len(flags)
        ),
        "flags": flags,
        "notes": notes,
        "skipped": dict(data.skipped),
        "columns": columns,
    }
    metrics["files"] = write_files(metrics, run.layout)
    metrics["files"].append(run.layout.audit_metrics.relative_to(run.layout.audit_dir).as_posix())
    write_json(run.layout.audit_metrics, metrics)
    return AuditResult(metrics, run.layout.audit_dir)
