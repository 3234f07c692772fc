"""`cxrlens explain`: every chosen method x model x label for the chosen images, resumable.

Each image is explained by the models of the fold in which it was a *test* image (never by a model
that trained on it), unless ``fold`` is given. Work is sharded over devices and nodes by Lightning's
predict loop (DDP on a cluster; one CPU process here); each rank writes its own maps (atomic writes),
and rank 0 then writes the index and the figures. Existing maps with the same parameters are reused.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cxrlens
from cxrlens.attribution.budget import GIB, Footprint, measure
from cxrlens.attribution.methods import Context, Method, get_method, method_names
from cxrlens.config import ExplainConfig, PreprocessConfig, validate
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.errors import RunError
from cxrlens.evaluate.ensemble import ENSEMBLE
from cxrlens.evaluate.thresholds import thresholds_for
from cxrlens.fileio import stable_hash
from cxrlens.models.checkpoint import load_model
from cxrlens.models.ensemble import EnsembleModel
from cxrlens.run.folder import RunDir
from cxrlens.run.maps import MapStore, image_id, slug


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


@dataclass
class Plan:
    run: RunDir
    items: list[WorkItem]
    models: list[str]  # model names, possibly "ensemble"
    methods: list[Method]
    params: dict[str, Any]  # method name -> validated params
    labels: list[str]  # explicit labels, or [] for predicted + true positives
    label_names: list[str]
    preprocess: PreprocessConfig
    memory_gib: float
    members: dict[int, list[str]] = field(default_factory=dict)  # fold -> trained model names
    followup_patient: str | None = None
    not_applicable: list[tuple[str, str, str]] = field(default_factory=list)  # (model, method, why)

    def applies(self, model: str, method: str) -> bool:
        return not any(m == model and k == method for m, k, _ in self.not_applicable)


def _trained_by_fold(run: RunDir) -> dict[int, list[str]]:
    by_fold: dict[int, list[str]] = defaultdict(list)
    for model, fold in run.trained():
        by_fold[fold].append(model)
    return dict(by_fold)


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


def make_plan(study: Any, cfg: ExplainConfig) -> Plan:
    """Resolve images, folds, models, methods, labels and parameters; every name is checked here."""
    run: RunDir = study.run
    by_fold = _trained_by_fold(run)
    if not by_fold:
        raise RunError(f"{run.root}: no trained models; run `cxrlens cv` first")
    label_names = list(study.space.names)
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

    records = study.dataset.by_filename()
    test_fold: dict[str, int] = {}
    for row in sorted(study.splits, key=lambda r: r.fold):
        if row.subset == "test" and row.fold in by_fold:
            test_fold.setdefault(row.filename, row.fold)

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
        preprocess=study.cfg.data.preprocess,
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


def _order_key(rec: ImageRecord) -> tuple[float, str, str]:
    try:
        offset = float(rec.offset)
    except ValueError:
        offset = float("inf")
    return (offset, rec.date, rec.filename)


def _patient_images(
    records: dict[str, ImageRecord], test_fold: dict[str, int], patient: str, limit: int = 6
) -> list[str]:
    own = [records[f] for f in test_fold if records[f].patient_id == patient]
    return [r.filename for r in sorted(own, key=_order_key)][:limit]


# -- the engine -------------------------------------------------------------------------------------


class Engine:
    """Loads (and prepares) each fold's models once, then explains items one by one."""

    def __init__(self, plan: Plan, progress: Callable[[int], None] | None = None) -> None:
        self.plan = plan
        self.store = MapStore(plan.run.root / "explanations")
        self.progress = progress
        self.device = torch.device("cpu")  # the Lightning module sets its rank's device
        self._fold: int | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self._footprints: dict[str, Footprint] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._thresholds: dict[str, np.ndarray] = {}  # per model of the loaded fold, as `cxrlens evaluate` decides
        from cxrlens.data.cache import PreprocessCache

        self.cache = PreprocessCache(plan.preprocess, plan.run.read_config().data.cache_dir)

    def _load_fold(self, fold: int) -> None:
        if self._fold == fold:
            return
        from cxrlens.attribution.prepare import prepare_model

        self._models.clear()  # one fold's models in memory at a time
        members = []
        names = self.plan.members.get(fold, [])
        wanted = set(self.plan.models)
        for name in names:
            if name not in wanted and ENSEMBLE not in wanted:
                continue
            path = self.plan.run.model_file(name, fold)
            model, _ = load_model(path, self.plan.label_names)
            prepared = prepare_model(model.to(self.device))
            members.append((name, prepared))
            if name in wanted:
                self._models[name] = prepared
            done = self.plan.run.done_file(name, fold)
            sha = _read_json(done).get("model_sha256", "") if done.is_file() else ""
            self._meta[name] = {"checkpoint": str(path.relative_to(self.plan.run.root)), "checkpoint_sha256": sha}
        for name in self.plan.models:
            if name != ENSEMBLE and name not in self._models:
                raise RunError(f"fold {fold} has no trained {name} model (trained: {', '.join(names)})")
        if ENSEMBLE in wanted:
            ensemble = EnsembleModel([m for _, m in members], [n for n, _ in members]).eval()
            self._models[ENSEMBLE] = ensemble
            self._meta[ENSEMBLE] = {
                "checkpoint": [self._meta[n]["checkpoint"] for n, _ in members],
                "checkpoint_sha256": [self._meta[n]["checkpoint_sha256"] for n, _ in members],
                "members": [n for n, _ in members],
            }
        size = self.plan.preprocess.size
        for name, model in self._models.items():
            self._footprints[name] = measure(model, size)
            members = self._meta[name].get("members", [])
            by_label = thresholds_for(self.plan.run, self.plan.label_names, name, fold, members)
            self._thresholds[name] = np.array([by_label[label] for label in self.plan.label_names])
        self._fold = fold

    def image(self, item: WorkItem) -> np.ndarray:
        if item.external:
            return preprocess_file(item.path, self.plan.preprocess)
        return self.cache.load(item.path)

    def explain_item(self, item: WorkItem) -> int:
        """Compute every missing map of one image; returns how many maps were written."""
        self._load_fold(item.fold)
        image = self.image(item)
        x = torch.from_numpy(image)[None, None]
        written = 0
        for model_name in self.plan.models:
            model = self._models[model_name]
            with torch.no_grad():
                logits = model(x.to(self.device))[0]
            probabilities = torch.sigmoid(logits).cpu().numpy()
            labels = self._labels(item, probabilities, self._thresholds[model_name])
            for method in self.plan.methods:
                if not self.plan.applies(model_name, method.name):
                    continue
                written += self._explain(item, image, x, model_name, model, method, labels, probabilities)
        return written

    def _labels(self, item: WorkItem, probabilities: np.ndarray, thresholds: np.ndarray) -> list[str]:
        """The requested labels, else the predicted positives and the true labels (else the most likely)."""
        names = self.plan.label_names
        if self.plan.labels:
            return list(self.plan.labels)
        positive = probabilities >= thresholds
        chosen = [n for n, p in zip(names, positive, strict=True) if p or n in item.true_labels]
        return chosen or [names[int(np.argmax(probabilities))]]

    def _explain(
        self,
        item: WorkItem,
        image: np.ndarray,
        x: torch.Tensor,
        model_name: str,
        model: torch.nn.Module,
        method: Method,
        labels: list[str],
        probabilities: np.ndarray,
    ) -> int:
        params = self.plan.params[method.name]
        if model_name == ENSEMBLE and params.output == "logit":
            params = params.model_copy(update={"output": "probability"})  # the ensemble averages probabilities
        params_hash = stable_hash({"method": method.name, "params": params.model_dump(), "size": image.shape})
        todo = [
            label for label in labels if not self.store.has(item.filename, model_name, method.name, label, params_hash)
        ]
        if not todo:
            return 0
        targets = [self.plan.label_names.index(label) for label in todo]
        context = Context(
            model=model,
            footprint=self._footprints[model_name],
            budget_bytes=self.plan.memory_gib * GIB,
            image=image,
            layer_name=getattr(model, "gradcam_layer_name", None),
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"captum\..*")  # captum's notes on hooks and grads
            result = method.run(context, params, x, targets)
        seconds = time.perf_counter() - start
        for i, label in enumerate(todo):
            index = self.plan.label_names.index(label)
            meta = {
                "image": item.filename,
                "image_id": image_id(item.filename),
                "patient_id": item.patient_id,
                "offset": item.offset,
                "date": item.date,
                "model": model_name,
                "fold": item.fold,
                **self._meta.get(model_name, {}),
                "method": method.name,
                "family": method.family,
                "parameters": params.model_dump(),
                "params_hash": params_hash,
                "label": label,
                "probability": float(probabilities[index]),
                "true": label in item.true_labels,
                "threshold": float(self._thresholds[model_name][index]),
                "predicted": bool(probabilities[index] >= self._thresholds[model_name][index]),
                "labels_in_call": len(todo),
                "runtime_s": round(seconds, 4),
                "runtime_per_label_s": round(seconds / len(todo), 4),
                "delta": float(result.delta[i]) if result.delta is not None else None,
                "extra": result.extra or {},
                "size": int(image.shape[0]),
                "lung_mask": str(item.lung_mask) if item.lung_mask else None,
                "version": cxrlens.__version__,
            }
            values = result.maps[i].numpy()
            self.store.write(item.filename, model_name, method.name, label, values, meta)
            from cxrlens.explain.render import overlay, save_png

            save_png(overlay(image, values), self.store.overlay_path(item.filename, model_name, method.name, label))
        return len(todo)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return dict(json.loads(path.read_text(encoding="utf-8")))


