"""Fold stability: do the models of the other folds explain the same image the same way?

For up to ``stability_images`` images per model and method, the same architecture's model (or the ensemble
of the same members) of every other trained fold explains the same image, method, parameters and label;
the value is the mean pairwise Spearman (absolute values) of all these maps. The other folds' models may have
trained on the image. Their maps are stored like explanations (``RunLayout.xai_maps``), keyed by the
parameters and checkpoint hashes, so a rerun reuses them. Fold stability is reported but not ranked: a method
blind to the model (an edge detector) would be perfectly stable.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from cxrlens.fileio import stable_hash
from cxrlens.run.maps import load_map
from cxrlens.xai import measures as xm
from cxrlens.xai.context import Stage
from cxrlens.xai.scores import ScoredMap, first_images


@dataclass(frozen=True)
class OtherMap:
    """Where the map of ``item`` by another fold's model is stored: model key and parameters hash."""

    item: ScoredMap
    fold: int
    model_key: str
    params_hash: str

    @classmethod
    def of(cls, stage: Stage, item: ScoredMap, fold: int) -> OtherMap:
        sha = stage.models.sha(item.model, fold, stage.members(item))
        params_hash = stable_hash(["stability", item.entry.get("params_hash"), sha, fold])
        return cls(item, fold, f"{item.model}-fold{fold}", params_hash)

    def exists(self, stage: Stage) -> bool:
        return stage.other_maps.has(
            self.item.image, self.model_key, self.item.method, self.item.label, self.params_hash
        )

    def load(self, stage: Stage) -> torch.Tensor:
        path = stage.other_maps.map_path(self.item.image, self.model_key, self.item.method, self.item.label)
        return torch.from_numpy(load_map(path))


def stability(stage: Stage, maps: list[ScoredMap]) -> None:
    """Fill ``fold_stability`` of the first ``stability_images`` images' maps of each (model, method)."""
    folds = sorted(stage.run.trained_by_fold())
    if len(folds) < 2:
        stage.note("fold stability skipped: only one fold is trained")
        return
    items = first_images(maps, stage.settings.stability_images, skip_ensemble=False)
    plan: dict[int, dict[tuple[str, str, str], list[ScoredMap]]] = defaultdict(lambda: defaultdict(list))
    others: dict[int, list[int]] = {}
    for item in items:
        members = stage.members(item)
        usable = [f for f in folds if f != item.fold and stage.models.available(item.model, f, members)]
        others[id(item)] = usable
        for fold in usable:
            plan[fold][(item.image, item.model, item.method)].append(item)
    for fold in sorted(plan):
        for _cell, group in sorted(plan[fold].items()):
            todo = [other for other in (OtherMap.of(stage, item, fold) for item in group) if not other.exists(stage)]
            if todo:
                _explain(stage, todo)
            stage.advance(len(group))
    for item in items:
        usable = others[id(item)]
        if usable:
            loaded = [stage.original(item), *(OtherMap.of(stage, item, fold).load(stage) for fold in usable)]
            item.values["fold_stability"] = xm.pairwise_spearman(loaded)
    if not any(others.values()):
        stage.note("fold stability: no map's model is trained in another fold")


def _explain(stage: Stage, todo: list[OtherMap]) -> None:
    """Make and store the maps of ``todo`` (one image, model, method and fold) with that fold's model."""
    first = todo[0].item
    fold = todo[0].fold
    members = stage.members(first)
    loaded = stage.models.get(first.model, fold, members)
    image = stage.images.image(first.image)
    params = stage.params(first)
    computed = stage.attribute(loaded, first, image, [other.item.label_index for other in todo])
    for other, values in zip(todo, computed, strict=True):
        item = other.item
        meta = {
            "image": item.image,
            "model": item.model,
            "fold": fold,
            "method": item.method,
            "label": item.label,
            "parameters": params.model_dump(),
            "params_hash": other.params_hash,
            "checkpoint_sha256": loaded.sha,
            "members": members,
            "size": int(image.shape[0]),
            "original": item.map,
            "original_fold": item.fold,
        }
        stage.other_maps.write(item.image, other.model_key, item.method, item.label, values.numpy(), meta)
