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
  its plain gradient, which is where the 2-23 % InceptionResNetV2 error of reference.md section 7 comes from);
* max-pooling itself, whose captum rule is exact only where the baseline is constant over each window and
  loses shares of overlapping windows (see :mod:`cxrlens.attribution.deeplift_rules`).

:func:`prepare_model` returns a deep copy, in eval mode, where every ReLU / max-pool *call* is its own
non-in-place module, reading a private tensor (a ``clone``) wherever its input is shared or is another
non-linear module's output, and every ``nn.MaxPool2d`` is an
:class:`~cxrlens.attribution.deeplift_rules.ExactMaxPool2d` with an exact DeepLIFT rule. Logits are unchanged
(:func:`check_prepared` verifies it). The caller's model is never modified.

How: an instrumented forward pass (:func:`audit_model`: a ``TorchFunctionMode`` sees every torch call and the
tensors it reads, forward pre/post hooks keep the module stack) finds the modules whose own forward makes such
calls (their *owners*). Each owner is traced with ``torch.fx``, every submodule a leaf, so qualified names
below it are unchanged (``backbone.layer4``, ``backbone.features.norm5``, ``backbone.Mixed_7c``,
``backbone.conv2d_7b``); the offending nodes are replaced (fresh ``nn.ReLU`` / max-pool modules,
out-of-place arithmetic, ``clone`` in front of shared or chained inputs) and the ``GraphModule`` takes the
owner's place in its parent. A plain ``nn.Sequential`` owner is not traced: it stays an indexable
``Sequential`` (of a subclass whose forward clones where needed). Audit and rewrite repeat until the audit
finds nothing, or :class:`~cxrlens.errors.MethodError` names the module and the reason.

New modules are named after what they replace: the second call of a reused ``relu`` becomes ``relu_call2``,
a functional relu ``relu_fn`` (``relu_fn2``, ...), a functional max-pool ``max_pool2d_fn``.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from cxrlens.attribution.deeplift_rules import ExactMaxPool2d, register_exact_rules
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

# torch functions (as TorchFunctionMode reports them) that need a module of their own
_RELU_NAMES = frozenset({"relu", "relu_"})
_MAXPOOL_NAMES = {"max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3}
_RELU_TARGETS: frozenset[Callable[..., Any]] = frozenset({F.relu, F.relu_, torch.relu, torch.relu_})
_MAXPOOL_TARGETS: dict[Callable[..., Any], int] = {
    F.max_pool1d: 1,
    F.max_pool2d: 2,
    F.max_pool3d: 3,
    torch.max_pool1d: 1,
    torch.max_pool2d: 2,
    torch.max_pool3d: 3,
}
_MAXPOOL_MODULES: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
# other functional non-linearities: not rewritten, but reported (DeepLIFT treats them as linear)
_OTHER_NONLINEAR_NAMES = frozenset(
    {"sigmoid", "tanh", "elu", "leaky_relu", "softplus", "softmax", "gelu", "silu", "hardtanh", "relu6"}
)
_INPLACE_OPERATORS: dict[Callable[..., Any], Callable[..., Any]] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _nonlinear_types() -> tuple[type[nn.Module], ...]:
    """Module types captum's DeepLift hooks (its rule table), plus ours; ReLU for guided backprop."""
    from captum.attr._core import deep_lift

    table = getattr(deep_lift, "SUPPORTED_NON_LINEAR", {})
    return (*table.keys(), nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, ExactMaxPool2d)


# --------------------------------------------------------------------------------------------- audit


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
            if name in _RELU_NAMES or name in _MAXPOOL_NAMES:
                self.functional.append((top, "relu" if name in _RELU_NAMES else "max_pool", name))
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


def _qualified_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules(remove_duplicate=True)}


def _iter_children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
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
    nonlinear = _nonlinear_types()
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

    names = _qualified_names(model)
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


# ------------------------------------------------------------------------------------------ rewrite


