"""Layer conductance batched by the memory budget: captum's sums, any number of path points per pass, refusal."""

import pytest
import torch
from captum.attr import LayerConductance

from cxrlens.attribution.layer import conductance_steps, layer_conductance
from cxrlens.attribution.methods import Context, ProbabilityOutput, get_method
from cxrlens.attribution.prepare import prepare_model
from cxrlens.errors import MethodError
from cxrlens.models import create_model
from cxrlens.models.footprint import CPU_WORKING_SET, GIB, GRAD_FACTOR, Footprint, measure
from tests.attribution.test_methods import randomise_batchnorm


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return prepare_model(randomise_batchnorm(create_model("tiny", num_labels=4)).eval())


def _image(size=48, seed=3):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1, 3, 20])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_equals_captum_whatever_the_points_per_pass(tiny, steps, method):
    layer = tiny.get_submodule(tiny.gradcam_layer_name)
    x = _image()
    for module, target, baseline in ((tiny, 1, 0.0), (ProbabilityOutput(tiny), 3, 0.25)):
        reference = LayerConductance(module, layer).attribute(
            x, baselines=baseline, target=target, n_steps=7, method=method
        )
        ours = layer_conductance(module, layer, x, target, n_steps=7, baseline=baseline, steps=steps, method=method)
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-4)


def test_complete_the_layer_sums_to_the_output_difference(tiny):
    """With path points from the baseline to the image, the attributions add up to f(x) - f(baseline)."""
    layer = tiny.get_submodule(tiny.gradcam_layer_name)
    x = _image(64)
    attr = layer_conductance(tiny, layer, x, 2, n_steps=400, steps=64, method="riemann_trapezoid")
    with torch.no_grad():
        difference = (tiny(x) - tiny(torch.zeros_like(x)))[0, 2]
    torch.testing.assert_close(attr.sum(), difference, atol=2e-3 * max(1.0, float(difference.abs())), rtol=0)


def test_each_backward_pass_holds_at_most_steps_images_and_n_in_all(tiny):
    layer = tiny.get_submodule(tiny.gradcam_layer_name)
    seen: list[int] = []
    handle = tiny.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    try:
        layer_conductance(tiny, layer, _image(), 0, n_steps=10, steps=3)
    finally:
        handle.remove()
    assert seen == [3, 3, 3, 1, 1]  # 10 points with gradients in passes of <= 3, then the end point (forward only)


def footprint(activation_mib: float, parameter_mib: float = 100) -> Footprint:
    mib = 1024**2
    return Footprint(int(activation_mib * mib), int(activation_mib * mib / 10), int(parameter_mib * mib), "cpu")


def test_points_per_pass_shrink_with_the_footprint():
    budget = 8 * GIB
    steps = [conductance_steps(footprint(a), budget, n_steps=20) for a in (10, 50, 100, 200, 1400)]
    assert steps == sorted(steps, reverse=True) and steps[0] > steps[-1] == 1
    assert steps[0] == 20  # never more than the path has
    assert conductance_steps(footprint(100), budget, 20) == CPU_WORKING_SET // (100 * 1024**2)  # CPU cap
    gpu = Footprint(100 * 1024**2, 10 * 1024**2, 100 * 1024**2, "cuda")
    assert conductance_steps(gpu, 2 * GIB, 50) == int((2 * GIB - 300 * 1024**2) // (GRAD_FACTOR * 100 * 1024**2))
    assert conductance_steps(gpu, 1 * GIB, 50) < conductance_steps(gpu, 2 * GIB, 50)


def test_a_footprint_over_the_budget_is_refused_with_the_memory_it_needs():
    big = footprint(1400, parameter_mib=110)  # DenseNet161 at 512 px, roughly
    need = big.grad_bytes(1)
    assert need == 3 * big.parameter_bytes + GRAD_FACTOR * big.activation_bytes
    assert conductance_steps(big, 8 * GIB, 20) == 1
    with pytest.raises(MethodError, match=rf"needs about {need / GIB:.1f} GiB .* over the 2\.0 GiB memory budget"):
        conductance_steps(big, 2 * GIB, 20)


def test_the_method_refuses_before_any_pass(tiny):
    spec = get_method("layer_conductance")
    fp = measure(tiny, 48)
    calls: list[int] = []
    handle = tiny.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        with pytest.raises(MethodError, match="GiB for one image"):
            spec.run(Context(tiny, fp, fp.grad_bytes(1) - 1, layer_name=tiny.gradcam_layer_name), spec.parse(),
                     _image(), [0, 1])  # fmt: skip
    finally:
        handle.remove()
    assert calls == []
    result = spec.run(Context(tiny, fp, fp.grad_bytes(1), layer_name=tiny.gradcam_layer_name),
                      spec.parse({"n_steps": 4}), _image(), [0, 1])  # fmt: skip
    assert result.maps.shape == (2, 48, 48)


def test_a_stage_can_check_the_budget_before_loading_any_image():
    spec = get_method("layer_conductance")
    big = footprint(1400, parameter_mib=110)
    spec.check_budget(big, 8 * GIB, spec.parse())  # fits: no error
    with pytest.raises(MethodError, match=r"layer_conductance needs about 3\.7 GiB"):
        spec.check_budget(big, 3 * GIB, spec.parse())
    get_method("saliency").check_budget(big, 1 * GIB, get_method("saliency").parse())  # no check: never refuses
