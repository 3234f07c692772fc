"""Tables, ranking and verdict of the scored maps."""

import pytest
import torch

from cxrlens.config import XaiConfig
from cxrlens.xai import measures as xm
from cxrlens.xai.faithfulness import CURVES, apply_curves
from cxrlens.xai.scores import RANKED, ScoredMap
from cxrlens.xai.settings import Settings
from cxrlens.xai.summary import metric_table, ranking, verdict
from tests.xai.helpers import H, RegionSum, W, image, lung_mask, scored

SETTINGS = Settings.of(XaiConfig(bootstrap=200), H)
STEPS = 8


def _faithfulness(model: RegionSum, attribution: torch.Tensor, x: torch.Tensor) -> dict[str, list[float]]:
    """The deletion, insertion and random-order curves of label 0 for one map."""
    order = xm.attribution_order(attribution[None], torch.Generator().manual_seed(0))
    random = xm.random_orders(3, H * W, torch.Generator().manual_seed(1))
    deletion = xm.deletion_curves(model, x, order, STEPS)[0, :, 0]
    insertion = xm.insertion_curves(model, x, order, STEPS)[0, :, 0]
    random_deletion = xm.deletion_curves(model, x, random, STEPS).mean(dim=0)[:, 0]
    random_insertion = xm.insertion_curves(model, x, random, STEPS).mean(dim=0)[:, 0]
    values = (deletion, insertion, random_deletion, random_insertion)
    return {name: c.tolist() for name, c in zip(CURVES, values, strict=True)}


def test_models_are_ranked_on_relative_gains_so_confidence_is_not_rewarded():
    """Fix: two models whose maps are equally good, one 10x less confident. The raw gains (probability units)
    differ 10x and would rank the confident model first; relative to p(x) they are equal: the models tie."""
    region = lung_mask()
    attribution = region.float() + 0.01 * torch.rand(H, W, generator=torch.Generator().manual_seed(2))
    maps: list[ScoredMap] = []
    for seed in range(4):
        x = image(seed)
        for name, scale in (("confident", 1.0), ("unsure", 0.1)):
            item = scored(name, "saliency", image=f"img{seed}.png")
            apply_curves(item, _faithfulness(RegionSum(region, scale), attribution, x))
            maps.append(item)
    tables = {name: metric_table(maps, name, SETTINGS) for name in ("deletion_gain", "deletion_gain_rel")}
    raw = {r["model"]: r["mean"] for r in tables["deletion_gain"]}
    relative = {r["model"]: r["mean"] for r in tables["deletion_gain_rel"]}
    assert raw["confident"] > 0 and raw["unsure"] == pytest.approx(raw["confident"] / 10, rel=1e-4)
    assert relative["unsure"] == pytest.approx(relative["confident"], rel=1e-4)

    assert "deletion_gain" not in RANKED and "insertion_gain" not in RANKED
    assert RANKED["deletion_gain_rel"] and RANKED["insertion_gain_rel"]
    rows = {name: metric_table(maps, name, SETTINGS) for name in RANKED}
    ranked = ranking(rows)
    assert {(r["model"], r["rank"], r["score"]) for r in ranked.models} == {("confident", 1, 0.5), ("unsure", 1, 0.5)}
    words = verdict(ranked, sanity_rows=[], metrics=rows, n_maps=len(maps), n_images=4)
    assert "confident, unsure tie" in words and "deletion_gain_rel" in words


def test_a_better_map_still_wins_on_relative_gains():
    region = lung_mask()
    good = region.float() + 0.01 * torch.rand(H, W, generator=torch.Generator().manual_seed(2))
    bad = -good  # the least relevant pixels first
    maps = []
    for seed in range(3):
        x = image(seed)
        for method, attribution in (("saliency", good), ("gradcam", bad)):
            item = scored("tiny", method, image=f"img{seed}.png")
            apply_curves(item, _faithfulness(RegionSum(region), attribution, x))
            maps.append(item)
    ranked = ranking({name: metric_table(maps, name, SETTINGS) for name in RANKED})
    assert [(r["method"], r["rank"]) for r in ranked.methods] == [("saliency", 1), ("gradcam", 2)]
    assert ranked.detail["saliency"] == {"deletion_gain_rel": 1.0, "insertion_gain_rel": 1.0}
