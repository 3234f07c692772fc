"""Audit a model for hook-based attribution: one instrumented forward pass lists what would break captum.

Captum's DeepLift and guided backprop override gradients with hooks on non-linear *modules* (see
:mod:`cxrlens.attribution.prepare` for what goes wrong and why). :func:`audit_model` runs the model once with
a ``TorchFunctionMode`` (:class:`_Recorder`) that sees every torch call and the tensors it reads, while forward
pre/post hooks keep the module stack; the :class:`ModelAudit` it returns names the modules whose own forward
makes offending calls (their *owners*), which :mod:`cxrlens.attribution.rewrite` then rewrites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr._core import deep_lift
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from cxrlens.attribution.deeplift_rules import CompleteMaxPool2d
from cxrlens.errors import MethodError

__all__ = [
    "MAXPOOL_NAMES",
    "RELU_NAMES",
    "ModelAudit",
    "audit_model",
    "default_example",
    "iter_children",
    "nonlinear_types",
    "qualified_names",
]

# torch functions (as TorchFunctionMode reports them) that need a module of their own
RELU_NAMES = frozenset({"relu", "relu_"})
MAXPOOL_NAMES = {"max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3}
# other functional non-linearities: not rewritten, but reported (DeepLIFT treats them as linear)
_OTHER_NONLINEAR_NAMES = frozenset(
    {"sigmoid", "tanh", "elu", "leaky_relu", "softplus", "softmax", "gelu", "silu", "hardtanh", "relu6"}
)


def nonlinear_types() -> tuple[type[nn.Module], ...]:
    """Module types captum's DeepLift hooks (its rule table), plus ours; ReLU for guided backprop."""
    table = getattr(deep_lift, "SUPPORTED_NON_LINEAR", {})
    return (*table.keys(), nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, CompleteMaxPool2d)


def qualified_names(model: nn.Module) -> dict[int, str]:
    """id of each module of ``model`` -> its qualified name (the first, for a shared module)."""
    return {id(m): name for name, m in model.named_modules(remove_duplicate=True)}


@dataclass
class ModelAudit:
    """What one instrumented forward pass found; module names are qualified names in the audited model.

    * ``reused``: non-linear module -> number of calls (only modules called more than once);
    * ``functional``: ``(owner, function)`` for functional relu / max-pool calls made by ``owner``'s forward;
    * ``shared_inputs``: ``(caller, module)`` where non-linear ``module``, called from ``caller``, reads a tensor
      that something else also reads (captum's input hook would overwrite the other readers' gradients);
    * ``chained_inputs``: ``(caller, module, producer)`` where non-linear ``module`` reads the very output tensor
      of non-linear ``producer`` (captum's output hook on ``producer`` would record the gradient *before*
      ``module``'s rule rewrites it, so ``producer``'s rule gets plain gradients);
    * ``other_functional``: ``(owner, function)`` for other functional non-linearities (sigmoid, softmax, ...)
      that DeepLIFT treats as linear; reported, not rewritten.
    """

    reused: dict[str, int] = field(default_factory=dict)
    functional: list[tuple[str, str]] = field(default_factory=list)
    shared_inputs: list[tuple[str, str]] = field(default_factory=list)
    chained_inputs: list[tuple[str, str, str]] = field(default_factory=list)
    other_functional: list[tuple[str, str]] = field(default_factory=list)
    # object-level facts for the rewriting step (ids of modules of the audited model)
    owners: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    reused_ids: set[int] = field(default_factory=set, repr=False)
    private_pairs: set[tuple[int, int]] = field(default_factory=set, repr=False)  # (caller id, module id)

    @property
    def clean(self) -> bool:
        """No reused non-linear module, functional relu / max-pool, shared or chained non-linear input."""
        return not (self.reused or self.functional or self.shared_inputs or self.chained_inputs)

    def problems(self) -> list[str]:
        """One line per problem, naming the module."""
        lines = [f"{name or '<root>'}: non-linear module called {n} times" for name, n in self.reused.items()]
        lines += [
            f"{owner or '<root>'}: calls {func} functionally (no module to hook)" for owner, func in self.functional
        ]
        lines += [
            f"{module}: called from {caller or '<root>'} on a tensor that another operation also reads"
            for caller, module in self.shared_inputs
        ]
        lines += [
            f"{module}: called from {caller or '<root>'} directly on the output of {producer}"
            for caller, module, producer in self.chained_inputs
        ]
        return lines


