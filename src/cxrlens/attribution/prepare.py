"""Make a classifier safe for hook-based attribution (captum DeepLift, guided backprop, Grad-CAM).

Captum's DeepLift and guided backprop override gradients with hooks on *modules* (``nn.ReLU``,
``nn.MaxPool2d``, ...): a hook on the module's input tensor replaces its gradient by the rule's multipliers,
computed from the gradient a hook on the output tensor recorded. They go wrong, loudly or silently, on:

* a ReLU module called twice (torchvision ResNet blocks): DeepLift raises;
* a functional ``F.relu`` / ``F.max_pool2d`` (torchvision InceptionV3's ``BasicConv2d``, ``InceptionB/D``,
  DenseNet's root forward): no hook, so DeepLIFT treats it as linear (~50 % completeness error) and guided
  backprop does not guide it;
* in-place operations (``out += identity``, ``F.relu(x, inplace=True)``): they break backward hooks, and a
  forward hook's captured activation is overwritten afterwards (DenseNet's ``norm5`` output);
* a non-linear module whose input tensor another operation also reads (Inception blocks pool the tensor their
  convolutions read): the input hook overwrites the gradient of *all* readers with its rule;
* a non-linear module reading the very output tensor of another (ReLU -> max-pool in every stem): both hooks
  sit on one tensor, the producer's output hook runs first and records the gradient *before* the consumer's
  rule rewrites it, so the consumer's rule is silently discarded (captum then treats such a max-pool by
  its plain gradient; with the stock rule we measured 2-23 % completeness error on InceptionResNetV2, whose
  max-pools follow padded convolutions, with captum 0.9);
* max-pooling itself, whose captum rule is complete only where the baseline is constant over each window and
  loses shares of overlapping windows (see :mod:`cxrlens.attribution.deeplift_rules`).

:func:`prepare_model` returns a deep copy, in eval mode, where every ReLU / max-pool *call* is its own
non-in-place module, reading a private tensor (a ``clone``) wherever its input is shared or is another
non-linear module's output, and every ``nn.MaxPool2d`` is a
:class:`~cxrlens.attribution.deeplift_rules.CompleteMaxPool2d` with a complete DeepLIFT rule (complete: the
contributions sum to the output change; not the unique complete rule). Logits are unchanged
(:func:`check_prepared` verifies it). The caller's model is never modified.

How: an instrumented forward pass (:func:`~cxrlens.attribution.audit.audit_model`) finds the modules whose own
forward makes such calls (their *owners*); :mod:`cxrlens.attribution.rewrite` replaces each owner by an
``torch.fx`` rewrite of it, qualified names kept. Audit and rewrite repeat until the audit finds nothing, or
:class:`~cxrlens.errors.MethodError` names the module and the reason.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from cxrlens.attribution.audit import ModelAudit, audit_model, default_example
from cxrlens.attribution.deeplift_rules import register_complete_rules
from cxrlens.attribution.rewrite import rewrite_owners, use_complete_maxpools
from cxrlens.errors import MethodError

__all__ = [
    "ModelAudit",
    "audit_model",
    "check_prepared",
    "default_example",
    "is_prepared",
    "prepare_model",
]

_PREPARED_FLAG = "_cxrlens_prepared_for_attribution"
_MAX_ROUNDS = 3


def _clear_hooks(model: nn.Module) -> None:
    """Remove forward/backward hooks a deep copy inherited from the caller's model."""
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            hooks = getattr(module, attr, None)
            if hooks is not None:
                hooks.clear()
        module._is_full_backward_hook = None


