"""The registered backbones: the paper's five (torchvision x4, timm x1) and a tiny CNN for tests.

With 14 labels and 3-channel input their trainable parameters equal the paper's Table 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import get_model, get_model_weights

from cxrlens.models.spec import ModelSpec, register_model
from cxrlens.models.weights import download_error


def _torchvision(name: str, **kwargs: object) -> Callable[[int], nn.Module]:
    def build(num_labels: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_labels, **kwargs)

    return build


_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _torchvision_imagenet(name: str) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        weights = get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
            raise download_error(name, weights.url, err) from err
        if name.startswith("densenet"):  # old checkpoints name layers 'norm.1' instead of 'norm1'
            state = {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
        return state

    return load


def _timm(name: str) -> Callable[[int], nn.Module]:
    def build(num_labels: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_labels)

    return build


def _timm_imagenet(name: str) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        try:
            model = timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as err:  # hub errors are OSError / ValueError subclasses
            pretrained = timm.models.get_pretrained_cfg(name)
            hub = pretrained.hf_hub_id if pretrained is not None else name
            raise download_error(name, f"the Hugging Face hub ({hub})", err) from err
        return model.state_dict()

    return load


for _name, _paper_name in (("resnet18", "ResNet18"), ("resnet34", "ResNet34")):
    register_model(
        ModelSpec(
            name=_name,
            build=_torchvision(_name),
            gradcam_layer="layer4",
            nap_layers=("layer1", "layer2", "layer3", "layer4"),
            first_conv="conv1",
            head=("fc.",),
            imagenet=_torchvision_imagenet(_name),
            description=f"{_paper_name} (torchvision)",
        )
    )

register_model(
    ModelSpec(
        name="inception_v3",
        build=_torchvision("inception_v3", aux_logits=True, init_weights=True, transform_input=False),
        gradcam_layer="Mixed_7c",
        nap_layers=("Mixed_5d", "Mixed_6e", "Mixed_7c"),
        first_conv="Conv2d_1a_3x3.conv",
        head=("fc.", "AuxLogits.fc."),
        min_size=75,
        min_train_size=299,
        aux_weight=0.4,
        imagenet=_torchvision_imagenet("inception_v3"),
        description="InceptionV3 with auxiliary head (torchvision); loss = main + 0.4 x auxiliary",
    )
)

register_model(
    ModelSpec(
        name="inception_resnet_v2",
        build=_timm("inception_resnet_v2"),
        gradcam_layer="conv2d_7b",
        nap_layers=("mixed_5b", "mixed_6a", "mixed_7a", "conv2d_7b"),
        first_conv="conv2d_1a.conv",
        head=("classif.",),
        min_size=75,
        imagenet=_timm_imagenet("inception_resnet_v2"),
        description="InceptionResNetV2 (timm)",
    )
)

register_model(
    ModelSpec(
        name="densenet161",
        build=_torchvision("densenet161"),
        gradcam_layer="features.norm5",
        nap_layers=("features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4"),
        first_conv="features.conv0",
        head=("classifier.",),
        imagenet=_torchvision_imagenet("densenet161"),
        description="DenseNet161 (torchvision)",
    )
)


class TinyCNN(nn.Module):
    """A few-thousand-parameter CNN for fast tests of logic.

    It reuses one in-place ReLU module twice (like torchvision's ResNet blocks), uses a functional
    relu (like InceptionV3 / DenseNet161) and a padded max-pool, so model preparation is exercised.
    """

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


register_model(
    ModelSpec(
        name="tiny",
        build=TinyCNN,
        gradcam_layer="bn3",
        nap_layers=("bn1", "bn2", "bn3"),
        first_conv="conv1",
        head=("fc.",),
        min_size=8,
        description="tiny CNN for fast tests (not in the paper)",
        paper=False,
    )
)