class _Recorder(TorchFunctionMode):
    """Records torch calls with the innermost module making them and the tensors they read."""

    def __init__(self, stack: list[nn.Module], nonlinear: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.stack = stack
        self.nonlinear = nonlinear
        self.functional: list[tuple[nn.Module | None, str, str]] = []  # (owner, kind, name)
        self.consumers: dict[tuple[int, int], list[nn.Module | None]] = {}  # (id, version) -> reader's module
        self.keep_alive: list[Tensor] = []  # tensor ids must stay unique during the pass
        # outputs of non-linear modules / functional calls: (id, version) -> (module or owner, function name)
        self.produced: dict[tuple[int, int], tuple[nn.Module | None, str]] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        # tensors are identified by (id, version): an in-place op makes a new value in the same object
        read = [(leaf, leaf._version) for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, Tensor)]
        result = func(*args, **kwargs)
        top = self.stack[-1] if self.stack else None
        name = getattr(func, "__name__", "")
        inside_nonlinear = top is not None and isinstance(top, self.nonlinear)
        if not inside_nonlinear:
            if name in RELU_NAMES or name in MAXPOOL_NAMES:
                self.functional.append((top, "relu" if name in RELU_NAMES else "max_pool", name))
                if isinstance(result, Tensor):  # will be a module's output once rewritten
                    self.produced[(id(result), result._version)] = (top, name)
                    self.keep_alive.append(result)
            elif name in _OTHER_NONLINEAR_NAMES:
                self.functional.append((top, "other", name))
        if any(isinstance(leaf, Tensor) for leaf in tree_flatten(result)[0]):  # reads data, not metadata
            for leaf, version in read:
                self.consumers.setdefault((id(leaf), version), []).append(top)
                self.keep_alive.append(leaf)
        return result


def iter_children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, child) for every registered child, shared children at each place."""
    seen: set[int] = set()
    todo = [model]
    while todo:
        parent = todo.pop()
        if id(parent) in seen:
            continue
        seen.add(id(parent))
        for attr, child in list(parent._modules.items()):
            if child is not None:
                yield parent, attr, child
                todo.append(child)


def default_example(model: nn.Module) -> Tensor:
    """A small input for :func:`audit_model` / :func:`prepare_model` (cxrlens classifiers only)."""
    spec = getattr(model, "spec", None)
    min_size = getattr(spec, "min_size", None)
    if min_size is None:
        raise MethodError(
            f"pass an example input to prepare {type(model).__name__}: only cxrlens classifiers know their input size"
        )
    size = max(int(min_size), 64)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 1, size, size, generator=generator).to(device=device, dtype=dtype)


def audit_model(model: nn.Module, example: Tensor | None = None) -> ModelAudit:
    """Run ``model`` once on ``example`` (no gradients, eval mode) and list what breaks hook-based attribution.

    The model is left as found: its training flag is restored and every hook added here is removed.
    """
    if example is None:
        example = default_example(model)
    nonlinear = nonlinear_types()
    stack: list[nn.Module] = []
    calls: dict[int, list[nn.Module | None]] = {}  # non-linear module id -> caller of each call
    nonlinear_inputs: list[tuple[nn.Module, nn.Module | None, Tensor, int]] = []
    recorder = _Recorder(stack, nonlinear)

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(module, nonlinear):
            caller = stack[-1] if stack else None
            calls.setdefault(id(module), []).append(caller)
            if args and isinstance(args[0], Tensor):
                nonlinear_inputs.append((module, caller, args[0], args[0]._version))
                recorder.keep_alive.append(args[0])
        stack.append(module)

    def post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not stack or stack[-1] is not module:
            raise MethodError(f"module stack out of order at {type(module).__name__} while auditing the model")
        stack.pop()
        if isinstance(module, nonlinear) and isinstance(output, Tensor):
            recorder.produced[(id(output), output._version)] = (module, "")
            recorder.keep_alive.append(output)

    modules = {id(m): m for m in model.modules()}
    flags = {id(m): m.training for m in modules.values()}
    handles = []
    try:
        for module in modules.values():
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        model.eval()
        with torch.no_grad(), recorder:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        for module_id, module in modules.items():
            module.training = flags[module_id]

    names = qualified_names(model)
    audit = ModelAudit()
    for module_id, callers in calls.items():
        if len(callers) > 1:
            audit.reused[names.get(module_id, "?")] = len(callers)
            audit.reused_ids.add(module_id)
            for caller in callers:
                if caller is not None:
                    audit.owners[id(caller)] = caller
    for owner, kind, func_name in recorder.functional:
        owner_name = names.get(id(owner), "?") if owner is not None else "<outside any module>"
        if kind == "other":
            if (owner_name, func_name) not in audit.other_functional:
                audit.other_functional.append((owner_name, func_name))
            continue
        if (owner_name, func_name) not in audit.functional:
            audit.functional.append((owner_name, func_name))
        if owner is not None:
            audit.owners[id(owner)] = owner
    for module, caller, tensor, version in nonlinear_inputs:
        key = (id(tensor), version)
        caller_name = names.get(id(caller), "?") if caller is not None else "<outside any module>"
        module_name = names.get(id(module), "?")
        problem = False
        if any(reader is not module for reader in recorder.consumers.get(key, [])):
            problem = True
            if (caller_name, module_name) not in audit.shared_inputs:
                audit.shared_inputs.append((caller_name, module_name))
        producer = recorder.produced.get(key)
        if producer is not None:
            problem = True
            producer_name = names.get(id(producer[0]), "?") if producer[0] is not None else "<root>"
            if producer[1]:
                producer_name = f"functional {producer[1]} in {producer_name or '<root>'}"
            entry = (caller_name, module_name, producer_name)
            if entry not in audit.chained_inputs:
                audit.chained_inputs.append(entry)
        if problem:
            audit.private_pairs.add((id(caller), id(module)))
            if caller is not None:
                audit.owners[id(caller)] = caller
    return audit
