"""A model's memory footprint at an input size, and the batch sizes a memory budget allows (one measured
forward pass; used by every inference and attribution path).

The forward pass (no autograd, batch 1) sums the bytes of every leaf module's output: what autograd
keeps for a backward pass per image, roughly. Gradient methods need about ``GRAD_FACTOR`` times that
per image in a batch (saved activations, their gradients, temporaries); perturbation methods run
without autograd and need a few times the largest single activation per image.

On a CPU, throughput peaks at small batches (measured at 512 px on 2 cores: ResNet18 backward 2.5
images/s at batch 1-2 and 1.4 at batch 16; DenseNet161 0.47 at batch 1 and 0.17 at batch 16): once
a batch's activations outgrow the caches every layer streams from main memory. So on a CPU a batch
also stays within ``CPU_WORKING_SET`` bytes of activations; on a GPU the memory budget alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cxrlens.models.registry import model_device

GIB = 1024**3
GRAD_FACTOR = 2.5
NO_GRAD_FACTOR = 4.0
MAX_BATCH = 64
CPU_WORKING_SET = 512 * 1024**2


@dataclass(frozen=True)
class Footprint:
    """Per-image activation bytes of a model at one input size."""

    activation_bytes: int  # sum over leaf-module outputs
    largest_bytes: int  # the largest single leaf-module output
    parameter_bytes: int
    device_type: str = "cpu"  # where the model ran: "cpu", "cuda", ...

    @property
    def max_batch(self) -> int:
        if self.device_type != "cpu":
            return MAX_BATCH
        return int(max(1, min(MAX_BATCH, CPU_WORKING_SET // max(1, self.activation_bytes))))

    def grad_bytes(self, images: int = 1) -> int:
        """Bytes a backward pass of ``images`` images needs: weights, their gradients, a prepared copy, and
        ``GRAD_FACTOR`` times the activations of each image."""
        return int(3 * self.parameter_bytes + images * GRAD_FACTOR * self.activation_bytes)

    def grad_batch(self, budget_bytes: float) -> int:
        """Images per backward pass that fit in ``budget_bytes`` (at least 1: whether one image fits at all is
        :meth:`grad_bytes` ``(1) <= budget_bytes``, which methods that must not exceed the budget check)."""
        free = budget_bytes - 3 * self.parameter_bytes  # weights, their gradients, a prepared copy
        return int(max(1, min(self.max_batch, free // max(1.0, GRAD_FACTOR * self.activation_bytes))))

    def no_grad_batch(self, budget_bytes: float) -> int:
        """Images per forward-only pass that fit in ``budget_bytes`` (at least 1)."""
        free = budget_bytes - 2 * self.parameter_bytes
        return int(max(1, min(self.max_batch, free // max(1.0, NO_GRAD_FACTOR * self.largest_bytes))))


def measure(model: nn.Module, size: int, channels: int = 1) -> Footprint:
    """One no-grad forward pass of a [1, channels, size, size] input (on the model's device) with hooks
    on every leaf module."""
    sizes: list[int] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())
        elif isinstance(output, tuple | list):
            sizes.extend(t.numel() * t.element_size() for t in output if isinstance(t, torch.Tensor))

    device = model_device(model)
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():  # each module's own flag, as the caller left it
            module.training = mode
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return Footprint(sum(sizes), max(sizes, default=0), params, device.type)