class _LeafTracer(fx.Tracer):
    """Traces one module's own forward; every submodule call stays one ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


_MAXPOOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _maxpool_module(node: fx.Node, dims: int, exact: bool, owner_name: str) -> nn.Module:
    bound = dict(zip(_MAXPOOL_PARAMS, node.args, strict=False))
    bound.update(node.kwargs)
    unknown = set(bound) - set(_MAXPOOL_PARAMS)
    if unknown:
        raise MethodError(f"{owner_name}: cannot read max-pool arguments {sorted(unknown)} of {node.format_node()}")
    for key in _MAXPOOL_PARAMS[1:]:
        if isinstance(bound.get(key), fx.Node):
            raise MethodError(f"{owner_name}: max-pool argument {key} is computed at run time in {node.format_node()}")
    if bound.get("return_indices"):
        raise MethodError(f"{owner_name}: a max-pool returning indices cannot become a hookable module")
    stride = bound.get("stride")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = None
    cls = ExactMaxPool2d if (exact and dims == 2) else _MAXPOOL_MODULES[dims]
    return cls(  # type: ignore[call-arg]
        kernel_size=bound["kernel_size"],
        stride=stride,
        padding=bound.get("padding", 0),
        dilation=bound.get("dilation", 1),
        ceil_mode=bool(bound.get("ceil_mode", False)),
    )


def _fresh_name(gm: nn.Module, base: str) -> str:
    """``base``, ``base2``, ``base3``, ... : the first that names nothing yet (``base`` may be dotted)."""
    prefix, _, leaf = base.rpartition(".")
    parent = gm.get_submodule(prefix) if prefix else gm
    for i in range(1 if leaf.endswith("_fn") else 2, 10_000):
        name = leaf if i == 1 else f"{leaf}{i}"
        if not hasattr(parent, name):
            return f"{prefix}.{name}" if prefix else name
    raise MethodError(f"no free module name for {base}")


def _can_drop_inplace(node: fx.Node, order: dict[fx.Node, int]) -> bool:
    """An in-place op may become out-of-place if nothing reads its target afterwards but through its result."""
    target = node.args[0] if node.args else None
    if not isinstance(target, fx.Node) or target.op in ("placeholder", "get_attr"):
        return False  # the caller's tensor or a buffer: mutation may be visible outside
    return not any(user is not node and order[user] > order[node] for user in target.users)


def _make_out_of_place(node: fx.Node, order: dict[fx.Node, int]) -> None:
    if not _can_drop_inplace(node, order):
        return
    if node.op == "call_function" and node.target in _INPLACE_OPERATORS:
        node.target = _INPLACE_OPERATORS[node.target]  # type: ignore[index]
    elif node.op == "call_method" and isinstance(node.target, str):
        name = node.target
        if name.endswith("_") and not name.startswith("_") and hasattr(Tensor, name[:-1]):
            node.target = name[:-1]
    elif node.op == "call_function" and node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}


def _replacement(
    node: fx.Node, gm: fx.GraphModule, owner_name: str, audit: ModelAudit, kept: set[int], exact: bool
) -> tuple[nn.Module, str] | None:
    """The fresh module (and its base name) that should make the call of ``node``, if any."""
    if (node.op == "call_function" and node.target in _RELU_TARGETS) or (
        node.op == "call_method" and node.target in _RELU_NAMES
    ):
        return nn.ReLU(), "relu_fn"
    if node.op == "call_function" and node.target in _MAXPOOL_TARGETS:
        dims = _MAXPOOL_TARGETS[node.target]  # type: ignore[index]
        return _maxpool_module(node, dims, exact, owner_name), f"max_pool{dims}d_fn"
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if id(module) in audit.reused_ids:
            if id(module) not in kept:  # the first call seen keeps the original module
                kept.add(id(module))
                return None
            fresh = copy.deepcopy(module)
            if isinstance(getattr(fresh, "inplace", None), bool):
                fresh.inplace = False  # type: ignore[assignment]
            return fresh, f"{node.target}_call"
    return None


def _rewrite_owner(
    owner: nn.Module,
    owner_name: str,
    audit: ModelAudit,
    kept: set[int],
    exact: bool,
) -> fx.GraphModule:
    """fx-trace ``owner`` (submodules as leaves) and return it with hookable non-linearities."""
    try:
        graph = _LeafTracer().trace(owner)
    except (fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError, AttributeError) as err:
        raise MethodError(
            f"{owner_name or '<root>'} ({type(owner).__name__}) needs rewriting for attribution "
            f"({'; '.join(_owner_reasons(owner, audit))}) but torch.fx cannot trace its forward: {err}"
        ) from err
    gm = fx.GraphModule(owner, graph, class_name=type(owner).__name__)
    # keep every child (also ones the traced forward does not reach), parameter, buffer and plain attribute
    gm._modules = OrderedDict(owner._modules)
    gm._parameters = OrderedDict(owner._parameters)
    gm._buffers = OrderedDict(owner._buffers)
    gm._non_persistent_buffers_set = set(owner._non_persistent_buffers_set)
    for key, value in owner.__dict__.items():
        if not key.startswith("_") and key not in gm.__dict__ and key != "training":
            gm.__dict__[key] = value
    gm.train(owner.training)

    order = {node: i for i, node in enumerate(graph.nodes)}
    nonlinear = _nonlinear_types()
    to_protect: list[fx.Node] = []
    for node in list(graph.nodes):
        found = _replacement(node, gm, owner_name, audit, kept, exact)
        if found is None:
            if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nonlinear):
                to_protect.append(node)
            else:
                _make_out_of_place(node, order)
            continue
        new_module, base = found
        name = _fresh_name(gm, base)
        gm.add_submodule(name, new_module)
        with graph.inserting_before(node):
            replacement = graph.call_module(name, (node.args[0],))
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        order[replacement] = order.pop(node)
        to_protect.append(replacement)

    # a non-linear module gets a private input when its input (maybe) also feeds something else
    for node in to_protect:
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node):
            continue
        module = gm.get_submodule(str(node.target))
        shared_at_run_time = (id(owner), id(module)) in audit.private_pairs
        if shared_at_run_time or len(source.users) > 1 or source.op in ("placeholder", "get_attr"):
            with graph.inserting_before(node):
                private = graph.call_function(torch.clone, (source,))
            node.replace_input_with(source, private)
    graph.lint()
    gm.recompile()
    return gm


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


_SEQUENTIAL_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _private_input_forward(self: nn.Sequential, input: Any) -> Any:
    private: frozenset[str] = self._cxrlens_private_inputs  # type: ignore[assignment]
    for name, module in self._modules.items():
        if name in private:
            input = input.clone()
        input = module(input)
    return input


def _rewrite_sequential(owner: nn.Module, audit: ModelAudit, kept: set[int]) -> nn.Module:
    """A copy of a ``Sequential`` (same class, children and names; indexable) with the needed fixes.

    No tracing needed: a later occurrence of a reused child becomes a fresh copy under the same key, and
    children that need a private input get a ``clone`` of it (the class becomes a subclass of the original
    whose forward does that).
    """
    new = copy.copy(owner)
    new._modules = OrderedDict(owner._modules)
    private = set(getattr(owner, "_cxrlens_private_inputs", ()))
    for name, child in list(new._modules.items()):
        if child is None:
            continue
        if id(child) in audit.reused_ids:
            if id(child) in kept:
                fresh = copy.deepcopy(child)
                if isinstance(getattr(fresh, "inplace", None), bool):
                    fresh.inplace = False  # type: ignore[assignment]
                new._modules[name] = fresh
                child = fresh
            else:
                kept.add(id(child))
        if (id(owner), id(owner._modules[name])) in audit.private_pairs:
            private.add(name)
    base: type[nn.Module] = getattr(type(owner), "_cxrlens_base", type(owner))
    cls = _SEQUENTIAL_CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (base,), {"forward": _private_input_forward, "_cxrlens_base": base})
        cls.__module__ = __name__
        cls.__qualname__ = f"PrivateInputs[{base.__qualname__}]"
        _SEQUENTIAL_CLASSES[base] = cls
    new.__class__ = cls
    object.__setattr__(new, "_cxrlens_private_inputs", frozenset(private))
    return new


def _owner_reasons(owner: nn.Module, audit: ModelAudit) -> list[str]:
    reasons = []
    if any(True for m in owner.modules() if id(m) in audit.reused_ids):
        reasons.append("calls a non-linear module more than once")
    if any(caller == id(owner) for caller, _ in audit.private_pairs):
        reasons.append("feeds a non-linear module a shared tensor or another non-linear module's output")
    return reasons or ["calls relu / max-pool functionally"]


def _depth(name: str) -> int:
    return 0 if name == "" else name.count(".") + 1


def _replace_everywhere(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent, attr, child in list(_iter_children(root)):
        if child is old:
            parent._modules[attr] = new


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


def _use_exact_maxpools(model: nn.Module) -> nn.Module:
    replaced: dict[int, nn.Module] = {}
    for parent, attr, child in list(_iter_children(model)):
        if type(child) is nn.MaxPool2d and not child.return_indices:
            if id(child) not in replaced:
                replaced[id(child)] = ExactMaxPool2d.from_module(child)
            parent._modules[attr] = replaced[id(child)]
    return model


def prepare_model(model: nn.Module, example: Tensor | None = None, *, exact_maxpool: bool = True) -> nn.Module:
    """A deep copy of ``model``, in eval mode, ready for captum's DeepLift, guided backprop and Grad-CAM.

    Every ReLU / max-pool call becomes its own non-in-place module with a private input (see the module
    docstring); every ``nn.MaxPool2d`` becomes :class:`ExactMaxPool2d` (exact DeepLIFT rule, registered in
    captum's table here) unless ``exact_maxpool=False``. Qualified names of existing modules are kept, and
    so are the attributes of a :class:`~cxrlens.models.CxrClassifier` wrapper.

    ``example`` is one small input used to observe the forward pass (only its structure matters);
    cxrlens classifiers get a default. Hooks the caller had registered are not copied; the copy's parameters
    do not require gradients (attribution needs gradients with respect to the input only). Rewritten modules
    are ``torch.fx`` graphs traced in eval mode: keep the copy in eval mode (auxiliary heads are not traced). Raises
    :class:`MethodError` if the result still has a problem (naming the module) or its logits differ.
    """
    if exact_maxpool:
        register_exact_rules()
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
        prepared = _rewrite_owners(prepared, audit, exact_maxpool)
    else:
        audit = audit_model(prepared, example)
    if exact_maxpool:
        _use_exact_maxpools(prepared)
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


def _rewrite_owners(prepared: nn.Module, audit: ModelAudit, exact_maxpool: bool) -> nn.Module:
    names = _qualified_names(prepared)
    owners = sorted(audit.owners.values(), key=lambda m: -_depth(names.get(id(m), "")))  # innermost first
    kept: set[int] = set()
    for owner in owners:
        owner_name = names.get(id(owner), "?")
        if _is_plain_sequential(owner):
            new = _rewrite_sequential(owner, audit, kept)
        else:
            new = _rewrite_owner(owner, owner_name, audit, kept, exact_maxpool)
        if owner is prepared:
            prepared = new
        else:
            _replace_everywhere(prepared, owner, new)
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
