"""Contract tests generated from the model registry: every model gets them."""

import pytest
import torch

from cxrlens.errors import ModelError, RegistryError
from cxrlens.models import count_parameters, create_model, get_spec, model_names

TABLE1 = {  # the paper's Table 1 (Chatterjee et al. 2024): trainable parameters, 14-label head, 3-channel input
    "resnet18": 11_183_694,
    "resnet34": 21_291_854,
    "inception_v3": 24_382_716,
    "densenet161": 26_502_926,
    "inception_resnet_v2": 54_327_982,
}
MODELS = model_names()


def test_registry_holds_the_five_paper_backbones_and_tiny():
    assert set(TABLE1) | {"tiny"} == set(MODELS)


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_parameter_counts_equal_table1(name):
    assert count_parameters(create_model(name, num_labels=14)) == TABLE1[name]


def _size(name: str) -> int:
    spec = get_spec(name)
    return max(64, spec.min_size + 21, spec.min_train_size)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_contract(name):
    torch.manual_seed(0)
    labels = ["A", "B", "C"]
    model = create_model(name, label_names=labels)
    model.train()
    x = torch.rand(2, 1, _size(name), _size(name))
    logits, aux = model.forward_train(x)
    assert logits.shape == (2, 3)
    assert (aux is not None) == (name == "inception_v3")
    loss = logits.sum() + (aux.sum() if aux is not None else 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    assert model(x).shape == (2, 3)
    assert model.label_names == tuple(labels)
    assert isinstance(model.gradcam_layer(), torch.nn.Module)
    for layer in model.nap_layer_names():
        model.get_submodule(layer)


@pytest.mark.parametrize("name", ["resnet18", "tiny"])
def test_one_channel_input_sums_the_first_convolution(name):
    torch.manual_seed(0)
    three = create_model(name, num_labels=2).eval()
    one = create_model(name, num_labels=2, in_chans=1).eval()
    one.load_state_dict(
        {k: (v.sum(1, keepdim=True) if k == f"backbone.{get_spec(name).first_conv}.weight" else v)
         for k, v in three.state_dict().items()}
    )  # fmt: skip
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(one(x), three(x), atol=1e-4, rtol=1e-4)
    assert count_parameters(one) < count_parameters(three)


def test_errors_are_clear():
    with pytest.raises(RegistryError, match="unknown model 'resnet81'; valid: resnet18"):
        create_model("resnet81")
    with pytest.raises(ModelError, match=r"expected input \[B, 1, H, W\]"):
        create_model("tiny", num_labels=2)(torch.rand(1, 2, 32, 32))
    inception = create_model("inception_v3", num_labels=2)
    with pytest.raises(ModelError, match="at least 75 px"):
        inception.eval()(torch.rand(1, 1, 64, 64))
    with pytest.raises(ModelError, match="training needs images of at least 299 px"):
        inception.train().forward_train(torch.rand(2, 1, 128, 128))


def test_top_level_factory():
    import cxrlens

    model = cxrlens.create_model("resnet18", num_labels=14, weights="none")
    assert count_parameters(model) == TABLE1["resnet18"]
    assert "densenet161" in cxrlens.model_names()


def test_device_for_the_accelerator_options():
    import torch

    from cxrlens.models.registry import device_for

    assert device_for("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert device_for("gpu").type == device_for("auto").type == "cuda"
    else:
        assert device_for("auto") == torch.device("cpu")
        with pytest.raises(ModelError, match="no CUDA device is available here"):
            device_for("gpu")
