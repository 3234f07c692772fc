"""A complete DeepLIFT rule for 2-D max-pooling, plugged into captum's :class:`~captum.attr.DeepLift`.

Why
    Captum's max-pool rule routes each window's output difference ``Δy = max(x) - max(x')`` to the input
    that is the arg-max *for the input*, divided by that input's own ``Δx``. That is complete only where the
    baseline ``x'`` is constant over the window. Behind a padded convolution the baseline's activations
    differ at the borders, and InceptionResNetV2 then misses completeness by 2-23 % (measured with captum
    0.9). Captum also writes the routed values back with ``max_unpool2d``, which *assigns* rather than adds,
    so two overlapping windows sharing an arg-max lose one contribution.

The rule: each window's output change split over its inputs in proportion to their change. For one sample,
channel and output window ``w`` (``i`` runs over the window's real inputs; padded positions are not inputs
and get nothing)::

    Δx_i = x_i - x'_i        Δy_w = max_i x_i - max_i x'_i        S_w = Σ_i |Δx_i|
    contribution of x_i to y_w   c_iw = Δy_w · |Δx_i| / S_w
    multiplier                   m_iw = c_iw / Δx_i = Δy_w · sign(Δx_i) / S_w

so ``Σ_i m_iw · Δx_i = Δy_w`` for any baseline: the rule is *complete* (DeepLIFT's summation-to-delta,
Shrikumar et al., ICML 2017). It is not the unique complete rule: any split of ``Δy_w`` over the window's
inputs whose shares add up to ``Δy_w`` is complete as well (captum's arg-max routing is, where the baseline
is constant over the window; so is a split in proportion to ``Δx_i²``). This one is chosen because it is
defined for any baseline, treats inputs with the same change alike and needs no epsilon: because
``|Δy_w| <= max_i |Δx_i| <= S_w`` the ratio ``Δy_w / S_w`` lies in [-1, 1]. A window whose inputs did not
change (``S_w = 0``, hence ``Δy_w = 0``) passes the plain gradient (to its arg-max), as DeepLIFT's rescale
rule does for ``Δx = 0``; it contributes nothing either way. Overlapping windows add up: the multiplier
passed back to ``x_i`` is ``Σ_w g_w · m_iw`` with ``g_w`` the multiplier arriving at ``y_w``.

The module :class:`CompleteMaxPool2d` is an :class:`torch.nn.MaxPool2d` with the same forward; only
captum's DeepLift (and DeepLiftShap, LayerDeepLift, which share its table) treats it differently, because
captum looks rules up by *exact* type in ``captum.attr._core.deep_lift.SUPPORTED_NON_LINEAR``.
:func:`register_complete_rules` adds the entry (idempotent; called by ``prepare_model``, never at import).
Guided backprop and gradient methods see an ordinary max-pool.

Shared inputs: captum hooks the *input tensor* of a non-linear module, so when that tensor also feeds
another branch (Inception blocks pool the same tensor their convolutions read), the hook receives the sum of
all branches' gradients and captum's rules replace all of it. This rule removes only its own share
(the plain max-pool gradient) and adds the DeepLIFT multipliers, so it is correct for shared inputs too.
"""

from __future__ import annotations

from typing import Any

import captum
import torch
import torch.nn.functional as F
from captum.attr._core import deep_lift, lrp
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from cxrlens.errors import MethodError

__all__ = [
    "CompleteMaxPool2d",
    "complete_maxpool2d_multipliers",
    "complete_maxpool2d_rule",
    "complete_rules_registered",
    "register_complete_rules",
]


class CompleteMaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (same forward) that captum's DeepLift gives a complete rule.

    See the module docstring for the rule; :func:`register_complete_rules` must have run (``prepare_model``
    does it) for DeepLift to use it.
    """

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> CompleteMaxPool2d:
        """The counterpart of ``pool`` with the complete rule (same hyper-parameters and training flag)."""
        if pool.return_indices:
            raise MethodError(f"{pool} returns indices; DeepLIFT cannot attribute through it")
        new = cls(
            kernel_size=pool.kernel_size,
            stride=pool.stride,
            padding=pool.padding,
            dilation=pool.dilation,
            return_indices=False,
            ceil_mode=pool.ceil_mode,
        )
        new.train(pool.training)
        return new


def _argmax_backward(pool: nn.MaxPool2d, inputs: Tensor, grad: Tensor) -> Tensor:
    """The ordinary max-pool gradient: ``grad`` of each window added onto its arg-max input."""
    _, indices = F.max_pool2d(
        inputs, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True
    )
    out = torch.zeros_like(inputs).flatten(2)
    out.scatter_add_(2, indices.flatten(2), grad.flatten(2))
    return out.view_as(inputs)


def complete_maxpool2d_multipliers(
    pool: nn.MaxPool2d, x: Tensor, x_ref: Tensor, grad_out: Tensor, grad_out_ref: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """DeepLIFT multipliers of ``pool`` for inputs ``x`` against ``x_ref`` (both ``[B, C, H, W]``).

    ``grad_out`` is the multiplier arriving at the pool's output for the input half, ``grad_out_ref`` (if
    given) for the reference half (captum runs inputs and references as one batch). Returns the
    multipliers to pass back to the pool's input for each half; ``multiplier * (x - x_ref)`` summed over
    the inputs equals ``Σ_w grad_out_w · (y_w - y'_w)``.
    """
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    padding = _pair(pool.padding)
    dilation = _pair(pool.dilation)
    with torch.no_grad():
        y = F.max_pool2d(x, kernel, stride, padding, dilation, pool.ceil_mode)
        y_ref = F.max_pool2d(x_ref, kernel, stride, padding, dilation, pool.ceil_mode)
        batch, channels, height, width = x.shape
        out_h, out_w = y.shape[-2:]
        # extra bottom/right padding so that unfold sees every window (ceil_mode adds partial windows)
        extra_h = max(0, (out_h - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1 - (height + 2 * padding[0]))
        extra_w = max(0, (out_w - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1 - (width + 2 * padding[1]))
        pads = (padding[1], padding[1] + extra_w, padding[0], padding[0] + extra_h)
        padded_size = (height + 2 * padding[0] + extra_h, width + 2 * padding[1] + extra_w)

        delta_in = x - x_ref
        delta_out = (y - y_ref).flatten(2)  # [B, C, L]
        kk = kernel[0] * kernel[1]
        windows = F.unfold(F.pad(delta_in.abs(), pads), kernel, dilation=dilation, stride=stride)
        windows = windows.view(batch, channels, kk, -1)
        if windows.shape[-1] != out_h * out_w:
            raise MethodError(f"{pool}: {windows.shape[-1]} windows for an output of {out_h}x{out_w}")
        total = windows.sum(dim=2)  # S_w, zero-padded positions add nothing
        changed = total > 0
        ratio = torch.where(changed, delta_out / torch.where(changed, total, torch.ones_like(total)), 0.0)
        sign = delta_in.sign()
        unchanged = (~changed).to(x.dtype).view_as(y)

        def one_half(grad: Tensor, inputs: Tensor) -> Tensor:
            per_window = (grad.flatten(2) * ratio).unsqueeze(2).expand(-1, -1, kk, -1)
            summed = F.fold(
                per_window.reshape(batch, channels * kk, -1),
                padded_size,
                kernel,
                dilation=dilation,
                stride=stride,
            )
            summed = summed[..., padding[0] : padding[0] + height, padding[1] : padding[1] + width]
            return sign * summed + _argmax_backward(pool, inputs, grad * unchanged)

        mult = one_half(grad_out, x)
        mult_ref = one_half(grad_out_ref, x_ref) if grad_out_ref is not None else None
    return mult, mult_ref


def complete_maxpool2d_rule(
    module: nn.Module,
    inputs: Tensor,
    outputs: Tensor,
    grad_input: Tensor | tuple[Tensor, ...],
    grad_output: Tensor | tuple[Tensor, ...],
    eps: float = 1e-10,
) -> Tensor:
    """Captum DeepLift rule (signature of ``captum.attr._core.deep_lift.maxpool2d``) for CompleteMaxPool2d.

    ``inputs``/``outputs`` hold the input half and the reference half stacked along the batch; ``grad_input``
    is the full gradient of the pool's input tensor (which may include other branches that read the same
    tensor), ``grad_output`` the multipliers at the pool's output. ``eps`` is unused (the rule needs none).
    """
    del outputs, eps  # recomputed from the inputs; the ratio Δy/S is bounded, no epsilon needed
    if not isinstance(module, nn.MaxPool2d):
        raise MethodError(f"complete max-pool rule called on {type(module).__name__}")
    grad_in = grad_input[0] if isinstance(grad_input, tuple) else grad_input
    grad_out = grad_output[0] if isinstance(grad_output, tuple) else grad_output
    if grad_in.shape != inputs.shape:
        raise MethodError(
            f"{module}: gradient of shape {tuple(grad_in.shape)} for an input of {tuple(inputs.shape)}; "
            "attribute to the input of the layer after the max-pool instead"
        )
    with torch.no_grad():
        x, x_ref = inputs.chunk(2)
        g, g_ref = grad_out.chunk(2)
        mult, mult_ref = complete_maxpool2d_multipliers(module, x, x_ref, g, g_ref)
        assert mult_ref is not None
        own_share = _argmax_backward(module, inputs, grad_out)
        return grad_in - own_share + torch.cat([mult, mult_ref])


def _captum_tables() -> tuple[dict[type[nn.Module], Any], dict[type[nn.Module], Any] | None]:
    table = getattr(deep_lift, "SUPPORTED_NON_LINEAR", None)
    if not isinstance(table, dict):
        raise MethodError(
            f"captum {captum.__version__} has no rule table captum.attr._core.deep_lift.SUPPORTED_NON_LINEAR; "
            "the complete max-pool rule cannot be registered (use prepare_model(..., complete_maxpool=False) or a "
            "captum version with that table, e.g. 0.8-0.9)"
        )
    lrp_table = getattr(lrp, "SUPPORTED_LAYERS_WITH_RULES", None)
    return table, lrp_table if isinstance(lrp_table, dict) else None


def register_complete_rules() -> None:
    """Give :class:`CompleteMaxPool2d` the complete rule in captum's DeepLift table (idempotent).

    LRP keys its rules by exact type too; the subclass gets the rule LRP uses for ``nn.MaxPool2d`` so LRP
    keeps working on prepared models.
    """
    table, lrp_table = _captum_tables()
    table[CompleteMaxPool2d] = complete_maxpool2d_rule
    if lrp_table is not None and nn.MaxPool2d in lrp_table:
        lrp_table.setdefault(CompleteMaxPool2d, lrp_table[nn.MaxPool2d])


def complete_rules_registered() -> bool:
    """Whether captum's DeepLift currently uses the complete rule for :class:`CompleteMaxPool2d`."""
    table, _ = _captum_tables()
    return table.get(CompleteMaxPool2d) is complete_maxpool2d_rule
