"""`cxrlens evaluate-external`: the run's models on data from elsewhere, beside their in-domain numbers.

In-domain numbers (the paper's Table 2) are measured on test images from the same collections as the training
images; when labels and collections coincide, a model can score by recognising the collection. An external set
(other hospitals, other populations) shows what is left. Its findings are mapped onto the run's labels through
the run's label hierarchy; a label without a positive or without a negative image there is reported as not
evaluable and left out of the averages. A label a source does not annotate is unknown (not negative) for its
images and left out of that label's numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.config import ExternalConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.labels import LabelSpace
from cxrlens.data.records import Dataset
from cxrlens.errors import DataError
from cxrlens.evaluate.external.errors import confident_errors, explain_errors
from cxrlens.evaluate.external.files import write_files
from cxrlens.evaluate.external.predictions import predict_external
from cxrlens.evaluate.external.scoring import external_scores, in_domain_scores
from cxrlens.evaluate.external.stats import Scored, summarise
from cxrlens.fileio import json_ready, write_json
from cxrlens.models.names import ENSEMBLE, ENSEMBLE_MEAN, ENSEMBLE_VOTE
from cxrlens.run import Run

FORMAT = "cxrlens-external/1"


@dataclass(frozen=True)
class ExternalResult:
    name: str
    folder: str
    metrics: dict[str, Any]  # what metrics.json holds

    def to_dict(self) -> dict[str, Any]:
        return self.metrics


def external_dataset(run: Run, sources: Sequence[str], skip_bad: bool) -> Dataset:
    """The external data, read with the run's label hierarchy (aliases, extra nodes) and frontal views."""
    return run.data_from(sources, skip_bad)


def default_name(sources: Sequence[str]) -> str:
    return "+".join(Path(s).name or str(s) for s in sources)


def _change(external: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any]:
    """External minus in-domain: micro F1 and, per label, sensitivity, specificity and AUROC."""
    if not own:
        return {}

    def minus(a: Any, b: Any) -> float | None:
        return None if a is None or b is None or np.isnan(a) or np.isnan(b) else float(a - b)

    labels = {
        label: {m: minus(row[m], own["labels"][label][m]) for m in ("sensitivity", "specificity", "auroc")}
        for label, row in external["labels"].items()
    }
    return {"micro_f1": minus(external["micro"]["f1"], own["micro"]["f1"]), "labels": labels}


def _notes(run: Run, dataset: Dataset, outside: Counter[str]) -> list[str]:
    notes = []
    trained_on = {r.source for r in run.dataset.records}
    shared = sorted({r.source for r in dataset.records} & trained_on)
    if shared:
        notes.append(
            f"This set shares the source(s) {', '.join(shared)} with the run's training data: its patients are new "
            "but its hospitals and scanners are not, so it checks generalisation to new patients, not to new sites."
        )
    if outside:
        listed = ", ".join(f"{k} ({n})" for k, n in outside.most_common())
        notes.append(f"Findings outside the run's labels (negative for every label here): {listed}.")
    return notes + [str(p) for p in dataset.problems]


def evaluate_external(
    run: Run,
    sources: Sequence[str],
    cfg: ExternalConfig,
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExternalResult:
    """Every trained model (and the ensembles) on the images of ``sources``; writes ``external/<name>/``."""
    dataset = external_dataset(run, sources, skip_bad)
    name = cfg.name or default_name(sources)
    files = run.layout.external(name)
    cache = PreprocessCache(run.preprocess, run.config.data.cache_dir)
    prepared = cache.prepare(dataset.records)
    if prepared.failed:
        if not skip_bad:
            raise DataError(f"{prepared.failed[0]} ({len(prepared.failed)} image(s) unreadable; pass --skip-bad)")
        bad = {Path(str(err.path)) for err in prepared.failed}
        dataset.records = [r for r in dataset.records if r.path not in bad]
    records = dataset.records
    if not records:
        raise DataError(f"no usable images in {', '.join(sources)}")
    label_names = run.label_names
    space = LabelSpace(label_names)
    truth = space.encode_many(r.labels for r in records).astype(bool)
    known = space.known_mask(r.unknown for r in records) | truth
    outside = Counter(r.finding for r in records if not (r.labels & set(label_names)))
    patients = np.array([r.patient_id for r in records])
    predictions = predict_external(run, records, files, cache, cfg.memory_gib, progress)

    ours = external_scores(run, truth, patients, predictions.probs, None if known.all() else known)
    own = in_domain_scores(run)
    sources_of = np.array([r.source for r in records])
    by_source = sorted(set(sources_of)) if len(set(sources_of)) > 1 else []

    def numbers(scored: Scored, entry: str, seed_offset: int) -> dict[str, Any]:
        return summarise(scored, label_names, cfg.min_support, cfg.bootstrap, cfg.seed + seed_offset,
                         cfg.calibration_bins, probabilities=entry != ENSEMBLE_VOTE)  # fmt: skip

    models: dict[str, Any] = {}
    for k, (entry, scored) in enumerate(ours.items()):
        result = numbers(scored, entry, k)
        result["in_domain"] = numbers(own[entry], entry, k) if entry in own else None
        result["change"] = _change(result, result["in_domain"])
        result["by_source"] = {
            source: numbers(scored.take(np.flatnonzero(sources_of == source)), entry, k) for source in by_source
        }
        models[entry] = result

    headline = ENSEMBLE_MEAN if ENSEMBLE_MEAN in ours else next(iter(ours))
    members = sorted(predictions.probs) if headline == ENSEMBLE_MEAN else [headline]
    threshold = np.array([run.thresholds(ENSEMBLE if headline == ENSEMBLE_MEAN else headline, members=members)[n]
                          for n in label_names])  # fmt: skip
    errors = confident_errors(ours[headline], threshold, records, label_names, cfg.errors)
    explained = explain_errors(run, members, headline, errors, dataset.by_filename(), cache, cfg, files)

    metrics: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "data": [str(s) for s in sources],
        "images": len(records),
        "patients": len(set(patients.tolist())),
        "sources": {s: int((sources_of == s).sum()) for s in sorted(set(sources_of))},
        "label_names": list(label_names),
        "not_evaluable": models[headline]["not_evaluable"],
        "notes": _notes(run, dataset, outside),
        "predictions_reused": predictions.reused,
        "thresholds": {
            **{m: run.thresholds(m) for m in sorted(predictions.probs)},
            **({ENSEMBLE_MEAN: run.thresholds(ENSEMBLE, members=members)} if headline == ENSEMBLE_MEAN else {}),
        },
        "settings": cfg.model_dump(),
        "models": models,
        "headline": headline,
        "errors": explained,
    }
    metrics = json_ready(metrics)  # NaN (undefined) -> None, as in the file
    metrics["files"] = write_files(metrics, files)
    write_json(files.metrics, metrics)
    return ExternalResult(name, str(files.root), metrics)
