"""Which maps `cxrlens explain` computes: images, the fold whose models explain each, models, methods, labels.

Each image is explained by the models of the fold in which it was a *test* image (never by a model that trained
on it), unless ``fold`` is given; an image outside the run's data may be explained by any fold's models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlens.attribution.methods import Method, get_method, method_names
from cxrlens.config import ExplainConfig
from cxrlens.data.records import ImageRecord
from cxrlens.errors import RunError
from cxrlens.models.names import ENSEMBLE
from cxrlens.run import Run


@dataclass
class WorkItem:
    filename: str
    path: Path
    fold: int
    true_labels: frozenset[str] = frozenset()
    patient_id: str = ""
    offset: str = ""
    date: str = ""
    lung_mask: Path | None = None
    external: bool = False

    @property
    def source_name(self) -> str:
        """How the run's image source finds it: the file name in the run's data, or the outside file's path."""
        return str(self.path) if self.external else self.filename


@dataclass
class Plan:
    run: Run
    items: list[WorkItem]
    models: list[str]  # model names, possibly "ensemble"
    methods: list[Method]
    params: dict[str, Any]  # method name -> validated params
    labels: list[str]  # explicit labels, or [] for predicted + true positives
    label_names: list[str]
    memory_gib: float
    members: dict[int, list[str]] = field(default_factory=dict)  # fold -> trained model names
    followup_patient: str | None = None
    not_applicable: list[tuple[str, str, str]] = field(default_factory=list)  # (model, method, why)

    def applies(self, model: str, method: str) -> bool:
        return not any(m == model and k == method for m, k, _ in self.not_applicable)


def _pick_images(
    records: dict[str, ImageRecord], test_fold: dict[str, int], labels: Sequence[str], count: int
) -> list[str]:
    """Deterministic: cover each label with one positive test image (lung-masked first), then fill."""
    ranked = sorted(test_fold, key=lambda f: (records[f].lung_mask is None, f))
    chosen: list[str] = []
    for label in labels:
        if len(chosen) >= count:
            break
        for filename in ranked:
            if filename not in chosen and label in records[filename].labels:
                chosen.append(filename)
                break
    for filename in ranked:
        if len(chosen) >= count:
            break
        if filename not in chosen:
            chosen.append(filename)
    return chosen


def make_plan(run: Run, cfg: ExplainConfig) -> Plan:
    """Resolve images, folds, models, methods, labels and parameters; every name is checked here."""
    by_fold = run.trained_by_fold()
    if not by_fold:
        raise RunError(f"{run.root}: no trained models; run `cxrlens cv` first")
    label_names = list(run.label_names)
    unknown = [label for label in cfg.labels if label not in label_names]
    if unknown:
        raise RunError(f"unknown label(s) {unknown}; valid: {', '.join(label_names)}")
    methods = [get_method(name) for name in (cfg.methods or method_names())]
    unknown_params = [name for name in cfg.params if name not in method_names()]
    if unknown_params:
        raise RunError(f"parameters given for unknown method(s) {unknown_params}; valid: {', '.join(method_names())}")
    params = {m.name: m.parse(cfg.params.get(m.name)) for m in methods}
    trained_names = sorted({m for names in by_fold.values() for m in names})
    models = list(cfg.models or [*trained_names, ENSEMBLE])
    for name in models:
        if name != ENSEMBLE and name not in trained_names:
            raise RunError(
                f"model {name!r} is not trained in {run.root}; trained: {', '.join(trained_names)}, ensemble"
            )

    not_applicable = []
    for method in methods:
        layer_given = bool(getattr(params[method.name], "layer", None))
        if method.family == "layer" and ENSEMBLE in models and not layer_given:
            why = "the ensemble has no single layer"
            if cfg.models and cfg.methods:  # both named by the user: say so instead of skipping
                raise RunError(f"{method.name} cannot explain the ensemble: {why}; explain a member model instead")
            not_applicable.append((ENSEMBLE, method.name, why))

    records = run.dataset.by_filename()
    test_fold = {name: fold for name, fold in run.test_fold().items() if fold in by_fold}

    def fold_of(filename: str) -> int:
        if cfg.fold is not None:
            if cfg.fold not in by_fold:
                raise RunError(f"fold {cfg.fold} has no trained models; trained folds: {sorted(by_fold)}")
            return cfg.fold
        if filename in test_fold:
            return test_fold[filename]
        return min(by_fold)  # an image the run never saw: any fold's models are out-of-sample for it

    names = list(cfg.images) or _pick_images(records, test_fold, label_names, cfg.n_images)
    followup_patient = None
    if cfg.followup_images > 1 and not cfg.images:
        followup_patient = _followup_patient(records, test_fold)
        if followup_patient:
            own = _patient_images(records, test_fold, followup_patient, cfg.followup_images)
            names += [f for f in own if f not in names]
    items = []
    for name in names:
        rec = records.get(name)
        if rec is not None:
            items.append(
                WorkItem(name, rec.path, fold_of(name), rec.labels, rec.patient_id, rec.offset, rec.date, rec.lung_mask)
            )
            continue
        path = Path(name)
        if not path.is_file():
            raise RunError(f"{name}: not an image of the run's data and not an existing file")
        items.append(WorkItem(str(path), path.resolve(), fold_of(name), external=True))
    items.sort(key=lambda item: (item.fold, item.filename))
    return Plan(
        run=run,
        items=items,
        models=models,
        methods=methods,
        params=params,
        labels=list(cfg.labels),
        label_names=label_names,
        memory_gib=cfg.memory_gib,
        members=by_fold,
        followup_patient=followup_patient,
        not_applicable=not_applicable,
    )


def _followup_patient(records: dict[str, ImageRecord], test_fold: dict[str, int]) -> str | None:
    counts: dict[str, int] = defaultdict(int)
    for filename in test_fold:
        counts[records[filename].patient_id] += 1
    best = sorted((-n, p) for p, n in counts.items() if n >= 2)
    return best[0][1] if best else None


def followup_key(offset: str, date: str, filename: str) -> tuple[float, str, str]:
    """Order of a patient's images: days since symptoms (unknown last), then date, then file name."""
    try:
        days = float(offset)
    except ValueError:
        days = float("inf")
    return (days, date, filename)


def _order_key(rec: ImageRecord) -> tuple[float, str, str]:
    return followup_key(rec.offset, rec.date, rec.filename)


def _patient_images(
    records: dict[str, ImageRecord], test_fold: dict[str, int], patient: str, limit: int = 6
) -> list[str]:
    own = [records[f] for f in test_fold if records[f].patient_id == patient]
    return [r.filename for r in sorted(own, key=_order_key)][:limit]
