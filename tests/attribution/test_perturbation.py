"""The all-label perturbation engine equals captum's per-label calls."""

import pytest
import torch
from captum.attr import FeatureAblation, Occlusion, ShapleyValueSampling

from cxrlens.attribution import perturbation as P
from cxrlens.attribution import segmentation as S
from cxrlens.models import create_model


def randomised_tiny(labels: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("tiny", num_labels=labels).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize(
    ("window", "stride", "batch"), [((8, 8), (4, 4), 7), ((10, 6), (5, 3), 64), ((7, 7), (3, 3), 1)]
)
def test_occlusion_equals_captum_per_label(window, stride, batch):
    model = randomised_tiny()
    x = torch.rand(1, 1, 40, 36)
    ours = P.occlusion(model, x, [0, 3, 4], window, stride, batch=batch)
    for i, target in enumerate([0, 3, 4]):
        ref = Occlusion(model).attribute(x, sliding_window_shapes=(1, *window), strides=(1, *stride), target=target)
        torch.testing.assert_close(ours[i], ref[0, 0], atol=1e-5, rtol=1e-4)


def test_occlusion_counts_passes_like_captum():
    assert P.occlusion_passes((512, 512), (32, 32), (16, 16)) == 961
    with pytest.raises(ValueError, match="larger than the image"):
        P.occlusion_windows((16, 16), (32, 32), (16, 16))


def test_feature_ablation_equals_captum_per_label():
    model = randomised_tiny()
    x = torch.rand(1, 1, 40, 36)
    mask = torch.from_numpy(S.grid_features(40, 36, 7))
    ours = P.feature_ablation(model, x, [1, 4], mask, baseline=0.2, batch=5)
    for i, target in enumerate([1, 4]):
        ref = FeatureAblation(model).attribute(x, feature_mask=mask[None, None], target=target, baselines=0.2)
        torch.testing.assert_close(ours[i], ref[0, 0], atol=1e-5, rtol=1e-4)


def test_shapley_sampling_equals_captum_with_the_same_orders():
    model = randomised_tiny()
    x = torch.rand(1, 1, 40, 36)
    mask = torch.from_numpy(S.grid_features(40, 36, 9))
    ours = P.shapley_value_sampling(model, x, [2, 0], mask, n_samples=3, batch=6,
                                    generator=torch.Generator().manual_seed(3))  # fmt: skip
    for i, target in enumerate([2, 0]):
        torch.manual_seed(3)  # captum draws its orders from the global generator
        ref = ShapleyValueSampling(model).attribute(x, feature_mask=mask[None, None], target=target, n_samples=3)
        torch.testing.assert_close(ours[i], ref[0, 0], atol=1e-5, rtol=1e-4)


def test_shapley_values_sum_to_the_output_change():
    """Efficiency: per order, the gains telescope to f(x) - f(baseline)."""
    model = randomised_tiny()
    x = torch.rand(1, 1, 32, 32)
    mask = torch.from_numpy(S.grid_features(32, 32, 8))
    maps = P.shapley_value_sampling(model, x, [1], mask, n_samples=2, generator=torch.Generator().manual_seed(0))
    per_feature = torch.stack([maps[0][mask == f][0] for f in range(int(mask.max()) + 1)])
    with torch.no_grad():
        change = model(x)[0, 1] - model(torch.zeros_like(x))[0, 1]
    torch.testing.assert_close(per_feature.sum(), change, atol=1e-4, rtol=1e-4)


def test_superpixels_are_consecutive_and_cover_the_image():
    image = torch.rand(64, 64).numpy()
    labels = S.superpixels(image, n_segments=16)
    assert labels.shape == (64, 64) and labels.min() == 0
    assert sorted(set(labels.ravel().tolist())) == list(range(labels.max() + 1))


def test_runs_without_autograd():
    model = randomised_tiny()
    seen = []
    forward = lambda batch: (seen.append(torch.is_grad_enabled()), model(batch))[1]  # noqa: E731
    P.occlusion(forward, torch.rand(1, 1, 16, 16), [0], (8, 8), (8, 8))
    assert seen and not any(seen)
