"""Faithfulness of the maps: deletion and insertion (Petsiuk et al., "RISE", BMVC 2018) against random orders.

For every map of one image and one model (fold), the label's probability is followed as the pixels are
deleted (set to black) or inserted (into a blurred or black start) in the map's order, and in ``n_random``
seeded random orders per image (shared by every model, method and label). The gains are the random-order AUC
minus the map's (deletion) and the map's minus the random-order AUC (insertion), in probability units; the
relative gains divide them by p(x), the label's probability on the unmodified image (the first point of the
deletion curve), since a label at p = 0.05 can gain at most 0.05. Curves are cached per map, the random
curves per image and model (:class:`~cxrlens.xai.cache.ResultCache`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cxrlens.attribution.methods import ProbabilityOutput
from cxrlens.fileio import stable_hash
from cxrlens.models.registry import model_device
from cxrlens.xai import measures as xm
from cxrlens.xai.context import Stage
from cxrlens.xai.scores import ScoredMap
from cxrlens.xai.settings import Settings

MAPS_PER_CHUNK = 16  # maps whose deletion / insertion curves are built together (bounds the order tensors)


def _on_device(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as a function of CPU images: inputs go to its device, outputs come back to the CPU."""
    device = model_device(model)
    return lambda images: model(images.to(device)).cpu()


def faith_key(item: ScoredMap, s: Settings) -> str:
    """The cache key of a map's deletion and insertion curves."""
    e = item.entry
    parts = [e["image"], e["model"], e["fold"], e["method"], e["label"], e.get("params_hash")]
    return stable_hash(
        ["faith", *parts, e.get("checkpoint_sha256"), e.get("scale"), s.steps, s.seed, s.insertion_start, s.size]
    )


def random_key(item: ScoredMap, label_names: tuple[str, ...], s: Settings) -> str:
    """The cache key of the random-order curves (every label) of a map's image and model (fold)."""
    sha = item.entry.get("checkpoint_sha256")
    return stable_hash(
        [
            "random",
            item.image,
            item.model,
            item.fold,
            sha,
            list(label_names),
            s.steps,
            s.seed,
            s.n_random,
            s.insertion_start,
            s.size,
        ]
    )


CURVES = ("deletion", "insertion", "random_deletion", "random_insertion")


def apply_curves(item: ScoredMap, curves: dict[str, list[float]]) -> None:
    """Store a map's ``CURVES`` (the label's probability at each step; the random ones: mean over the random
    orders) and the AUCs, gains and relative gains they give."""
    item.curves = {name: list(curves[name]) for name in CURVES}
    auc = {k: float(xm.curve_auc(torch.tensor(v))) for k, v in item.curves.items()}
    deletion_gain = auc["random_deletion"] - auc["deletion"]
    insertion_gain = auc["insertion"] - auc["random_insertion"]
    p_x = torch.tensor([curves["deletion"][0]] * 2, dtype=torch.float64)  # the unmodified image
    relative = xm.relative_gain(torch.tensor([deletion_gain, insertion_gain], dtype=torch.float64), p_x)
    item.values["deletion_auc"] = auc["deletion"]
    item.values["insertion_auc"] = auc["insertion"]
    item.values["random_deletion_auc"] = auc["random_deletion"]
    item.values["random_insertion_auc"] = auc["random_insertion"]
    item.values["deletion_gain"] = deletion_gain
    item.values["insertion_gain"] = insertion_gain
    item.values["deletion_gain_rel"] = float(relative[0])
    item.values["insertion_gain_rel"] = float(relative[1])


def faithfulness(stage: Stage, image: np.ndarray, group: list[ScoredMap], tensors: torch.Tensor) -> None:
    """Deletion / insertion of the maps ``group`` (values ``tensors`` ``[N, H, W]``) of one image and one model
    (fold); what the cache holds is reused."""
    s, cache = stage.settings, stage.cache
    first = group[0]
    image_name = first.image
    todo = [i for i, item in enumerate(group) if cache.get("faithfulness", faith_key(item, s)) is None]
    rkey = random_key(first, stage.label_names, s)
    random = cache.get("random", rkey)
    if todo or random is None:
        loaded = stage.models.get(first.model, first.fold, stage.members(first))
        forward = _on_device(ProbabilityOutput(loaded.model).eval())
        x = torch.from_numpy(image)[None]
        batch = loaded.footprint.no_grad_batch(s.budget)
        start = xm.gaussian_blur(x, s.blur_sigma) if s.insertion_start == "blur" else torch.zeros_like(x)
        n_pixels = x.shape[-1] * x.shape[-2]
        if random is None:
            orders = xm.random_orders(s.n_random, n_pixels, xm.seeded_generator(s.seed, "random", image_name))
            deletion = xm.deletion_curves(forward, x, orders, s.steps, batch).mean(dim=0)  # [S+1, L]
            insertion = xm.insertion_curves(forward, x, orders, s.steps, batch, start=start).mean(dim=0)
            random = {"deletion": deletion.T.tolist(), "insertion": insertion.T.tolist()}
            cache.put("random", rkey, random)
        for first_row in range(0, len(todo), MAPS_PER_CHUNK):
            chunk = todo[first_row : first_row + MAPS_PER_CHUNK]
            orders = torch.cat(
                [
                    xm.attribution_order(
                        tensors[i : i + 1],
                        xm.seeded_generator(s.seed, "order", image_name, group[i].method, group[i].label),
                    )
                    for i in chunk
                ]
            )
            deletion = xm.deletion_curves(forward, x, orders, s.steps, batch)
            insertion = xm.insertion_curves(forward, x, orders, s.steps, batch, start=start)
            for row, i in enumerate(chunk):
                label = group[i].label_index
                curves = {"deletion": deletion[row, :, label].tolist(), "insertion": insertion[row, :, label].tolist()}
                cache.put("faithfulness", faith_key(group[i], s), curves)
    for item in group:
        found = cache.get("faithfulness", faith_key(item, s))
        label = item.label_index
        random_of_label = {"random_deletion": random["deletion"][label], "random_insertion": random["insertion"][label]}
        apply_curves(item, {**found, **random_of_label})
