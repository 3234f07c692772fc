"""Model preparation for hook-based attribution: cxrlens.attribution.prepare and the complete max-pool rule.

Every network here has randomised batch-norm statistics and affine parameters (:func:`randomise_batchnorm`):
a fresh network is positively homogeneous (f(0) = 0), so a black baseline would pass completeness whatever
DeepLIFT did (a pitfall we measured on these backbones). The tests assert that f(0) is clearly nonzero.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, GuidedBackprop, IntegratedGradients
from torch import Tensor, nn

from cxrlens.attribution import deeplift_rules
from cxrlens.attribution.deeplift_rules import (
    CompleteMaxPool2d,
    complete_maxpool2d_multipliers,
    complete_rules_registered,
    register_complete_rules,
)
from cxrlens.attribution.prepare import audit_model, check_prepared, is_prepared, prepare_model
from cxrlens.errors import MethodError
from cxrlens.models import create_model, get_spec, model_names

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
]

MODELS = model_names()
PAPER_MODELS = [name for name in MODELS if get_spec(name).paper]
SIZE = 96
# InceptionV3 at 96 px has 4x4 and 1x1 late feature maps; with randomised batch norms its logits reach 10^3 and
# its path from black to the image is so rough that integrated gradients would need thousands of steps
SIZES = {"inception_v3": 128}
NUM_LABELS = 3
DEEPLIFT_RTOL = 0.01
DEEPLIFT_ATOL = 1e-4


def randomise_batchnorm(model: nn.Module, seed: int = 0, size: int = SIZE, batch: int = 16) -> nn.Module:
    """Give every batch norm realistic running statistics and random affine parameters (in place, eval mode).

    Statistics come from one pass, batch norms in training mode, over images ``α·u`` (α, u uniform, so the
    straight path from black to an image is covered); then γ ~ U(0.5, 1.5), β ~ N(0, 0.3²). Running means
    and β are then nonzero, so f(0) != 0, and the logits are of order 1-10 (10³ for InceptionV3).
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms, "model has no batch norm to randomise"
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch gives its statistics exactly
        norm.train()
    alpha = torch.rand(batch, 1, 1, 1, generator=generator)
    with torch.no_grad():
        model(alpha * torch.rand(batch, 1, size, size, generator=generator))
        for norm in norms:
            norm.momentum = 0.1
            norm.weight.copy_(0.5 + torch.rand(norm.num_features, generator=generator))
            norm.bias.copy_(0.3 * torch.randn(norm.num_features, generator=generator))
    return model.eval()


def image(seed: int = 1, batch: int = 1, size: int = SIZE) -> Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _size(name: str) -> int:
    return SIZES.get(name, SIZE)


def _hooks(model: nn.Module) -> list[tuple[int, int, int, int]]:
    return [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
        for m in model.modules()
    ]


@functools.cache
def _models(name: str) -> tuple[nn.Module, nn.Module, list[str]]:
    """(original in eval mode, prepared copy, ways in which preparing changed the original: must be empty).

    The original is prepared with a mix of training flags and a forward hook of the caller's on it.
    """
    torch.manual_seed(0)
    original = randomise_batchnorm(create_model(name, num_labels=NUM_LABELS), size=_size(name))
    original.train()
    original.backbone.eval()
    handle = original.get_submodule(original.gradcam_layer_name).register_forward_hook(lambda m, i, o: None)
    state = {k: v.clone() for k, v in original.state_dict().items()}
    types = [(n, type(m)) for n, m in original.named_modules()]
    flags = [m.training for m in original.modules()]
    hooks = _hooks(original)
    try:
        prepared = prepare_model(original)
        after = original.state_dict()
        changes = [f"state {k}" for k in state if k not in after or not torch.equal(state[k], after[k])]
        changes += ["state keys"] if state.keys() != after.keys() else []
        changes += ["module types"] if [(n, type(m)) for n, m in original.named_modules()] != types else []
        changes += ["training flags"] if [m.training for m in original.modules()] != flags else []
        changes += ["hooks"] if _hooks(original) != hooks else []
        # the caller's hook is not carried into the copy
        changes += ["hook copied"] if any(any(h) for h in _hooks(prepared)) else []
        changes += ["copy's state keys"] if prepared.state_dict().keys() != after.keys() else []
    finally:
        handle.remove()
    return original.eval(), prepared, changes