def prepare_model(model: nn.Module, example: Tensor | None = None, *, complete_maxpool: bool = True) -> nn.Module:
    """A deep copy of ``model``, in eval mode, ready for captum's DeepLift, guided backprop and Grad-CAM.

    Every ReLU / max-pool call becomes its own non-in-place module with a private input (see the module
    docstring); every ``nn.MaxPool2d`` becomes :class:`~cxrlens.attribution.deeplift_rules.CompleteMaxPool2d`
    (a complete DeepLIFT max-pool rule, registered in captum's table here: the contributions sum to the output
    change, though it is not the unique complete rule) unless ``complete_maxpool=False``, which keeps captum's
    stock rule. Qualified names of existing modules are kept, and so are the attributes of a
    :class:`~cxrlens.models.CxrClassifier` wrapper.

    ``example`` is one small input used to observe the forward pass (only its structure matters);
    cxrlens classifiers get a default. Hooks the caller had registered are not copied; the copy's parameters
    do not require gradients (attribution needs gradients with respect to the input only). Rewritten modules
    are ``torch.fx`` graphs traced in eval mode: keep the copy in eval mode (auxiliary heads are not traced). Raises
    :class:`MethodError` if the result still has a problem (naming the module) or its logits differ.
    """
    if complete_maxpool:
        register_complete_rules()
    if example is None:
        example = default_example(model)
    try:
        prepared = copy.deepcopy(model)
    except (TypeError, RuntimeError, copy.Error) as err:
        raise MethodError(f"cannot copy {type(model).__name__} to prepare it for attribution: {err}") from err
    _clear_hooks(prepared)
    prepared.eval()
    for param in prepared.parameters():
        param.requires_grad_(False)  # attribution needs input gradients only; saves time and memory
    for module in prepared.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False  # type: ignore[assignment]

    with torch.no_grad():
        expected = prepared(example)  # reference logits from the untouched copy: the caller's model never runs
    # rewriting can expose new work (a functional relu turned module now feeds a max-pool directly), so
    # audit and rewrite until clean; two rounds suffice for every registered backbone
    for _round in range(_MAX_ROUNDS):
        audit = audit_model(prepared, example)
        if audit.clean:
            break
        prepared = rewrite_owners(prepared, audit, complete_maxpool)
    else:
        audit = audit_model(prepared, example)
    if complete_maxpool:
        use_complete_maxpools(prepared)
    prepared.eval()
    if not audit.clean:
        raise MethodError(
            f"model preparation for attribution left problems after {_MAX_ROUNDS} rounds of rewriting: "
            + "; ".join(audit.problems())
        )
    with torch.no_grad():
        _compare_logits(expected, prepared(example))
    object.__setattr__(prepared, _PREPARED_FLAG, True)
    return prepared


def is_prepared(model: nn.Module) -> bool:
    """Whether ``model`` came out of :func:`prepare_model`."""
    return bool(getattr(model, _PREPARED_FLAG, False))


# ------------------------------------------------------------------------------------------- check


def check_prepared(original: nn.Module, prepared: nn.Module, x: Tensor, *, atol: float = 1e-5) -> dict[str, float]:
    """Compare logits of ``original`` (evaluated in eval mode, flag restored) and ``prepared`` on ``x``.

    Returns ``max_abs_diff``, ``logit_scale`` (max |logit| of the original), ``tolerance`` and
    ``max_rel_diff``. Raises :class:`MethodError` if ``max_abs_diff > atol * max(1, logit_scale)``: the
    rewrite only moves the same float operations into modules, so differences should be zero; scaling by the
    logit magnitude for large logits only allows for float32 rounding (relative precision ~1e-7) should a
    backend order a reduction differently.
    """
    flags = {id(m): m.training for m in original.modules()}
    try:
        original.eval()
        with torch.no_grad():
            expected = original(x)
            actual = prepared(x)
    finally:
        for module in original.modules():
            module.training = flags[id(module)]
    return _compare_logits(expected, actual, atol=atol)


def _compare_logits(expected: object, actual: object, atol: float = 1e-5) -> dict[str, float]:
    if not isinstance(expected, Tensor) or not isinstance(actual, Tensor) or expected.shape != actual.shape:
        raise MethodError(
            f"prepared model returns {_describe(actual)}, the original {_describe(expected)}; expected equal tensors"
        )
    diff = float((expected - actual).abs().max()) if expected.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    tolerance = atol * max(1.0, scale)
    result = {
        "max_abs_diff": diff,
        "logit_scale": scale,
        "tolerance": tolerance,
        "max_rel_diff": diff / scale if scale > 0 else diff,
    }
    if not diff <= tolerance:  # also catches NaN
        raise MethodError(
            f"prepared model's logits differ from the original by {diff:.3g} (tolerance {tolerance:.3g}); "
            "the rewrite for attribution changed the computation"
        )
    return result


def _describe(value: object) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