# -- sharding through Lightning's predict loop ------------------------------------------------------


def _lightning_module(engine: Engine) -> Any:
    import lightning as L

    class ExplainModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.engine = engine

        def predict_step(self, batch: torch.Tensor, batch_idx: int) -> int:
            self.engine.device = self.device
            written = 0
            with torch.enable_grad():  # Lightning predicts without autograd; gradient methods need it
                for index in batch.tolist():
                    written += self.engine.explain_item(self.engine.plan.items[int(index)])
            return written

    return ExplainModule()


def run_explain(
    study: Any,
    cfg: ExplainConfig,
    accelerator: str = "cpu",
    devices: Any = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    enable_progress_bar: bool = True,
) -> dict[str, Any]:
    """Plan, compute (sharded over ranks), then index and draw figures on rank 0."""
    import lightning as L
    from torch.utils.data import DataLoader

    plan = make_plan(study, cfg)
    engine = Engine(plan)
    # one item per step, in fold order, so each rank loads each fold's models once
    loader = DataLoader(torch.arange(len(plan.items)), batch_size=1, shuffle=False)
    from cxrlens.train.runner import quiet_lightning

    quiet_lightning()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=False,
        inference_mode=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*treespec.*")
        outputs = trainer.predict(_lightning_module(engine), loader, return_predictions=True)
    mine = torch.tensor(float(sum(outputs or [])), device=trainer.strategy.root_device)
    written = int(trainer.strategy.reduce(mine, reduce_op="sum").item())  # every rank's maps, not rank 0's
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return {}
    entries = engine.store.write_index()
    figures = draw_figures(plan, entries) if cfg.figures else []
    return {
        "images": len(plan.items),
        "models": plan.models,
        "methods": [m.name for m in plan.methods],
        "maps_written": written,
        "maps_total": len(entries),
        "seconds": round(time.perf_counter() - start, 1),
        "figures": [str(p) for p in figures],
        "index": str(engine.store.index_path),
        "followup_patient": plan.followup_patient,
        "not_applicable": [f"{method} on {model}: {why}" for model, method, why in plan.not_applicable],
    }


