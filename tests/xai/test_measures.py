"""Known-answer tests of the explanation metrics on tiny synthetic cases."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn

from cxrlens.xai import measures as xm

H = W = 16


def lung_mask() -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[3:13, 2:7] = True
    mask[3:13, 9:14] = True
    return mask


# -- localisation ------------------------------------------------------------------------------------


def test_a_map_equal_to_the_mask_is_all_inside_the_lungs():
    mask = lung_mask()
    maps = mask.float()[None]
    assert float(xm.lung_share(maps, mask)[0]) == 1.0
    assert float(xm.pointing_game(maps, mask)[0]) == 1.0
    outside = (~mask).float()[None]
    assert float(xm.lung_share(outside, mask)[0]) == 0.0
    assert float(xm.pointing_game(outside, mask)[0]) == 0.0


def test_uniform_map_scores_the_chance_level_and_negative_maps_use_absolute_values():
    mask = lung_mask()
    chance = float(xm.area_share(mask)[0])
    assert chance == pytest.approx(mask.float().mean().item())
    assert float(xm.lung_share(torch.ones(1, H, W), mask)[0]) == pytest.approx(chance)
    negative = -mask.float()[None]  # no positive part at all: measured on |map|
    assert float(xm.lung_share(negative, mask)[0]) == 1.0
    signed = mask.float()[None] - 2 * (~mask).float()[None]  # positive evidence in the lungs only
    assert float(xm.lung_share(signed, mask)[0]) == 1.0


def test_zero_map_is_undefined_and_peaks_on_plateaus_count_proportionally():
    mask = lung_mask()
    assert math.isnan(float(xm.lung_share(torch.zeros(1, H, W), mask)[0]))
    assert math.isnan(float(xm.pointing_game(torch.zeros(1, H, W), mask)[0]))
    plateau = torch.zeros(1, H, W)
    plateau[0, 5, 3] = plateau[0, 5, 3 + 5] = 1.0  # one maximal pixel inside, one between the lungs
    assert not mask[5, 8] and mask[5, 3]
    assert float(xm.pointing_game(plateau, mask)[0]) == 0.5


def test_border_frame_lies_inside_the_content():
    content = torch.zeros(50, 50, dtype=torch.bool)
    content[10:40, :] = True  # a wide image padded above and below
    frame = xm.border_frame(content, 0.1)
    assert not (frame & ~content).any()
    assert frame[10, 25] and frame[39, 25] and frame[25, 0] and frame[25, 49]
    assert not frame[25, 25]
    assert frame[10:13, 25].all() and not frame[13, 25]  # 10% of 30 rows = 3
    assert frame[25, :5].all() and not frame[25, 5]  # 10% of 50 columns = 5


# -- deletion / insertion ----------------------------------------------------------------------------


class RegionSum(nn.Module):
    """Label 0: sigmoid of the mean intensity inside a region (centred); label 1: a constant."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        inside = (x[:, 0] * self.region).flatten(1).sum(1) / self.region.sum()
        first = torch.sigmoid(8 * (inside - 0.5))
        return torch.stack([first, torch.full_like(first, 0.3)], dim=1)


def _image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + 0.5 * torch.rand(1, H, W, generator=generator)


def test_curves_start_at_the_source_end_at_the_target_and_respect_the_batch():
    model = RegionSum(lung_mask())
    x = _image()
    orders = xm.random_orders(3, H * W, torch.Generator().manual_seed(1))
    curves = xm.deletion_curves(model, x, orders, steps=8, batch=5)
    assert curves.shape == (3, 9, 2)
    assert max(model.calls) <= 5  # every batched pass within the bound
    assert sum(model.calls) == 2 + 3 * 7  # the two ends once, then 7 inner steps per curve
    model.calls.clear()
    xm.deletion_curves(model, x, orders, steps=8, batch=1)
    assert max(model.calls) == 1
    full = model(x[None])[0]
    black = model(torch.zeros(1, 1, H, W))[0]
    assert torch.allclose(curves[:, 0], full.expand(3, 2))
    assert torch.allclose(curves[:, -1], black.expand(3, 2))