@functools.cache
def _reference(name: str) -> tuple[int, float, float]:
    """(label with the largest |f(x) - f(0)|, that difference, f(0) of the label) on the prepared model."""
    prepared = _models(name)[1]
    x = image(size=_size(name))
    with torch.no_grad():
        fx, f0 = prepared(x)[0], prepared(torch.zeros_like(x))[0]
    target = int((fx - f0).abs().argmax())
    return target, float(fx[target] - f0[target]), float(f0[target])


def _assert_not_trivial(name: str) -> tuple[int, float]:
    target, delta, f0 = _reference(name)
    assert abs(f0) > 0.1, f"{name}: f(0) = {f0:.3g}, a zero baseline would pass completeness trivially"
    assert abs(delta) > 0.1, f"{name}: f(x) - f(0) = {delta:.3g} is too small to test completeness"
    return target, delta


def _deeplift_error(model: nn.Module, x: Tensor, target: int, delta: float) -> float:
    attributions = DeepLift(model).attribute(x, torch.zeros_like(x), target=target)
    return abs(float(attributions.detach().sum()) - delta)


# ------------------------------------------------------------------------------------------ logits


@pytest.mark.parametrize("name", MODELS)
def test_logits_unchanged_and_names_kept(name: str) -> None:
    original, prepared, _ = _models(name)
    x = image(seed=2, batch=2, size=_size(name))
    result = check_prepared(original, prepared, x)
    assert result["max_abs_diff"] <= 1e-5
    assert is_prepared(prepared) and not is_prepared(original)
    assert not prepared.training and not any(m.training for m in prepared.modules())
    assert audit_model(prepared, x[:1]).clean
    # the wrapper's attributes and the layers Grad-CAM / activation profiles look up by name survive
    assert prepared.label_names == original.label_names and prepared.spec == original.spec
    layer_names = list(dict.fromkeys([prepared.gradcam_layer_name, *prepared.nap_layer_names()]))
    seen: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}  # (model, layer) -> (output, copy taken at once)

    def keep(model: str, layer: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
            seen[model, layer] = (output, output.clone())

        return hook

    handles = []
    try:
        for label, model in (("original", original), ("prepared", prepared)):
            for layer in layer_names:
                handles.append(model.get_submodule(layer).register_forward_hook(keep(label, layer)))
        with torch.no_grad():
            original(x)
            prepared(x)
    finally:
        for handle in handles:
            handle.remove()
    for layer in layer_names:
        torch.testing.assert_close(seen["prepared", layer][1], seen["original", layer][1], rtol=0, atol=0)
        # nothing in the prepared copy overwrites a layer's output in place after a hook has seen it (in the
        # original, the in-place ReLUs after DenseNet's norm5 and the tiny model's bn1 do)
        assert torch.equal(*seen["prepared", layer]), layer


def test_check_prepared_raises_on_changed_logits() -> None:
    original, prepared, _ = _models("tiny")
    changed = copy.deepcopy(prepared)
    with torch.no_grad():
        changed.backbone.fc.bias += 0.1
    with pytest.raises(MethodError, match="differ from the original"):
        check_prepared(original, changed, image())


# ---------------------------------------------------------------------------------------- DeepLIFT


@pytest.mark.parametrize("name", MODELS)
def test_deeplift_completeness(name: str) -> None:
    prepared = _models(name)[1]
    target, delta = _assert_not_trivial(name)
    error = _deeplift_error(prepared, image(size=_size(name)), target, delta)
    assert error <= DEEPLIFT_RTOL * abs(delta) + DEEPLIFT_ATOL, f"{name}: error {error:.3g} of Δf = {delta:.3g}"


def test_complete_maxpool_rule_matters_on_inception_resnet_v2() -> None:
    """Captum's stock max-pool rule (hooks wired correctly) is far off: non-constant baseline windows behind
    padded convolutions, and overlapping 3x3/2 windows whose shares max_unpool overwrites."""
    original, prepared, _ = _models("inception_resnet_v2")
    target, delta = _assert_not_trivial("inception_resnet_v2")
    stock = prepare_model(original, complete_maxpool=False)
    assert not any(isinstance(m, CompleteMaxPool2d) for m in stock.modules())
    assert any(isinstance(m, CompleteMaxPool2d) for m in prepared.modules())
    x = image(size=_size("inception_resnet_v2"))
    complete_error = _deeplift_error(prepared, x, target, delta) / abs(delta)
    stock_error = _deeplift_error(stock, x, target, delta) / abs(delta)
    assert complete_error <= DEEPLIFT_RTOL
    assert stock_error > 10 * max(complete_error, 1e-3), (stock_error, complete_error)


class PaddedPoolNet(nn.Module):
    """Max-pools after padded convolutions (the baseline's activations vary at the borders), one of them
    reading a tensor that a convolution branch reads too (as in Inception blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.branch = nn.Conv2d(4, 4, 3, stride=2)
        self.pool2 = nn.MaxPool2d(3, stride=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.pool1(x)
        x = torch.cat([self.branch(x), self.pool2(x)], dim=1)
        return self.fc(x.mean(dim=(2, 3)))


def test_complete_maxpool_rule_matters_on_small_net() -> None:
    torch.manual_seed(3)
    net = PaddedPoolNet().eval()
    x = image(size=24)
    with torch.no_grad():
        f0 = float(net(torch.zeros_like(x))[0, 0])
        delta = float(net(x)[0, 0]) - f0
    assert abs(f0) > 1e-3 and abs(delta) > 1e-2
    errors = {
        flag: _deeplift_error(prepare_model(net, x, complete_maxpool=flag), x, 0, delta) for flag in (True, False)
    }
    assert errors[True] <= DEEPLIFT_RTOL * abs(delta) + DEEPLIFT_ATOL
    assert errors[False] > 10 * errors[True] and errors[False] > 0.02 * abs(delta), errors


def test_complete_maxpool_rule_known_answer() -> None:
    """Windows of width 2, stride 1, padding 1 over x = [1, 4, 2] against x' = [0, 0, 3] (Δx = [1, 4, -1]).

    Outputs y = [1, 4, 4, 2], y' = [0, 0, 3, 3]; with upstream multipliers g = [1, 2, 3, 4] each window w gives
    its inputs g_w·Δy_w·|Δx_i|/Σ|Δx|:  w0 {x0}: 1·1 -> x0 1;  w1 {x0, x1}: 2·4 -> x0 1.6, x1 6.4;
    w2 {x1, x2}: 3·1 -> x1 2.4, x2 0.6;  w3 {x2}: 4·(-1) -> x2 -4.  Contributions [2.6, 8.8, -3.4] sum to 8.
    """
    pool = CompleteMaxPool2d((1, 2), stride=1, padding=(0, 1))
    x = torch.tensor([[[[1.0, 4.0, 2.0]]]])
    x_ref = torch.tensor([[[[0.0, 0.0, 3.0]]]])
    grad = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    multipliers, _ = complete_maxpool2d_multipliers(pool, x, x_ref, grad)
    expected = torch.tensor([2.6, 8.8, -3.4])
    torch.testing.assert_close((multipliers * (x - x_ref)).flatten(), expected)
    torch.testing.assert_close(multipliers.flatten(), expected / torch.tensor([1.0, 4.0, -1.0]))

    # the same through captum's DeepLift: pool -> linear layer with weights g
    register_complete_rules()
    linear = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(grad.flatten()[None])
    net = nn.Sequential(pool, nn.Flatten(), linear)
    attributions = DeepLift(net).attribute(x, x_ref, target=0)
    torch.testing.assert_close(attributions.flatten(), expected)
    # captum's stock rule writes overlapping windows' shares with max_unpool (assigns, not adds): not complete
    stock = nn.Sequential(nn.MaxPool2d((1, 2), stride=1, padding=(0, 1)), nn.Flatten(), linear)
    assert abs(float(DeepLift(stock).attribute(x, x_ref, target=0).detach().sum()) - 8.0) > 1.0


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil_mode"), [(3, 2, 0, False), (3, 2, 1, True), (2, 2, 0, False)]
)
def test_complete_maxpool_rule_sums_to_delta(kernel: int, stride: int, padding: int, ceil_mode: bool) -> None:
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    generator = torch.Generator().manual_seed(0)
    x, x_ref = torch.randn(2, 2, 2, 9, 9, generator=generator)
    grad = torch.randn(pool(x).shape, generator=generator)
    multipliers, _ = complete_maxpool2d_multipliers(pool, x, x_ref, grad)
    torch.testing.assert_close(
        (multipliers * (x - x_ref)).sum(dim=(1, 2, 3)), (grad * (pool(x) - pool(x_ref))).sum(dim=(1, 2, 3))
    )


def test_complete_maxpool_rule_is_complete_but_not_the_unique_complete_rule() -> None:
    """The known-answer example again: splitting each window's g_w·Δy_w over its inputs in proportion to Δx_i²
    instead of |Δx_i| is complete too (the shares still add up to 8) yet gives other contributions. Hence the
    rule is named *a complete* rule, not *the exact* one.

    w0 {x0}: 1 -> x0 1;  w1 {x0, x1}: 8 split 1:16;  w2 {x1, x2}: 3 split 16:1;  w3 {x2}: -4 -> x2 -4.
    """
    pool = CompleteMaxPool2d((1, 2), stride=1, padding=(0, 1))
    x = torch.tensor([[[[1.0, 4.0, 2.0]]]])
    x_ref = torch.tensor([[[[0.0, 0.0, 3.0]]]])
    grad = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    multipliers, _ = complete_maxpool2d_multipliers(pool, x, x_ref, grad)
    ours = (multipliers * (x - x_ref)).flatten()
    squared = torch.tensor([1 + 8 / 17, 8 * 16 / 17 + 3 * 16 / 17, 3 / 17 - 4])
    total = float((grad * (pool(x) - pool(x_ref))).sum())
    assert total == pytest.approx(8.0)
    assert float(ours.sum()) == pytest.approx(total) and float(squared.sum()) == pytest.approx(total)
    assert (ours - squared).abs().max() > 0.5


def test_the_max_pool_rule_is_named_complete_not_exact() -> None:
    assert "complete_maxpool" in inspect.signature(prepare_model).parameters
    assert "exact_maxpool" not in inspect.signature(prepare_model).parameters
    assert deeplift_rules.__all__ and not [name for name in deeplift_rules.__all__ if "exact" in name.lower()]


class SharedInputPoolNet(nn.Module):
    """A max-pool reading the output of a padded convolution that a convolution branch reads too."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, stride=2)
        self.pool = pool
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.act(self.conv1(x)))
        return self.fc(torch.cat([self.branch(h), self.pool(h)], dim=1).mean(dim=(2, 3)))


