"""Weights: ImageNet through the real API (offline here: a clear error), local state dicts, checkpoints."""

import pytest
import torch

from cxrlens.errors import ModelError
from cxrlens.models import create_model
from cxrlens.models.checkpoint import load_model, read_meta, save_model


def test_imagenet_weights_offline_fail_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached: torchvision must download
    import urllib.request

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no slow retries

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ModelError, match=r"could not get ImageNet weights for resnet18 from https://.*--weights PATH"):
        create_model("resnet18", weights="imagenet")
    with pytest.raises(ModelError, match="could not get ImageNet weights for inception_resnet_v2"):
        create_model("inception_resnet_v2", weights="imagenet")


def test_imagenet_loader_uses_the_torchvision_weights_api(monkeypatch):
    """The same code path with a state dict we made ourselves standing in for the download."""
    from torchvision.models import ResNet18_Weights, resnet18

    reference = resnet18(num_classes=1000).state_dict()
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", lambda *a, **k: reference, raising=False)
    model = create_model("resnet18", num_labels=3, weights="imagenet")
    torch.testing.assert_close(model.backbone.conv1.weight, reference["conv1.weight"])
    assert model.backbone.fc.out_features == 3  # the 1000-class head was replaced


def test_local_state_dict_with_imagenet_head(tmp_path):
    from torchvision.models import resnet18

    source = resnet18(num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = create_model("resnet18", num_labels=5, weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    one = create_model("resnet18", num_labels=5, weights=str(tmp_path / "r18.pth"), in_chans=1)
    torch.testing.assert_close(one.backbone.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_bad_weight_files(tmp_path):
    with pytest.raises(ModelError, match="weights file not found"):
        create_model("tiny", weights=str(tmp_path / "none.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a loadable weights file"):
        create_model("tiny", weights=str(tmp_path / "junk.pth"))
    torch.save(create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ModelError, match=r"do not fit tiny|not a tiny state dict"):
        create_model("tiny", weights=str(tmp_path / "r18.pth"))


def test_checkpoint_round_trip_and_label_check(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", label_names=["A", "B"]).eval()
    path = tmp_path / "model.pt"
    save_model(model, path, preprocess={"size": 64}, fold=2)
    meta = read_meta(path)
    assert meta["model"] == "tiny" and meta["label_names"] == ["A", "B"] and meta["fold"] == 2
    assert meta["preprocess"] == {"size": 64} and "version" in meta
    loaded, _ = load_model(path, ["A", "B"])
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ModelError, match=r"checkpoint labels do not match the data \(data has \['C'\]"):
        load_model(path, ["A", "C"])
    with pytest.raises(ModelError, match="same labels in another order"):
        load_model(path, ["B", "A"])
    # a cxrlens checkpoint is also usable as --weights for a new model
    again = create_model("tiny", label_names=["A", "B"], weights=str(path)).eval()
    torch.testing.assert_close(again(x), model(x))
