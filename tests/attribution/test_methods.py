"""Registry-generated tests: every method on every backbone, and equality with captum's per-label calls."""

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    InternalInfluence,
    LayerConductance,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)

from cxrlens.attribution.methods import Context, get_method, method_names
from cxrlens.attribution.prepare import prepare_model
from cxrlens.errors import ConfigError, MethodError, RegistryError
from cxrlens.models import create_model, model_names
from cxrlens.models.ensemble import EnsembleModel
from cxrlens.models.footprint import CPU_WORKING_SET, GIB, GRAD_FACTOR, MAX_BATCH, Footprint, measure

SMALL = {  # small, quick settings for tests; defaults are for 512 px
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 2},
    "layer_conductance": {"n_steps": 3},
    "internal_influence": {"n_steps": 3},
    "occlusion": {"window": 20, "stride": 20},
    "feature_ablation": {"segments": 6},
    "shapley_value_sampling": {"segments": 6, "n_samples": 1},
}
SIZE = 80


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


def context(model, size=SIZE, budget_gib=2.0):
    return Context(model, measure(model, size), budget_gib * GIB, layer_name=getattr(model, "gradcam_layer_name", None))


def hooks_of(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def prepared_models():
    out = {}
    for name in model_names():
        torch.manual_seed(0)
        original = randomise_batchnorm(create_model(name, num_labels=3)).eval()
        out[name] = (original, prepare_model(original))
    return out


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("model_name", model_names())
def test_every_method_on_every_backbone(prepared_models, model_name, method):
    original, prepared = prepared_models[model_name]
    before = {k: v.clone() for k, v in original.state_dict().items()}
    spec = get_method(method)
    x = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    result = spec.run(context(prepared), spec.parse(SMALL.get(method)), x, [0, 2])
    assert result.maps.shape == (2, SIZE, SIZE)
    assert torch.isfinite(result.maps).all()
    if method not in ("gradcam", "guided_gradcam"):  # their ReLU may zero an untrained net's tiny map
        assert result.maps.abs().sum() > 0, "an all-zero map explains nothing"
    if method in ("deeplift", "integrated_gradients"):
        assert result.delta is not None and result.delta.shape == (2,)
    assert hooks_of(prepared) == 0 and hooks_of(original) == 0
    assert not original.training
    for key, value in original.state_dict().items():
        assert torch.equal(value, before[key]), key


def _tiny():
    torch.manual_seed(0)
    model = randomise_batchnorm(create_model("tiny", num_labels=4)).eval()
    return prepare_model(model)


def _per_label(model, method, x, target):
    """captum's plain call for one label, reduced like ours (channels summed, layer maps upsampled)."""
    layer = model.get_submodule(model.gradcam_layer_name)
    size = x.shape[-2:]
    if method == "saliency":
        attr = Saliency(model).attribute(x, target=target)
    elif method == "input_x_gradient":
        attr = InputXGradient(model).attribute(x, target=target)
    elif method == "guided_backprop":
        attr = GuidedBackprop(model).attribute(x, target=target)
    elif method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=4)
    elif method == "deeplift":
        attr = DeepLift(model).attribute(x, baselines=0.0, target=target)
    elif method == "smoothgrad":
        torch.manual_seed(0)
        attr = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.15, target=target)
    elif method == "gradcam":
        attr = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    elif method == "guided_gradcam":
        attr = GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear")
    elif method == "layer_conductance":
        attr = LayerConductance(model, layer).attribute(x, baselines=0.0, target=target, n_steps=3)
    elif method == "internal_influence":
        attr = InternalInfluence(model, layer).attribute(x, baselines=0.0, target=target, n_steps=3)
    else:
        raise AssertionError(method)
    attr = attr.sum(dim=1, keepdim=True)
    if attr.shape[-2:] != size:
        attr = torch.nn.functional.interpolate(attr, size=size, mode="bilinear", align_corners=False)
    return attr[0, 0]


GRADIENT_AND_LAYER = [m for m in method_names() if get_method(m).family != "perturbation"]