def test_complete_maxpool_rule_keeps_other_branches_of_a_shared_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Captum hooks the pool's *input tensor*; the branch's gradient arrives there too and must survive.

    No preparation here (it would give the pool a private copy of its input): the rule itself must cope.
    """
    from captum.attr._core import deep_lift

    register_complete_rules()
    torch.manual_seed(5)
    net = SharedInputPoolNet(CompleteMaxPool2d(3, stride=2)).eval()
    x = image(size=24)
    assert audit_model(net, x).shared_inputs == [("", "pool")]
    with torch.no_grad():
        delta = float(net(x)[0, 0] - net(torch.zeros_like(x))[0, 0])
    assert abs(delta) > 1e-2
    assert _deeplift_error(net, x, 0, delta) <= DEEPLIFT_RTOL * abs(delta) + DEEPLIFT_ATOL

    def without_correction(module, inputs, outputs, grad_input, grad_output, eps=1e-10):  # type: ignore[no-untyped-def]
        mult, mult_ref = complete_maxpool2d_multipliers(module, *inputs.chunk(2), *grad_output.chunk(2))
        return torch.cat([mult, mult_ref])

    monkeypatch.setitem(deep_lift.SUPPORTED_NON_LINEAR, CompleteMaxPool2d, without_correction)
    assert _deeplift_error(net, x, 0, delta) > 0.05 * abs(delta)  # the branch's gradient was overwritten


def test_register_complete_rules_is_idempotent() -> None:
    from captum.attr._core import deep_lift

    register_complete_rules()
    register_complete_rules()
    assert complete_rules_registered()
    assert deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] is deep_lift.maxpool2d  # captum's own rule untouched


# ------------------------------------------------------------------------------- integrated gradients


# Along the straight path a ReLU network is piecewise linear, so the integrand of integrated gradients is
# piecewise constant and any quadrature errs by O(1/n_steps) times its jumps; on these randomised networks the
# error does not even fall monotonically. Measured relative errors (riemann_trapezoid; 96 px, InceptionV3 128 px):
#   n_steps     resnet18  resnet34  inception_v3  inception_resnet_v2  densenet161
#    64          3.2 %    14.4 %     9.2 %         2.5 %                5.4 %
#   128          1.8 %     0.6 %     9.4 %         0.02 %               0.8 %
#   256          0.8 %     3.6 %     0.06 %        1.6 %                1.9 %
# (captum's default gausslegendre at 256: 0.1 %, 3.5 %, 0.9 %, 3.0 %, 0.6 %). Hence 256 steps and 5 %.
IG_STEPS = 256
IG_RTOL = 0.05
_SLOW_IG = {"inception_v3", "inception_resnet_v2", "densenet161"}  # 20-75 s each on 2 cores


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_IG else n for n in PAPER_MODELS]
)
def test_integrated_gradients_completeness(name: str) -> None:
    prepared = _models(name)[1]
    target, delta = _assert_not_trivial(name)
    x = image(size=_size(name))
    attributions = IntegratedGradients(prepared).attribute(
        x, torch.zeros_like(x), target=target, n_steps=IG_STEPS, method="riemann_trapezoid", internal_batch_size=64
    )
    error = abs(float(attributions.detach().sum()) - delta)
    assert error <= IG_RTOL * abs(delta), f"{name}: error {error:.3g} of Δf = {delta:.3g}"


# ------------------------------------------------------------------------------------ caller's model


@pytest.mark.parametrize("name", MODELS)
def test_callers_model_unchanged(name: str) -> None:
    """State, module types, training flags (a mix) and hooks of the caller's model are as before (see _models)."""
    assert _models(name)[2] == []


