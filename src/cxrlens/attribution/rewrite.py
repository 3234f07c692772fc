"""Rewrite the owners an audit found so that every ReLU / max-pool call is its own hookable module.

Each owner (a module whose own forward makes an offending call, see :mod:`cxrlens.attribution.audit`) is traced
with ``torch.fx``, every submodule a leaf, so qualified names below it are unchanged (``backbone.layer4``,
``backbone.features.norm5``, ``backbone.Mixed_7c``, ``backbone.conv2d_7b``). The offending nodes are replaced:
fresh ``nn.ReLU`` / max-pool modules for functional calls and for later calls of a reused module, out-of-place
arithmetic for in-place operations nothing else reads afterwards, a ``clone`` in front of inputs that are shared
or are another non-linear module's output. The ``GraphModule`` takes the owner's place in its parent. A plain
``nn.Sequential`` owner is not traced: it stays an indexable ``Sequential`` (of a subclass whose forward clones
where needed).

New modules are named after what they replace: the second call of a reused ``relu`` becomes ``relu_call2``,
a functional relu ``relu_fn`` (``relu_fn2``, ...), a functional max-pool ``max_pool2d_fn``. 2-D max-pools
become :class:`~cxrlens.attribution.deeplift_rules.CompleteMaxPool2d` when ``complete_maxpool`` is set.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from cxrlens.attribution.audit import RELU_NAMES, ModelAudit, iter_children, nonlinear_types, qualified_names
from cxrlens.attribution.deeplift_rules import CompleteMaxPool2d
from cxrlens.errors import MethodError

__all__ = ["rewrite_owners", "use_complete_maxpools"]

# torch functions (as fx records them) that need a module of their own
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
_INPLACE_OPERATORS: dict[Callable[..., Any], Callable[..., Any]] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


class _LeafTracer(fx.Tracer):
    """Traces one module's own forward; every submodule call stays one ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


_MAXPOOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _maxpool_module(node: fx.Node, dims: int, complete: bool, owner_name: str) -> nn.Module:
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
    cls = CompleteMaxPool2d if (complete and dims == 2) else _MAXPOOL_MODULES[dims]
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
    node: fx.Node, gm: fx.GraphModule, owner_name: str, audit: ModelAudit, kept: set[int], complete: bool
) -> tuple[nn.Module, str] | None:
    """The fresh module (and its base name) that should make the call of ``node``, if any."""
    if (node.op == "call_function" and node.target in _RELU_TARGETS) or (
        node.op == "call_method" and node.target in RELU_NAMES
    ):
        return nn.ReLU(), "relu_fn"
    if node.op == "call_function" and node.target in _MAXPOOL_TARGETS:
        dims = _MAXPOOL_TARGETS[node.target]  # type: ignore[index]
        return _maxpool_module(node, dims, complete, owner_name), f"max_pool{dims}d_fn"
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
    complete: bool,
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
    nonlinear = nonlinear_types()
    to_protect: list[fx.Node] = []
    for node in list(graph.nodes):
        found = _replacement(node, gm, owner_name, audit, kept, complete)
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
    for parent, attr, child in list(iter_children(root)):
        if child is old:
            parent._modules[attr] = new


def use_complete_maxpools(model: nn.Module) -> nn.Module:
    """Swap every ``nn.MaxPool2d`` of ``model`` (in place) for its :class:`CompleteMaxPool2d` counterpart."""
    replaced: dict[int, nn.Module] = {}
    for parent, attr, child in list(iter_children(model)):
        if type(child) is nn.MaxPool2d and not child.return_indices:
            if id(child) not in replaced:
                replaced[id(child)] = CompleteMaxPool2d.from_module(child)
            parent._modules[attr] = replaced[id(child)]
    return model


def rewrite_owners(prepared: nn.Module, audit: ModelAudit, complete_maxpool: bool) -> nn.Module:
    """Rewrite every owner ``audit`` found in ``prepared`` (innermost first); returns the (maybe new) root."""
    names = qualified_names(prepared)
    owners = sorted(audit.owners.values(), key=lambda m: -_depth(names.get(id(m), "")))  # innermost first
    kept: set[int] = set()
    for owner in owners:
        owner_name = names.get(id(owner), "?")
        if _is_plain_sequential(owner):
            new = _rewrite_sequential(owner, audit, kept)
        else:
            new = _rewrite_owner(owner, owner_name, audit, kept, complete_maxpool)
        if owner is prepared:
            prepared = new
        else:
            _replace_everywhere(prepared, owner, new)
    return prepared
