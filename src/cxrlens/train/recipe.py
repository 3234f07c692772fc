"""The training recipe's speed settings, resolved once when a fold starts training (docs/training_recipe.md).

``precision: auto`` becomes

* ``bf16-mixed`` on a CPU with native bf16 arithmetic (x86 flags ``avx512_bf16`` or ``amx_bf16``: Intel Cooper
  Lake, Sapphire Rapids and later, AMD Zen 4 and later) and on a CUDA GPU with native bf16 (Ampere and later);
* ``16-mixed`` on an older CUDA GPU (with Lightning's gradient scaler);
* ``32-true`` (the paper's loop) everywhere else: CPUs without bf16 (emulated bf16 is slower than fp32), Apple
  MPS, other accelerators.

``channels_last: auto`` is on for the backbones where a measurement on 2 cores of an AMD EPYC found it faster in
the precision the fold trains in (:data:`CHANNELS_LAST`), off for the others and for backbones not measured.

What was resolved is recorded: in ``done.json``, in ``model.pt``'s metadata and in every Lightning checkpoint,
so a resumed fold keeps the precision it started with (an explicit setting still wins).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cxrlens.config import TrainConfig

# backbone -> the precisions in which channels-last trained faster (ResNet18 512 px, batch 8; others batch 4;
# measured in one process, alternating steps: docs/training_recipe.md, "What `auto` resolves to")
CHANNELS_LAST: dict[str, frozenset[str]] = {
    "resnet18": frozenset({"bf16-mixed", "32-true"}),
    "resnet34": frozenset({"bf16-mixed", "32-true"}),
    "inception_v3": frozenset({"bf16-mixed", "32-true"}),
    "inception_resnet_v2": frozenset({"bf16-mixed", "32-true"}),
    "densenet161": frozenset({"bf16-mixed"}),
}

_MIXED = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on (detected by :func:`detect_hardware`; tests pass their own)."""

    device: str  # "cpu", "cuda", "mps" or another accelerator name
    cpu_bf16: bool = False  # native bf16 dot products on the CPU
    cuda_bf16: bool = False  # native bf16 on the (first) CUDA device


@dataclass(frozen=True)
class Recipe:
    """The resolved speed settings of one fold's training."""

    precision: str
    channels_last: bool
    fused_optimizer: bool
    reason: str = ""  # what was chosen and why (``auto`` resolved so, or set in the config)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _MIXED.get(self.precision)

    def meta(self) -> dict[str, Any]:
        """The fields recorded in ``done.json``, ``model.pt`` and the Lightning checkpoints."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "fused_optimizer": self.fused_optimizer,
        }


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """x86 with ``avx512_bf16`` or ``amx_bf16`` (torch's own probe where /proc/cpuinfo is not readable).

    oneDNN runs bf16 convolutions on any AVX-512 CPU, but without these instructions it converts to fp32 and
    back and is slower than fp32: only native bf16 counts. Arm CPUs (``bf16`` feature) are left at fp32: not
    measured.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    flags = cpu_flags() if flags is None else flags
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def _training_device(accelerator: str) -> str:
    """The device Lightning will train on for ``accelerator`` (its ``auto`` order: CUDA, MPS, CPU)."""
    accelerator = accelerator.lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if accelerator in ("auto", "gpu"):
        return "cuda" if cuda else "mps" if mps else "cpu" if accelerator == "auto" else "gpu"
    return accelerator


def detect_hardware(accelerator: str = "auto") -> Hardware:
    device = _training_device(accelerator)
    cuda_bf16 = False
    if device == "cuda":
        try:
            cuda_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation flag
            cuda_bf16 = torch.cuda.is_bf16_supported()
    return Hardware(device=device, cpu_bf16=device == "cpu" and cpu_has_native_bf16(), cuda_bf16=cuda_bf16)


def auto_precision(hardware: Hardware) -> tuple[str, str]:
    """(precision, why) for ``precision: auto``."""
    if hardware.device == "cuda":
        if hardware.cuda_bf16:
            return "bf16-mixed", "CUDA GPU with native bf16"
        return "16-mixed", "CUDA GPU without native bf16"
    if hardware.device == "cpu":
        if hardware.cpu_bf16:
            return "bf16-mixed", "CPU with native bf16 (avx512_bf16 / amx_bf16)"
        return "32-true", "CPU without native bf16"
    return "32-true", f"{hardware.device}: mixed precision not measured there"


def auto_channels_last(model_name: str, precision: str) -> bool:
    return precision in CHANNELS_LAST.get(model_name, frozenset())


def resolve_recipe(
    cfg: TrainConfig,
    model_name: str,
    hardware: Hardware | None = None,
    recorded: Mapping[str, Any] | None = None,
) -> Recipe:
    """The recipe of one fold: ``auto`` settings resolved (``recorded``: what a resumed fold started with)."""
    recorded = recorded or {}
    reasons = []
    precision, why = cfg.precision, "set in train.precision"
    if precision == "auto":
        if recorded.get("precision"):
            precision, why = str(recorded["precision"]), "as the interrupted training started"
        else:
            precision, why = auto_precision(hardware or detect_hardware(cfg.accelerator))
    reasons.append(f"precision {precision}: {why}")
    channels_last, why = cfg.channels_last, "set in train.channels_last"
    if channels_last == "auto":
        if "channels_last" in recorded:
            channels_last, why = bool(recorded["channels_last"]), "as the interrupted training started"
        else:
            channels_last = auto_channels_last(model_name, precision)
            why = f"{'faster' if channels_last else 'not faster or not measured'} for {model_name} in {precision}"
    reasons.append(f"channels-last {'on' if channels_last else 'off'}: {why}")
    return Recipe(
        precision=precision,
        channels_last=bool(channels_last),
        fused_optimizer=cfg.fused_optimizer,
        reason="; ".join(reasons),
    )
