"""Weights: ImageNet through the torchvision / timm weights API, or a local state dict.

A local file may be a plain backbone state dict (its 1000-class ImageNet head is dropped), a
cxrlens checkpoint, or a Lightning checkpoint. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from cxrlens.errors import ModelError
from cxrlens.models.spec import ModelSpec


def read_state_file(path: str | Path) -> dict:  # type: ignore[type-arg]
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found (use --weights none, imagenet or a file path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path}: not a loadable weights file ({first})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def backbone_state(obj: dict) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
    """The backbone's tensors from a plain, cxrlens or Lightning state dict."""
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict):
        raise ModelError("weights file has a 'state_dict' entry that is not a mapping")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("model.backbone.", "backbone.", "module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def load_state_into_backbone(backbone: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state``; head tensors of another shape (e.g. 1000 ImageNet classes) are left to the new head."""
    own = backbone.state_dict()
    head_keys = [k for k in state if k.startswith(spec.head)]
    skipped = [k for k in head_keys if k in own and own[k].shape != state[k].shape]
    usable = {k: v for k, v in state.items() if k not in skipped}
    mismatched = [k for k, v in usable.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise ModelError(
            f"{where}: {len(mismatched)} tensor(s) do not fit {spec.name}, e.g. {k} "
            f"{tuple(usable[k].shape)} vs {tuple(own[k].shape)}"
        )
    result = backbone.load_state_dict(usable, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(spec.head)]
    if missing or result.unexpected_keys:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if result.unexpected_keys:
            detail.append(f"unexpected {len(result.unexpected_keys)} (e.g. {result.unexpected_keys[0]})")
        raise ModelError(f"{where}: not a {spec.name} state dict: {', '.join(detail)}")


def load_weights(backbone: nn.Module, spec: ModelSpec, weights: str, in_chans: int = 3) -> None:
    if weights in ("none", "", None):
        return
    if weights == "imagenet":
        if spec.imagenet is None:
            raise ModelError(f"{spec.name} has no ImageNet weights; use --weights none or a file")
        state = spec.imagenet()
        load_state_into_backbone(backbone, spec, state, f"ImageNet weights of {spec.name}")
        return
    state = backbone_state(read_state_file(weights))
    first = state.get(f"{spec.first_conv}.weight")
    if first is not None and first.shape[1] == 1:
        if in_chans != 1:
            raise ModelError(f"{weights}: weights are for 1-channel input; create the model with in_chans=1")
        adapt_first_conv(backbone, spec)
    load_state_into_backbone(backbone, spec, state, str(weights))


def adapt_first_conv(backbone: nn.Module, spec: ModelSpec) -> None:
    """Replace the first convolution by a 1-channel one whose kernel is the sum over RGB."""
    conv = backbone.get_submodule(spec.first_conv)
    if not isinstance(conv, nn.Conv2d):
        raise ModelError(f"{spec.name}: {spec.first_conv} is not a Conv2d")
    if conv.in_channels == 1:
        return
    new = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    parent_name, _, leaf = spec.first_conv.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    setattr(parent, leaf, new)


def download_error(name: str, source: str, err: BaseException) -> ModelError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelError(
        f"could not get ImageNet weights for {name} from {source} ({reason}). On an offline machine, "
        f"download them elsewhere and pass --weights PATH to the file, or train with --weights none"
    )
