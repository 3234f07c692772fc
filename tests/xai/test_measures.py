"""Known-answer tests of the explanation metrics on tiny synthetic cases."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from cxrlens.xai import measures as xm
from tests.xai.helpers import H, RegionSum, W, image, lung_mask

# -- localisation ------------------------------------------------------------------------------------


def test_a_map_equal_to_the_mask_is_all_inside_the_lungs():
    mask = lung_mask()
    maps = mask.float()[None]
    assert float(xm.lung_share(maps, mask)[0]) == 1.0
    assert float(xm.pointing_game(maps, mask)[0]) == 1.0
    outside = (~mask).float()[None]
    assert float(xm.lung_share(outside, mask)[0]) == 0.0
    assert float(xm.pointing_game(outside, mask)[0]) == 0.0


def test_uniform_map_scores_the_chance_level_and_signed_maps_count_their_positive_part():
    mask = lung_mask()
    chance = float(xm.area_share(mask)[0])
    assert chance == pytest.approx(mask.float().mean().item())
    assert float(xm.lung_share(torch.ones(1, H, W), mask)[0]) == pytest.approx(chance)
    signed = mask.float()[None] - 2 * (~mask).float()[None]  # positive evidence in the lungs only
    assert float(xm.lung_share(signed, mask)[0]) == 1.0
    assert float(xm.pointing_game(signed, mask)[0]) == 1.0


def test_a_map_with_no_positive_value_is_not_evaluable():
    """Fix: a purely negative map was scored on |map|, so its strongest counter-evidence in the lungs scored a
    lung share of 1 and a pointing-game hit. It shows no evidence for the label anywhere: NaN."""
    mask = lung_mask()
    negative = -mask.float()[None]  # all counter-evidence, in the lungs
    assert math.isnan(float(xm.lung_share(negative, mask)[0]))
    assert math.isnan(float(xm.pointing_game(negative, mask)[0]))
    assert math.isnan(float(xm.region_share(negative, ~mask)[0]))
    maps = torch.stack([negative[0], mask.float(), torch.zeros(H, W)])
    assert xm.has_positive(maps).tolist() == [False, True, False]
    assert torch.equal(xm.relevance(negative), torch.zeros(1, H, W))


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


def test_curves_start_at_the_source_end_at_the_target_and_respect_the_batch():
    model = RegionSum(lung_mask())
    x = image()
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
    x = image()
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


def test_relative_gain_divides_by_the_probability_of_the_unmodifiedimage():
    gains = torch.tensor([0.04, 0.4, 0.01, 0.2])
    p_x = torch.tensor([0.05, 0.5, 1e-7, 0.0])
    relative = xm.relative_gain(gains, p_x)
    assert relative[:2].tolist() == pytest.approx([0.8, 0.8])  # a 10x lower probability, the same relative gain
    assert math.isnan(float(relative[2])) and math.isnan(float(relative[3]))  # p(x) < 1e-6: undefined
    assert float(xm.relative_gain(torch.tensor([1e-6]), torch.tensor([1e-5]))[0]) == pytest.approx(0.1)


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
