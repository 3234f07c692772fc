"""The most confident mistakes on an external set, with the attribution engine's map of each: what the model
looked at when it was surest and wrong (e.g. a hospital's marker rather than the lungs)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cxrlens.attribution.methods import Context, get_method
from cxrlens.attribution.prepare import prepare_model
from cxrlens.config import ExternalConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.records import ImageRecord
from cxrlens.errors import MethodError
from cxrlens.evaluate.external.stats import Scored
from cxrlens.figures import overlay, save_png
from cxrlens.fileio import stable_hash
from cxrlens.models.footprint import GIB, measure
from cxrlens.run import ModelBank, Run
from cxrlens.run.layout import ExternalFiles
from cxrlens.run.maps import MapStore


def confident_errors(
    scored: Scored, thresholds: np.ndarray, records: Sequence[ImageRecord], label_names: Sequence[str], count: int
) -> list[dict[str, Any]]:
    """Up to ``count`` wrong decisions, one per image, farthest beyond the threshold first (probability units);
    a decision on an unknown value is neither right nor wrong."""
    wrong = (scored.decisions != scored.truth) & scored.known_mask
    margin = np.where(scored.decisions, scored.scores - thresholds, thresholds - scored.scores)
    order = np.argsort(-np.where(wrong, margin, -np.inf), axis=None, kind="stable")
    chosen: list[dict[str, Any]] = []
    seen: set[int] = set()
    for flat in order:
        i, j = np.unravel_index(int(flat), wrong.shape)
        if not wrong[i, j] or len(chosen) >= count:
            break
        if int(i) in seen:
            continue
        seen.add(int(i))
        chosen.append(
            {
                "image": records[int(i)].filename,
                "patient_id": records[int(i)].patient_id,
                "source": records[int(i)].source,
                "label": label_names[int(j)],
                "kind": "false positive" if scored.decisions[i, j] else "false negative",
                "probability": float(scored.scores[i, j]),
                "threshold": float(thresholds[j]),
                "true_labels": sorted(records[int(i)].labels & set(label_names)),
            }
        )
    return chosen


def explain_errors(
    run: Run,
    models: Sequence[str],
    entry: str,
    errors: list[dict[str, Any]],
    records: dict[str, ImageRecord],
    cache: PreprocessCache,
    cfg: ExternalConfig,
    files: ExternalFiles,
) -> list[dict[str, Any]]:
    """Each error with the map of ``cfg.error_method`` for its label (the map, its overlay, relative to the
    external folder). The model is ``entry``: every fold of ``models`` averaged, as the probabilities were."""
    if not errors:
        return []
    method = get_method(cfg.error_method)
    if method.family == "layer" and len(models) > 1:
        raise MethodError(f"{method.name} needs one layer; an average of models has none: use occlusion or another")
    params = method.parse(run.config.explain.params.get(method.name) or {})
    if params.output == "logit":
        params = params.model_copy(update={"output": "probability"})  # an average of models averages probabilities
    model = ModelBank(run, transform=prepare_model).across_folds(models)
    footprint = measure(model, run.preprocess.size)
    store = MapStore(files.errors.root)
    params_hash = stable_hash({"method": method.name, "params": params.model_dump(), "size": run.preprocess.size})
    out = []
    for error in errors:
        image = cache.load(records[error["image"]].path)
        label = error["label"]
        if not store.has(error["image"], entry, method.name, label, params_hash):
            context = Context(
                model=model,
                footprint=footprint,
                budget_bytes=cfg.memory_gib * GIB,
                image=image,
                layer_name=getattr(model, "gradcam_layer_name", None),
            )
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.filterwarnings("ignore", module=r"captum\..*")  # captum's notes on hooks and grads
                maps = method.run(context, params, torch.from_numpy(image)[None, None], [run.label_names.index(label)])
            values = maps.maps[0].detach().float().numpy()
            meta = {**error, "model": entry, "members": list(models), "method": method.name,
                    "parameters": params.model_dump(), "params_hash": params_hash}  # fmt: skip
            store.write(error["image"], entry, method.name, label, values, meta)
            save_png(overlay(image, values), store.overlay_path(error["image"], entry, method.name, label))
        overlay_path = store.overlay_path(error["image"], entry, method.name, label)
        out.append(
            {
                **error,
                "method": method.name,
                "map": store.map_path(error["image"], entry, method.name, label).relative_to(files.root).as_posix(),
                "overlay": overlay_path.relative_to(files.root).as_posix(),
            }
        )
    return out
