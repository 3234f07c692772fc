"""The randomisation test of the maps (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

For up to ``sanity_images`` images per model and method, each map is made again with the model's blocks
randomised from the head down (:mod:`cxrlens.xai.randomisation`, ``sanity_steps`` steps) and compared with
the stored map (Spearman of absolute values). The ensemble is skipped: its members are tested. The cascade of
each map is cached (:class:`~cxrlens.xai.cache.ResultCache`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch

from cxrlens.fileio import stable_hash
from cxrlens.models.names import ENSEMBLE
from cxrlens.xai import measures as xm
from cxrlens.xai import randomisation as xr
from cxrlens.xai.context import Loaded, Stage
from cxrlens.xai.scores import ScoredMap, first_images
from cxrlens.xai.settings import Settings


def sanity_key(item: ScoredMap, blocks: Sequence[str], s: Settings) -> str:
    """The cache key of a map's randomisation cascade."""
    e = item.entry
    return stable_hash(
        [
            "sanity",
            e["image"],
            e["model"],
            e["fold"],
            e["method"],
            e["label"],
            e.get("params_hash"),
            e.get("checkpoint_sha256"),
            e.get("scale"),
            list(blocks),
            s.seed,
            s.sanity_steps,
        ]
    )


def sanity(stage: Stage, maps: list[ScoredMap]) -> None:
    """Randomisation cascade of the first ``sanity_images`` images' maps of each (model, method): fills
    ``sanity_layers``, ``sanity`` and the value ``randomisation_spearman`` (after the whole cascade)."""
    s, cache = stage.settings, stage.cache
    if any(m.model == ENSEMBLE for m in maps):
        stage.note("randomisation test: the ensemble is skipped (each member model is tested)")
    items = first_images(maps, s.sanity_images, skip_ensemble=True)
    by_model_fold: dict[tuple[str, int], list[ScoredMap]] = defaultdict(list)
    for item in items:
        if stage.models.available(item.model, item.fold):
            by_model_fold[(item.model, item.fold)].append(item)
    blocks_of: dict[str, list[str]] = {}
    example = torch.zeros(1, 1, s.size, s.size)
    for (model_name, fold), group in sorted(by_model_fold.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        loaded = stage.models.get(model_name, fold)
        if model_name not in blocks_of:
            blocks_of[model_name] = xr.backbone_blocks(loaded.model, example)
        blocks = blocks_of[model_name]
        if not blocks:
            stage.note(f"randomisation test: {model_name} has no parameterised blocks; skipped")
            continue
        layers = [list(reversed(blocks))[c - 1] for c in xr.cascade_cuts(len(blocks), s.sanity_steps)]
        todo = []
        for item in group:
            found = cache.get("sanity", sanity_key(item, blocks, s))
            if found is None:
                todo.append(item)
            else:
                item.sanity_layers, item.sanity = layers, [math.nan if v is None else float(v) for v in found]
        if todo:
            _cascade(stage, todo, loaded, blocks, layers)
            for item in todo:
                cache.put("sanity", sanity_key(item, blocks, s), item.sanity)
        else:
            stage.advance(len(group) * len(layers))
    for item in items:
        if item.sanity:
            item.values["randomisation_spearman"] = item.sanity[-1]
    cache.save()


def _cascade(stage: Stage, todo: list[ScoredMap], loaded: Loaded, blocks: list[str], layers: list[str]) -> None:
    """Make the maps of ``todo`` again at each step of the cascade; one call per (image, method). Each call reads
    its image and the stored maps again (from the cache and the map files), so memory does not grow with the
    number of images."""
    s = stage.settings
    calls: dict[tuple[str, str], list[ScoredMap]] = defaultdict(list)
    for item in todo:
        calls[(item.image, item.method)].append(item)
    for item in todo:
        item.sanity_layers, item.sanity = layers, []
    for _layer, randomised in xr.cascade(loaded.model, blocks, s.seed, s.sanity_steps):
        variant = Loaded(randomised, loaded.footprint, loaded.sha)
        for (image_name, _method), group in calls.items():
            targets = [item.label_index for item in group]
            maps = stage.attribute(variant, group[0], stage.images.image(image_name), targets)
            rho = xm.spearman(
                torch.stack([stage.original(item) for item in group]).flatten(1), maps.flatten(1), absolute=True
            )
            for item, value in zip(group, rho.tolist(), strict=True):
                item.sanity.append(float(value))
            stage.advance(len(group))
