"""Compute and store the maps of a plan, one image at a time, with the models of the image's fold.

The fold's models come from the run's fold loader, prepared for captum; the image from the run's image
source (the cache, or the run's preprocessing for an outside file). Existing maps with the same parameters are
reused; every map gets a sidecar saying what it is and an overlay PNG.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from cxrlens.attribution.methods import Context, Method
from cxrlens.attribution.prepare import prepare_model
from cxrlens.errors import RunError
from cxrlens.explain.plan import Plan, WorkItem
from cxrlens.figures import overlay, save_png
from cxrlens.fileio import stable_hash
from cxrlens.models.footprint import GIB, Footprint, measure
from cxrlens.models.names import ENSEMBLE
from cxrlens.run import ImageSource, ModelBank
from cxrlens.run.layout import image_id
from cxrlens.run.maps import MapStore
from cxrlens.version import __version__


class Engine:
    """Loads (and prepares) each fold's models once, then explains items one by one."""

    def __init__(self, plan: Plan, device: torch.device | str = "cpu") -> None:
        self.plan = plan
        self.store = MapStore(plan.run.layout.explanations.root)
        self.images = ImageSource(plan.run)
        self.bank = ModelBank(plan.run, device=device, transform=prepare_model)
        self._fold: int | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self._footprints: dict[str, Footprint] = {}
        self._meta: dict[str, dict[str, object]] = {}
        self._thresholds: dict[str, np.ndarray] = {}  # per model of the loaded fold, as `cxrlens evaluate` decides

    @property
    def device(self) -> torch.device:
        return self.bank.device

    def move_to(self, device: torch.device) -> None:
        """Use ``device`` from now on (the Lightning module sets its rank's device)."""
        if device != self.bank.device:
            self.bank = ModelBank(self.plan.run, device=device, transform=prepare_model)
            self._fold = None

    def _load_fold(self, fold: int) -> None:
        if self._fold == fold:
            return
        run, wanted = self.plan.run, set(self.plan.models)
        names = self.plan.members.get(fold, [])
        for name in self.plan.models:
            if name != ENSEMBLE and name not in names:
                raise RunError(f"fold {fold} has no trained {name} model (trained: {', '.join(names)})")
        members = [n for n in names if n in wanted or ENSEMBLE in wanted]
        self._models = {name: self.bank.model(name, fold) for name in self.plan.models if name != ENSEMBLE}
        self._meta = {}
        for name in members:
            checkpoint = self.bank.checkpoint(name, fold)
            self._meta[name] = {"checkpoint": checkpoint.path, "checkpoint_sha256": checkpoint.sha256}
        if ENSEMBLE in wanted:
            self._models[ENSEMBLE] = self.bank.ensemble(fold, members)
            self._meta[ENSEMBLE] = {
                "checkpoint": [self._meta[n]["checkpoint"] for n in members],
                "checkpoint_sha256": [self._meta[n]["checkpoint_sha256"] for n in members],
                "members": members,
            }
        size = run.preprocess.size
        for name, model in self._models.items():
            self._footprints[name] = measure(model, size)
            by_label = run.thresholds(name, fold, members if name == ENSEMBLE else ())
            self._thresholds[name] = np.array([by_label[label] for label in self.plan.label_names])
        self._fold = fold

    def image(self, item: WorkItem) -> np.ndarray:
        return self.images.image(item.source_name)

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
                if self.plan.applies(model_name, method.name):
                    written += self._explain(item, image, x, model_name, method, labels, probabilities)
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
        method: Method,
        labels: list[str],
        probabilities: np.ndarray,
    ) -> int:
        params = self.plan.params[method.name]
        if model_name == ENSEMBLE and params.output == "logit":
            params = params.model_copy(update={"output": "probability"})  # the ensemble averages probabilities
        params_hash = stable_hash({"method": method.name, "params": params.model_dump(), "size": image.shape})
        store = self.store
        todo = [label for label in labels if not store.has(item.filename, model_name, method.name, label, params_hash)]
        if not todo:
            return 0
        model = self._models[model_name]
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
            result = method.run(context, params, x, [self.plan.label_names.index(label) for label in todo])
        seconds = time.perf_counter() - start
        thresholds = self._thresholds[model_name]
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
                "threshold": float(thresholds[index]),
                "predicted": bool(probabilities[index] >= thresholds[index]),
                "labels_in_call": len(todo),
                "runtime_s": round(seconds, 4),
                "runtime_per_label_s": round(seconds / len(todo), 4),
                "delta": float(result.delta[i]) if result.delta is not None else None,
                "extra": result.extra or {},
                "size": int(image.shape[0]),
                "lung_mask": str(item.lung_mask) if item.lung_mask else None,
                "version": __version__,
            }
            values = result.maps[i].numpy()
            store.write(item.filename, model_name, method.name, label, values, meta)
            save_png(overlay(image, values), store.overlay_path(item.filename, model_name, method.name, label))
        return len(todo)
