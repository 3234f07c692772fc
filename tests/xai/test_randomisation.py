"""The cascading randomisation of a model's weights (Adebayo et al. 2018) on small known models."""

import torch
from torch import nn

from cxrlens.attribution.prepare import prepare_model
from cxrlens.models import create_model
from cxrlens.xai import randomisation as xr
from tests.xai.helpers import image


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
    x = image()[None]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = xr.backbone_blocks(model, x)
    assert blocks == ["backbone.conv", "backbone.hidden", "backbone.head"]
    ignores = xr.randomisation_test(model, blocks, lambda m: x[:, 0].clone(), seed=0)
    assert ignores.layers == ["backbone.head", "backbone.hidden", "backbone.conv"]
    assert torch.allclose(ignores.final(), torch.ones(1, dtype=torch.float64))
    assert ignores.insensitive()
    depends = xr.randomisation_test(model, blocks, saliency(x), seed=0)
    assert depends.spearman.shape == (3, 1)
    assert not depends.insensitive(), depends.spearman
    for key, value in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(value, before[key]), key
    assert _hooks(model) == 0


def test_randomisation_is_seeded_and_leaves_the_global_generator_alone():
    model = SmallNet().eval()
    x = image()[None]
    blocks = xr.backbone_blocks(model, x)
    state = torch.random.get_rng_state()
    first = xr.randomisation_test(model, blocks, saliency(x), seed=4)
    second = xr.randomisation_test(model, blocks, saliency(x), seed=4)
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
    blocks = xr.backbone_blocks(model, torch.zeros(1, 1, 12, 12))
    names = ["backbone.features.0", "backbone.features.2", "backbone.features.4", "backbone.classifier"]
    assert blocks == names
    assert _hooks(model) == 0
    assert xr.cascade_cuts(12, 5) == [1, 4, 6, 9, 12]
    assert xr.cascade_cuts(3, 5) == [1, 2, 3]
    assert xr.cascade_cuts(7, 1) == [7]


def test_blocks_of_the_prepared_tiny_model():
    prepared = prepare_model(create_model("tiny", 3))
    blocks = xr.backbone_blocks(prepared, torch.zeros(1, 1, 32, 32))
    assert blocks[0] == "backbone.conv1" and blocks[-1] == "backbone.fc" and len(blocks) == 7