def test_deletion_of_a_linear_model_follows_the_removed_pixels_exactly():
    weights = torch.rand(H * W, generator=torch.Generator().manual_seed(3))

    def linear(batch: torch.Tensor) -> torch.Tensor:
        return (batch.flatten(1) * weights).sum(1, keepdim=True)

    x = torch.ones(1, H, W)
    order = torch.argsort(weights, descending=True)[None]
    curve = xm.deletion_curves(linear, x, order, steps=4)[0, :, 0]
    counts = xm.step_counts(H * W, 4)
    expected = torch.tensor([weights[order[0, n:]].sum() for n in counts])
    assert torch.allclose(curve, expected, atol=1e-4)


@pytest.mark.parametrize("black_start", [False, True])
def test_the_perfect_order_beats_random_orders(black_start):
    region = lung_mask()
    model = RegionSum(region)
    x = _image()
    attribution = region.float()[None] + 0.01 * torch.rand(1, H, W, generator=torch.Generator().manual_seed(2))
    perfect = xm.attribution_order(attribution, torch.Generator().manual_seed(0))
    reverse = xm.attribution_order(-attribution, torch.Generator().manual_seed(0))
    random = xm.random_orders(4, H * W, torch.Generator().manual_seed(5))
    start = torch.zeros_like(x) if black_start else None
    orders = torch.cat([perfect, reverse, random])
    deletion = xm.curve_auc(xm.deletion_curves(model, x, orders, steps=16, batch=7)[:, :, 0])
    insertion = xm.curve_auc(xm.insertion_curves(model, x, orders, steps=16, batch=7, start=start)[:, :, 0])
    assert deletion[0] < deletion[2:].mean() < deletion[1]
    assert insertion[0] > insertion[2:].mean() > insertion[1]


def test_ties_are_broken_at_random_not_by_position():
    flat = torch.zeros(1, H, W)
    by_position = xm.attribution_order(flat)
    assert torch.equal(by_position[0], torch.arange(H * W))
    shuffled = xm.attribution_order(flat, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled[0], torch.arange(H * W))
    assert torch.equal(torch.sort(shuffled[0]).values, torch.arange(H * W))
    ranked = torch.arange(H * W, dtype=torch.float32).reshape(1, H, W)
    assert torch.equal(xm.attribution_order(ranked, torch.Generator())[0], torch.arange(H * W).flip(0))


def test_auc_uses_a_unit_x_axis_and_blur_keeps_the_mean():
    assert float(xm.curve_auc(torch.ones(9))) == pytest.approx(1.0)
    assert float(xm.curve_auc(torch.linspace(1, 0, 17))) == pytest.approx(0.5)
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = xm.gaussian_blur(image, 2.0)
    assert blurred.shape == image.shape and blurred.std() < image.std()
    assert torch.equal(xm.gaussian_blur(image, 0.0), image)
    with pytest.raises(ValueError, match="steps must be at least 2"):
        xm.pixel_curves(lambda b: b.flatten(1)[:, :1], image, image, torch.arange(1024)[None], steps=1)


# -- spearman and bootstrap ----------------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties_batched_and_absolute():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (5, 200), generator=generator).float()
    b = a + torch.randn(5, 200, generator=generator) * 2
    ours = xm.spearman(a, b)
    for i in range(5):
        assert float(ours[i]) == pytest.approx(spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-10)
    absolute = xm.spearman(a[0], b[0], absolute=True)
    assert float(absolute) == pytest.approx(spearmanr(a[0].abs().numpy(), b[0].abs().numpy()).statistic, abs=1e-10)
    assert torch.equal(xm.average_ranks(a[:1])[0], torch.from_numpy(rankdata(a[0].numpy())).double())
    assert math.isnan(float(xm.spearman(torch.ones(10), torch.arange(10.0))))
    assert float(xm.spearman(torch.arange(10.0), -torch.arange(10.0))) == pytest.approx(-1.0)


def test_pairwise_spearman_averages_every_pair():
    a = torch.arange(20.0)
    assert xm.pairwise_spearman([a, a, a]) == pytest.approx(1.0)
    assert math.isnan(xm.pairwise_spearman([a]))
    b = torch.rand(20, generator=torch.Generator().manual_seed(1))
    expected = np.mean([spearmanr(a, b).statistic, spearmanr(a, a).statistic, spearmanr(b, a).statistic])
    assert xm.pairwise_spearman([a, b, a]) == pytest.approx(expected)


def test_bootstrap_of_a_constant_is_that_constant():
    ci = xm.bootstrap_ci([0.1] * 9, groups=list("aaabbbccd"), n_boot=500, seed=3)
    assert (ci.mean, ci.low, ci.high, ci.n, ci.n_groups) == (0.1, 0.1, 0.1, 9, 4)