def draw_figures(plan: Plan, entries: list[dict[str, Any]]) -> list[Path]:
    """Grids per image and label, occlusion across models, occlusion over a patient's follow-ups."""
    from cxrlens.explain.render import grid_figure, strip_figure
    from cxrlens.run.maps import load_map

    store = MapStore(plan.run.root / "explanations")
    wanted_images = {item.filename for item in plan.items}
    items = {item.filename: item for item in plan.items}
    engine = Engine(plan)
    by_key: dict[tuple[str, str], dict[tuple[str, str], Any]] = defaultdict(dict)
    probability: dict[tuple[str, str, str], float] = {}
    for entry in entries:
        if entry["image"] not in wanted_images:
            continue
        by_key[(entry["image"], entry["label"])][(entry["model"], entry["method"])] = (
            store.root / entry["map"]
        ).resolve()
        probability[(entry["image"], entry["label"], entry["model"])] = entry["probability"]
    out = store.figure_dir()
    written: list[Path] = []
    method_order = [m.name for m in plan.methods]
    for (filename, label), maps in sorted(by_key.items()):
        image = engine.image(items[filename])
        models = [m for m in plan.models if any(k[0] == m for k in maps)]
        loaded = {k: load_map(p) for k, p in maps.items()}
        truth = "true" if label in items[filename].true_labels else "not true"
        notes = {m: f"p={probability.get((filename, label, m), float('nan')):.2f}" for m in models}
        path = out / f"grid_{image_id(filename)}_{slug(label)}.png"
        grid_figure(image, loaded, models, method_order, f"{filename} - {label} ({truth})", path, notes)
        written.append(path)
        occlusion = [(image, loaded[(m, "occlusion")], f"{m} p={probability[(filename, label, m)]:.2f}")
                     for m in models if (m, "occlusion") in loaded]  # fmt: skip
        if len(occlusion) > 1:
            path = out / f"occlusion_models_{image_id(filename)}_{slug(label)}.png"
            strip_figure(occlusion, f"occlusion across models: {filename} - {label}", path, show_image=True)
            written.append(path)
    if plan.followup_patient:
        written += _followup_figures(plan, by_key, probability, engine, out)
    return written


def _followup_figures(plan: Plan, by_key: Any, probability: Any, engine: Engine, out: Path) -> list[Path]:
    from cxrlens.explain.render import strip_figure
    from cxrlens.run.maps import load_map

    items = [i for i in plan.items if i.patient_id == plan.followup_patient]
    items.sort(key=lambda i: (_offset(i.offset), i.date, i.filename))
    written = []
    labels = sorted({label for (f, label) in by_key if f in {i.filename for i in items}})
    for model in plan.models:
        for label in labels:
            panels = []
            for item in items:
                path = by_key.get((item.filename, label), {}).get((model, "occlusion"))
                if path is None:
                    continue
                caption = f"day {item.offset or '?'} p={probability[(item.filename, label, model)]:.2f}"
                panels.append((engine.image(item), load_map(path), caption))
            if len(panels) > 1:
                target = out / f"followup_{slug(plan.followup_patient or '')}_{slug(model)}_{slug(label)}.png"
                strip_figure(panels, f"patient {plan.followup_patient}: occlusion ({model}) - {label}", target)
                written.append(target)
    return written


def _offset(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("inf")


def explain_config(raw: dict[str, Any] | None, **overrides: Any) -> ExplainConfig:
    data = dict(raw or {})
    for key, value in overrides.items():
        if value is not None and value != []:
            data[key] = value
    return validate(ExplainConfig, data, "explain options")