@pytest.mark.parametrize("method", GRADIENT_AND_LAYER)
def test_batched_labels_equal_captum_per_label_calls(method):
    model = _tiny()
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    spec = get_method(method)
    ours = spec.run(context(model, 40, budget_gib=0.05), spec.parse(SMALL.get(method)), x, [0, 3, 1])
    for i, target in enumerate([0, 3, 1]):
        torch.testing.assert_close(ours.maps[i], _per_label(model, method, x, target), atol=1e-5, rtol=1e-4)


def test_probability_output_attributes_the_sigmoid():
    model = _tiny()
    x = torch.rand(1, 1, 40, 40)
    spec = get_method("saliency")
    ours = spec.run(context(model, 40), spec.parse({"output": "probability", "abs": False}), x, [2])
    x = x.clone().requires_grad_(True)
    torch.sigmoid(model(x))[0, 2].backward()
    torch.testing.assert_close(ours.maps[0], x.grad[0, 0])


def test_layer_methods_refuse_the_ensemble_with_a_clear_error():
    members = [_tiny(), _tiny()]
    ensemble = EnsembleModel(members)
    spec = get_method("gradcam")
    with pytest.raises(MethodError, match=r"gradcam needs a layer.*ensemble has no single layer"):
        spec.run(context(ensemble, 40), spec.parse(), torch.rand(1, 1, 40, 40), [0])
    with pytest.raises(MethodError, match="has no layer 'nope'"):
        spec.run(context(members[0], 40), spec.parse({"layer": "nope"}), torch.rand(1, 1, 40, 40), [0])


def test_deeplift_on_the_ensemble_is_complete_for_its_mean_probability():
    ensemble = EnsembleModel([_tiny(), _tiny()])
    spec = get_method("deeplift")
    x = torch.rand(1, 1, 40, 40)
    result = spec.run(context(ensemble, 40), spec.parse({"output": "probability"}), x, [1])
    with torch.no_grad():
        change = ensemble.mean_probability(x)[0, 1] - ensemble.mean_probability(torch.zeros_like(x))[0, 1]
    assert abs(float(result.maps[0].sum() - change)) <= 0.01 * abs(float(change)) + 1e-4


def test_unknown_method_and_parameters():
    with pytest.raises(RegistryError, match=r"unknown attribution method 'occlussion'; valid: .*occlusion"):
        get_method("occlussion")
    with pytest.raises(ConfigError, match="occlusion parameters: windw: unknown option"):
        get_method("occlusion").parse({"windw": 3})
    with pytest.raises(MethodError, match="larger than the image"):
        spec = get_method("occlusion")
        spec.run(context(_tiny(), 40), spec.parse({"window": 64}), torch.rand(1, 1, 40, 40), [0])


def test_memory_budget_sets_batch_sizes():
    model = _tiny()
    small, large = measure(model, 256), measure(model, 32)
    assert small.activation_bytes > large.activation_bytes * 30
    assert small.grad_batch(0.01 * GIB) < small.grad_batch(1 * GIB)
    assert small.grad_batch(1e-9) == 1  # never zero
    assert large.no_grad_batch(8 * GIB) == 64


def test_cpu_batches_stay_within_the_working_set_but_gpu_batches_do_not():
    heavy = Footprint(activation_bytes=CPU_WORKING_SET // 2, largest_bytes=1024, parameter_bytes=0)
    assert heavy.grad_batch(100 * GIB) == heavy.no_grad_batch(100 * GIB) == 2
    on_gpu = dataclasses.replace(heavy, device_type="cuda")
    assert on_gpu.no_grad_batch(100 * GIB) == MAX_BATCH
    assert on_gpu.grad_batch(100 * GIB) == min(MAX_BATCH, int(100 * GIB // (GRAD_FACTOR * heavy.activation_bytes)))


def test_costs_are_listed_for_every_method():
    for name in method_names():
        described = get_method(name).describe(512)
        assert described["cost_per_image"]["forward"] >= 1
    assert get_method("occlusion").describe(512)["cost_per_image"]["forward"] == 962
    assert np.isclose(get_method("integrated_gradients").describe()["cost_per_image"]["backward"], 50)