def test_bootstrap_is_seeded_covers_the_mean_and_resamples_groups():
    values = np.random.default_rng(0).normal(size=60)
    groups = np.arange(60) % 12
    first = xm.bootstrap_ci(values, groups, n_boot=400, seed=7)
    again = xm.bootstrap_ci(values, groups, n_boot=400, seed=7)
    assert first == again
    assert first.low < first.mean < first.high and first.n_groups == 12
    with_nan = xm.bootstrap_ci([*values, math.nan], [*groups, 99], n_boot=400, seed=7)
    assert with_nan == first  # non-finite values dropped
    empty = xm.bootstrap_ci([math.nan], n_boot=10)
    assert empty.n == 0 and math.isnan(empty.mean)
    # one image holding many maps counts as one draw, not many
    clustered = xm.bootstrap_ci([0.0] * 10 + [1.0], ["a"] * 10 + ["b"], n_boot=2000, seed=0)
    assert clustered.mean == pytest.approx(1 / 11)
    assert clustered.low == 0.0 and clustered.high == 1.0


# -- randomisation test ------------------------------------------------------------------------------


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential()
        self.backbone.add_module("conv", nn.Conv2d(1, 4, 3, padding=1))
        self.backbone.add_module("relu", nn.ReLU())
        self.backbone.add_module("pool", nn.AdaptiveAvgPool2d(4))
        self.backbone.add_module("flatten", nn.Flatten())
        self.backbone.add_module("hidden", nn.Linear(64, 16))
        self.backbone.add_module("relu2", nn.ReLU())
        self.backbone.add_module("head", nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def saliency(x: torch.Tensor):
    def attribute(model: nn.Module) -> torch.Tensor:
        inputs = x.clone().requires_grad_(True)
        model(inputs)[:, 0].sum().backward()
        return inputs.grad[:, 0].abs().detach()

    return attribute


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_randomisation_flags_a_map_that_ignores_the_model_but_not_a_gradient():
    model = SmallNet().eval()
    x = _image()[None]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = xm.backbone_blocks(model, x)
    assert blocks == ["backbone.conv", "backbone.hidden", "backbone.head"]
    ignores = xm.randomisation_test(model, blocks, lambda m: x[:, 0].clone(), seed=0)
    assert ignores.layers == ["backbone.head", "backbone.hidden", "backbone.conv"]
    assert torch.allclose(ignores.final(), torch.ones(1, dtype=torch.float64))
    assert ignores.insensitive()
    depends = xm.randomisation_test(model, blocks, saliency(x), seed=0)
    assert depends.spearman.shape == (3, 1)
    assert not depends.insensitive(), depends.spearman
    for key, value in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key]), key
    assert _hooks(model) == 0


def test_randomisation_is_seeded_and_leaves_the_global_generator_alone():
    model = SmallNet().eval()
    x = _image()[None]
    blocks = xm.backbone_blocks(model, x)
    state = torch.random.get_rng_state()
    first = xm.randomisation_test(model, blocks, saliency(x), seed=4)
    second = xm.randomisation_test(model, blocks, saliency(x), seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.spearman, second.spearman)


class Splittable(nn.Module):
    """One container holding most parameters (DenseNet's ``features``), a head, and an unused auxiliary head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.features = nn.Sequential(
            nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1)
        )
        self.backbone.aux = nn.Linear(8, 2)
        self.backbone.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.classifier(self.backbone.features(x).flatten(1))


def test_blocks_follow_the_forward_order_drop_uncalled_children_and_split_big_containers():
    model = Splittable()
    blocks = xm.backbone_blocks(model, torch.zeros(1, 1, 12, 12))
    names = ["backbone.features.0", "backbone.features.2", "backbone.features.4", "backbone.classifier"]
    assert blocks == names
    assert _hooks(model) == 0
    assert xm.cascade_cuts(12, 5) == [1, 4, 6, 9, 12]
    assert xm.cascade_cuts(3, 5) == [1, 2, 3]
    assert xm.cascade_cuts(7, 1) == [7]


def test_blocks_of_the_prepared_tiny_model():
    from cxrlens.attribution.prepare import prepare_model
    from cxrlens.models import create_model

    prepared = prepare_model(create_model("tiny", 3))
    blocks = xm.backbone_blocks(prepared, torch.zeros(1, 1, 32, 32))
    assert blocks[0] == "backbone.conv1" and blocks[-1] == "backbone.fc" and len(blocks) == 7