def test_deeplift_fails_on_unprepared_resnet18_and_works_after() -> None:
    """Why we prepare: torchvision's BasicBlock calls one in-place ReLU module twice."""
    original, prepared, _ = _models("resnet18")
    x = image()
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLift(original).attribute(x, torch.zeros_like(x), target=0)
    attributions = DeepLift(prepared).attribute(x, torch.zeros_like(x), target=0)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()


# ------------------------------------------------------------------------------------- guided backprop


@pytest.mark.parametrize("name", MODELS)
def test_guided_backprop_runs(name: str) -> None:
    prepared = _models(name)[1]
    x = image(size=_size(name))
    attributions = GuidedBackprop(prepared).attribute(x, target=0)
    assert attributions.shape == x.shape
    assert torch.isfinite(attributions).all() and attributions.abs().sum() > 0


# ------------------------------------------------------------------------------------ audit / rewrite


def test_audit_finds_the_tiny_models_problems() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", num_labels=2).eval()
    audit = audit_model(model)
    assert audit.reused == {"backbone.relu": 2}
    assert ("backbone", "relu") in audit.functional
    assert not audit.clean and any("backbone.relu" in line for line in audit.problems())
    prepared = prepare_model(model)
    assert audit_model(prepared).clean
    names = dict(prepared.backbone.named_children())
    assert {"relu", "relu_call2", "relu_fn"} <= names.keys()
    assert all(not m.inplace for m in prepared.modules() if isinstance(m, nn.ReLU))
    assert isinstance(prepared.backbone.pool, CompleteMaxPool2d)


class ReusedInSequential(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        act = nn.ReLU(inplace=True)
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), act, nn.Conv2d(3, 3, 3, padding=1), act)
        self.body.add_module("pool", nn.MaxPool2d(2))
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def test_sequential_owner_stays_an_indexable_sequential() -> None:
    torch.manual_seed(0)
    net = ReusedInSequential().eval()
    x = image(size=16)
    prepared = prepare_model(net, x)
    body = prepared.body
    assert isinstance(body, nn.Sequential) and body[1] is not body[3]
    assert [name for name, _ in body.named_children()] == ["0", "1", "2", "3", "pool"]
    assert isinstance(body.pool, CompleteMaxPool2d)
    assert audit_model(prepared, x).clean
    check_prepared(net, prepared, x)
    # the prepared copy can be copied and prepared again (nothing left to do)
    again = prepare_model(copy.deepcopy(prepared), x)
    assert type(again.body) is type(body) and check_prepared(net, again, x)["max_abs_diff"] == 0.0


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = F.relu(y)
        return y.mean(dim=(2, 3))


def test_untraceable_owner_raises_method_error_naming_it() -> None:
    net = nn.Sequential()
    net.add_module("inner", Untraceable())
    with torch.no_grad():
        net.inner.conv.bias.fill_(1.0)
    with pytest.raises(MethodError, match=r"inner \(Untraceable\).*functional"):
        prepare_model(net, torch.ones(1, 1, 8, 8))


def test_example_needed_for_foreign_models() -> None:
    with pytest.raises(MethodError, match="pass an example"):
        prepare_model(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()))
