"""Global explanations by neuron activation profiles (NAP, Krug & Stober; reference.md §6).

For each chosen layer, every image's output ``[B, C, H, W]`` is reduced on the fly to the mean activation of
each feature map (``[B, C]``; 2-D outputs ``[B, C]`` are used as they are), so no activation map is ever kept.
Images are put into *groups* by label expressions over their ground-truth labels (default: COVID-19,
pneumonia, pneumonia without COVID-19, neither). Per layer:

* group mean of each feature map over the group's images, ``[G, C]``;
* the *profile*: group means minus their (unweighted) mean over the groups;
* *dead* feature maps, whose per-image mean has zero range over all images, are counted and removed
  (the indices of the live ones are kept);
* the live maps are ranked by their **spread**: ``max_g profile[g, c] - min_g profile[g, c]``, the largest
  difference between two group means, in the layer's activation units (the colour scale of the figures).
  It does not depend on the centring, and for two groups it equals twice ``max_g |profile[g, c]|``.
  The per-map standard deviation over all images is saved too, for effect-size style normalisation.

Group expressions: label names joined by ``&`` (and), ``|`` (or), ``!`` (not) and parentheses; ``!`` binds
tighter than ``&``, which binds tighter than ``|``. Names may contain spaces and hyphens (``Viral Pneumonia``,
``COVID-19``); a name holding an operator character can be quoted (``"A & B"``).

:func:`run_nap` writes ``<run>/nap/<model>/fold<k>/``:

* ``nap.npz``: ``layers``, ``group_names``, ``group_expressions``, ``group_sizes`` (non-empty groups, in
  order), ``n_images``, and per layer ``<layer>/profile`` ``[G, n_live]``, ``<layer>/group_means``
  ``[G, n_live]``, ``<layer>/live`` ``[n_live]`` (channel indices), ``<layer>/score`` ``[n_live]`` (spread),
  ``<layer>/std`` ``[n_live]``, ``<layer>/order`` ``[n_live]`` (positions into ``live``, most discriminative
  first), ``<layer>/dead`` and ``<layer>/channels`` (scalars). String arrays are unicode: no pickle needed.
* ``summary.json``: ``model``, ``fold``, ``images``, ``n_images``, ``groups`` (name, expression, size of the
  non-empty ones), ``group_sizes`` (all, empty ones 0), ``empty_groups``, ``ranking``, ``top_k``, ``layers``
  (per layer ``name``, ``channels``, ``dead``, ``live`` and ``top``: ``channel``, ``score``, ``std``,
  ``profile`` {group: value}) and ``files`` (``npz``, ``summary``, ``figures`` {layer: png}, ``overview``).
* ``layer_<layer>.png`` per layer (heatmap of the ``top_k`` maps: groups as rows, channel indices as
  columns, diverging colours centred on 0) and ``overview.png`` (every layer).
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cxrlens.errors import DataError, LabelError, ModelError, RunError
from cxrlens.fileio import atomic_write_bytes, atomic_write_json
from cxrlens.models.registry import model_device

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_GROUPS",
    "RANKING",
    "ExpressionError",
    "GroupSet",
    "LayerProfile",
    "NapResult",
    "compute_nap",
    "layer_figure",
    "make_groups",
    "npz_arrays",
    "overview_figure",
    "parse_expression",
    "parse_group_option",
    "run_nap",
    "summary_dict",
    "write_nap",
]

DEFAULT_GROUPS: dict[str, str] = {
    "COVID-19": "COVID-19",
    "pneumonia": "Pneumonia",
    "pneumonia without COVID-19": "Pneumonia & !COVID-19",
    "neither": "!Pneumonia & !COVID-19",
}
RANKING = "spread: max over groups minus min over groups of the profile (largest difference of two group means)"
IMAGE_CHOICES = ("test", "all")
DPI = 120


# --------------------------------------------------------------------------------------------------------------
# label expressions


class ExpressionError(LabelError):
    """A group expression is not well formed; the message names the expression and the position."""


class Expr:
    """A parsed label expression; :meth:`evaluate` gives one boolean per image."""

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def labels(self) -> set[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Label(Expr):
    name: str

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(columns[self.name], dtype=bool)

    def labels(self) -> set[str]:
        return {self.name}

    def __str__(self) -> str:
        return self.name if not re.search(r"[&|!()\"']", self.name) else '"' + self.name + '"'


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return ~self.operand.evaluate(columns)

    def labels(self) -> set[str]:
        return self.operand.labels()

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!{inner}" if isinstance(self.operand, Label | Not) else f"!({inner})"


@dataclass(frozen=True)
class And(Expr):
    left: Expr
    right: Expr

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.left.evaluate(columns) & self.right.evaluate(columns)

    def labels(self) -> set[str]:
        return self.left.labels() | self.right.labels()

    def __str__(self) -> str:
        parts = [f"({p})" if isinstance(p, Or) else str(p) for p in (self.left, self.right)]
        return " & ".join(parts)


@dataclass(frozen=True)
class Or(Expr):
    left: Expr
    right: Expr

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.left.evaluate(columns) | self.right.evaluate(columns)

    def labels(self) -> set[str]:
        return self.left.labels() | self.right.labels()

    def __str__(self) -> str:
        return f"{self.left} | {self.right}"


_OPERATORS = "&|!()"


@dataclass(frozen=True)
class _Token:
    kind: str  # one of _OPERATORS, "name" or "end"
    text: str
    pos: int  # 0-based index into the expression


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _OPERATORS:
            tokens.append(_Token(char, char, i))
            i += 1
        elif char in "\"'":
            end = text.find(char, i + 1)
            if end < 0:
                raise _syntax(text, i, f"unclosed quote {char}")
            name = " ".join(text[i + 1 : end].split())
            if not name:
                raise _syntax(text, i, "empty quoted label name")
            tokens.append(_Token("name", name, i))
            i = end + 1
        else:
            start = i
            while i < len(text) and text[i] not in _OPERATORS and text[i] not in "\"'":
                i += 1
            tokens.append(_Token("name", " ".join(text[start:i].split()), start))
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _syntax(text: str, pos: int, problem: str) -> ExpressionError:
    where = "at the end" if pos >= len(text) else f"at character {pos + 1} ({text[pos]!r})"
    return ExpressionError(f"group expression {text!r}: {problem} {where}")


class _Parser:
    """Recursive descent: or := and ('|' and)*; and := unary ('&' unary)*; unary := '!' unary | '(' or ')' | name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def parse(self) -> Expr:
        if self.token.kind == "end":
            raise ExpressionError(f"group expression {self.text!r} is empty; write e.g. 'Pneumonia & !COVID-19'")
        expr = self._or()
        if self.token.kind != "end":
            problem = "unmatched ')'" if self.token.kind == ")" else "expected '&', '|' or the end"
            raise _syntax(self.text, self.token.pos, problem)
        return expr

    def _or(self) -> Expr:
        expr = self._and()
        while self.token.kind == "|":
            self.i += 1
            expr = Or(expr, self._and())
        return expr

    def _and(self) -> Expr:
        expr = self._unary()
        while self.token.kind == "&":
            self.i += 1
            expr = And(expr, self._unary())
        return expr

    def _unary(self) -> Expr:
        token = self.token
        if token.kind == "!":
            self.i += 1
            return Not(self._unary())
        if token.kind == "(":
            self.i += 1
            expr = self._or()
            if self.token.kind != ")":
                raise _syntax(self.text, self.token.pos, f"missing ')' for the '(' at character {token.pos + 1}")
            self.i += 1
            return expr
        if token.kind == "name":
            self.i += 1
            return Label(token.text)
        raise _syntax(self.text, token.pos, "expected a label name, '!' or '('")


def parse_expression(text: str, label_names: Sequence[str] | None = None) -> Expr:
    """Parse a label expression; with ``label_names``, every name in it must be one of them."""
    expr = _Parser(text).parse()
    if label_names is not None:
        unknown = sorted(expr.labels() - set(label_names))
        if unknown:
            hints = []
            lowered = {n.lower(): n for n in label_names}
            for name in unknown:
                if name.lower() in lowered:
                    hints.append(f"{name!r} -> {lowered[name.lower()]!r}?")
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise LabelError(
                f"group expression {text!r}: unknown label(s) {', '.join(map(repr, unknown))}{hint}; "
                f"valid labels: {', '.join(label_names)}"
            )
    return expr


def parse_group_option(option: str) -> tuple[str, str]:
    """``"name=expression"`` (a command-line group) -> (name, expression); a bare expression names itself."""
    name, sep, expression = option.partition("=")
    if not sep:
        return option.strip(), option.strip()
    if not name.strip() or not expression.strip():
        raise ExpressionError(f"group {option!r}: write NAME=EXPRESSION, e.g. 'viral=Viral Pneumonia & !COVID-19'")
    return name.strip(), expression.strip()


@dataclass
class GroupSet:
    """Groups evaluated on a label matrix: the ones with images are kept, empty ones reported."""

    names: list[str]  # groups with images, in definition order
    expressions: list[str]
    masks: np.ndarray  # [N, G] bool
    sizes: dict[str, int]  # every defined group, including empty ones (0)
    empty: list[str]


def _label_matrix(labels: np.ndarray | Sequence[Iterable[str]], label_names: Sequence[str]) -> np.ndarray:
    if isinstance(labels, np.ndarray | torch.Tensor):
        matrix = np.asarray(labels)
        if matrix.ndim != 2 or matrix.shape[1] != len(label_names):
            raise LabelError(
                f"label matrix has shape {tuple(matrix.shape)}; expected [images, {len(label_names)}] "
                f"for labels {list(label_names)}"
            )
        return matrix.astype(bool)
    index = {name: j for j, name in enumerate(label_names)}
    matrix = np.zeros((len(labels), len(label_names)), dtype=bool)
    for i, label_set in enumerate(labels):
        if isinstance(label_set, str):
            raise LabelError(f"labels of image {i} are a string ({label_set!r}); give a set of label names")
        for name in label_set:
            j = index.get(name)
            if j is not None:  # labels outside the label space cannot be named in expressions
                matrix[i, j] = True
    return matrix


def make_groups(
    labels: np.ndarray | Sequence[Iterable[str]],
    label_names: Sequence[str],
    groups: Mapping[str, str] | None = None,
) -> GroupSet:
    """Evaluate group expressions on ground truth (a 0/1 matrix over ``label_names`` or label sets).

    Raises :class:`LabelError` for bad expressions and :class:`DataError` if fewer than two groups have images.
    """
    groups = dict(DEFAULT_GROUPS if groups is None else groups)
    if not groups:
        raise LabelError("no groups defined; give at least two, e.g. {'covid': 'COVID-19', 'other': '!COVID-19'}")
    parsed = {name: parse_expression(expr, label_names) for name, expr in groups.items()}
    matrix = _label_matrix(labels, label_names)
    columns = {name: matrix[:, j] for j, name in enumerate(label_names)}
    masks = {name: expr.evaluate(columns) for name, expr in parsed.items()}
    sizes = {name: int(mask.sum()) for name, mask in masks.items()}
    kept = [name for name in groups if sizes[name] > 0]
    empty = [name for name in groups if sizes[name] == 0]
    if len(kept) < 2:
        detail = ", ".join(f"{name!r}: {sizes[name]}" for name in groups)
        raise DataError(
            f"activation profiles need at least two groups with images, got {len(kept)} of {len(groups)} "
            f"({detail} of {matrix.shape[0]} images); use more images (e.g. images='all') or other groups"
        )
    stacked = np.stack([masks[name] for name in kept], axis=1) if kept else np.zeros((matrix.shape[0], 0), bool)
    return GroupSet(kept, [groups[name] for name in kept], stacked, sizes, empty)


# --------------------------------------------------------------------------------------------------------------
# activation profiles


@dataclass
class LayerProfile:
    """The profile of one layer over the groups of a :class:`NapResult` (live feature maps only)."""

    name: str
    channels: int  # feature maps of the layer, dead ones included
    live: np.ndarray  # [n_live] int64 channel indices
    group_means: np.ndarray  # [G, n_live]
    profile: np.ndarray  # [G, n_live] group means minus the mean over groups
    std: np.ndarray  # [n_live] standard deviation of the per-image mean over all images
    score: np.ndarray  # [n_live] spread of the profile over groups (see RANKING)
    order: np.ndarray  # [n_live] positions into live, most discriminative first

    @property
    def dead(self) -> int:
        return self.channels - len(self.live)

    def top(self, k: int) -> np.ndarray:
        """Positions (into ``live``/``profile`` columns) of the ``k`` most discriminative maps."""
        return self.order[: max(k, 0)]


@dataclass
class NapResult:
    group_names: list[str]  # groups with images (rows of every profile)
    group_expressions: list[str]
    group_sizes: dict[str, int]  # every defined group, empty ones with 0
    empty_groups: list[str]
    n_images: int
    layers: dict[str, LayerProfile] = field(default_factory=dict)


def _module_names_hint(model: nn.Module, wanted: str) -> str:
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(wanted, names, n=6, cutoff=0.6)
    shown = close or names[:10]
    more = "" if close or len(names) <= 10 else f", ... ({len(names)} modules)"
    return ("did you mean " if close else "modules: ") + ", ".join(shown) + more


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    if layers is None:
        default = getattr(model, "nap_layer_names", None)
        if default is None:
            raise ModelError(f"{type(model).__name__} names no default NAP layers; pass layers=[...]")
        layers = list(default())
    if not layers:
        raise ModelError("no layers given for activation profiles")
    if len(set(layers)) != len(layers):
        raise ModelError(f"layers listed twice: {sorted({n for n in layers if list(layers).count(n) > 1})}")
    modules = dict(model.named_modules())
    resolved = {}
    for name in layers:
        if name not in modules or not name:
            raise ModelError(f"unknown layer {name!r}; {_module_names_hint(model, name)}")
        resolved[name] = modules[name]
    return resolved


def _reduce(name: str, output: Any) -> torch.Tensor:
    """Per-image mean of every feature map: [B, C, ...] -> [B, C] float64 on the CPU.

    Reduced inside the hook, into new memory: a later in-place op (``ReLU(inplace=True)`` after a batch norm)
    cannot change what was recorded.
    """
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"layer {name!r} returns {type(output).__name__}, not a tensor; choose another module")
    if output.ndim == 2:
        reduced = output.detach().to(torch.float64, copy=True)
    elif output.ndim >= 3:
        reduced = output.detach().flatten(2).double().mean(dim=2)
    else:
        raise ModelError(f"layer {name!r} returns shape {tuple(output.shape)}; expected [B, C, H, W] or [B, C]")
    return reduced.cpu()


class _Accumulator:
    """Streaming per-group sums and per-map min / max / moments of one layer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sums: np.ndarray | None = None  # [G, C]
        self.total = self.total_sq = self.low = self.high = np.zeros(0)

    def add(self, feats: np.ndarray, masks: np.ndarray) -> None:
        if self.sums is None:
            channels = feats.shape[1]
            self.sums = np.zeros((masks.shape[1], channels))
            self.total, self.total_sq = np.zeros(channels), np.zeros(channels)
            self.low, self.high = np.full(channels, np.inf), np.full(channels, -np.inf)
        elif feats.shape[1] != self.sums.shape[1]:
            raise ModelError(
                f"layer {self.name!r} gave {feats.shape[1]} feature maps, earlier {self.sums.shape[1]}; "
                "NAP needs a fixed channel count"
            )
        self.sums += masks.astype(np.float64).T @ feats
        self.total += feats.sum(axis=0)
        self.total_sq += np.square(feats).sum(axis=0)
        self.low = np.minimum(self.low, feats.min(axis=0))
        self.high = np.maximum(self.high, feats.max(axis=0))

    def finish(self, sizes: np.ndarray, n_images: int, dead_tol: float) -> LayerProfile:
        assert self.sums is not None
        live = np.flatnonzero(self.high - self.low > dead_tol).astype(np.int64)
        means = self.sums[:, live] / sizes[:, None]
        profile = means - means.mean(axis=0, keepdims=True)
        mean_all = self.total[live] / n_images
        std = np.sqrt(np.maximum(self.total_sq[live] / n_images - np.square(mean_all), 0.0))
        score = profile.max(axis=0) - profile.min(axis=0) if live.size else np.zeros(0)
        order = np.lexsort((live, -score)).astype(np.int64)  # by score, ties by channel index
        return LayerProfile(self.name, self.sums.shape[1], live, means, profile, std, score, order)


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for module, training in modes.items():
        module.training = training


def compute_nap(
    model: nn.Module,
    loader: Iterable[Any],
    label_matrix_or_sets: np.ndarray | Sequence[Iterable[str]],
    label_names: Sequence[str],
    groups: Mapping[str, str] | None = None,
    layers: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    dead_tol: float = 0.0,
) -> NapResult:
    """Activation profiles of ``layers`` (default ``model.nap_layer_names()``) over label-expression groups.

    ``loader`` yields image batches ``[B, 1, H, W]`` (or ``(images, ...)`` tuples) in the order of
    ``label_matrix_or_sets`` (a 0/1 matrix over ``label_names`` or one label set per image). One pass under
    ``torch.no_grad()`` in eval mode; hooks are removed and every module's training flag restored afterwards,
    also on errors. ``progress(n)`` is called with each batch's image count.
    """
    group_set = make_groups(label_matrix_or_sets, label_names, groups)
    modules = _resolve_layers(model, layers)
    masks = group_set.masks
    n_expected = masks.shape[0]
    accumulators = {name: _Accumulator(name) for name in modules}
    batch_feats: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in batch_feats:
                raise ModelError(f"layer {name!r} runs more than once per forward pass; choose a module that runs once")
            batch_feats[name] = _reduce(name, output)

        return hook

    device = model_device(model)
    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
    seen = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                images = batch[0] if isinstance(batch, tuple | list) else batch
                if not isinstance(images, torch.Tensor):
                    raise DataError(f"the loader gave {type(images).__name__}, expected image tensors [B, 1, H, W]")
                size = int(images.shape[0])
                if seen + size > n_expected:
                    raise DataError(f"the loader gives more images than the {n_expected} label rows")
                batch_feats.clear()
                model(images.to(device))
                missing = [name for name in modules if name not in batch_feats]
                if missing:
                    raise ModelError(f"layer(s) {missing} did not run in the forward pass; choose other layers")
                part = masks[seen : seen + size]
                for name, acc in accumulators.items():
                    feats = batch_feats[name].numpy()
                    if feats.shape[0] != size:
                        raise ModelError(f"layer {name!r} output has batch size {feats.shape[0]}, input {size}")
                    acc.add(feats, part)
                seen += size
                if progress is not None:
                    progress(size)
    finally:
        for handle in handles:
            handle.remove()
        batch_feats.clear()
        _restore_modes(modes)
    if seen != n_expected:
        raise DataError(f"the loader gave {seen} images for {n_expected} label rows")
    sizes = masks.sum(axis=0).astype(np.float64)
    result = NapResult(
        group_names=list(group_set.names),
        group_expressions=list(group_set.expressions),
        group_sizes=dict(group_set.sizes),
        empty_groups=list(group_set.empty),
        n_images=seen,
    )
    for name, acc in accumulators.items():
        result.layers[name] = acc.finish(sizes, seen, dead_tol)
    return result


# --------------------------------------------------------------------------------------------------------------
# output: arrays, summary, figures


def npz_arrays(result: NapResult) -> dict[str, np.ndarray]:
    """The arrays of ``nap.npz`` (keys in the module docstring)."""
    arrays: dict[str, np.ndarray] = {
        "layers": np.array(list(result.layers), dtype=str),
        "group_names": np.array(result.group_names, dtype=str),
        "group_expressions": np.array(result.group_expressions, dtype=str),
        "group_sizes": np.array([result.group_sizes[g] for g in result.group_names], dtype=np.int64),
        "n_images": np.array(result.n_images, dtype=np.int64),
    }
    for name, layer in result.layers.items():
        arrays[f"{name}/profile"] = layer.profile
        arrays[f"{name}/group_means"] = layer.group_means
        arrays[f"{name}/live"] = layer.live
        arrays[f"{name}/score"] = layer.score
        arrays[f"{name}/std"] = layer.std
        arrays[f"{name}/order"] = layer.order
        arrays[f"{name}/dead"] = np.array(layer.dead, dtype=np.int64)
        arrays[f"{name}/channels"] = np.array(layer.channels, dtype=np.int64)
    return arrays


def summary_dict(result: NapResult, top_k: int = 20) -> dict[str, Any]:
    """JSON-ready summary: groups (name, expression, size), empty groups, image count, ranking, and per layer
    ``name``, ``channels``, ``dead``, ``live`` and ``top`` (channel, score, std, profile per group)."""
    layers = []
    for name, layer in result.layers.items():
        top = []
        for pos in layer.top(top_k):
            top.append(
                {
                    "channel": int(layer.live[pos]),
                    "score": float(layer.score[pos]),
                    "std": float(layer.std[pos]),
                    "profile": {g: float(layer.profile[i, pos]) for i, g in enumerate(result.group_names)},
                }
            )
        layers.append(
            {"name": name, "channels": layer.channels, "dead": layer.dead, "live": len(layer.live), "top": top}
        )
    return {
        "n_images": result.n_images,
        "groups": [
            {"name": g, "expression": e, "size": result.group_sizes[g]}
            for g, e in zip(result.group_names, result.group_expressions, strict=True)
        ],
        "group_sizes": dict(result.group_sizes),
        "empty_groups": list(result.empty_groups),
        "ranking": RANKING,
        "top_k": top_k,
        "layers": layers,
    }


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _heatmap(
    fig: Figure,
    ax: Any,
    layer: LayerProfile,
    group_names: Sequence[str],
    top_k: int,
    title: str,
    bar_label: str = "mean activation − mean over groups",
) -> None:
    positions = layer.top(top_k)
    ax.set_title(title, fontsize="medium")
    if positions.size == 0:
        ax.text(0.5, 0.5, "no live feature maps", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    values = layer.profile[:, positions]
    limit = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(group_names)), list(group_names))
    ax.set_xticks(range(positions.size), [str(int(c)) for c in layer.live[positions]], rotation=90, fontsize="small")
    ax.set_xlabel("feature map (channel index), most discriminative first")
    fig.colorbar(image, ax=ax, label=bar_label, shrink=0.9)


def layer_figure(result: NapResult, layer_name: str, top_k: int = 20) -> Figure:
    """Heatmap of the ``top_k`` most discriminative maps of one layer (groups x maps, centred on 0)."""
    layer = result.layers[layer_name]
    shown = min(top_k, len(layer.live))
    fig = _new_figure(max(6.0, 0.32 * shown + 4.5), 1.2 + 0.45 * len(result.group_names) + 1.2)
    title = f"{layer_name}: top {shown} of {len(layer.live)} live maps ({layer.dead} dead), {result.n_images} images"
    _heatmap(fig, fig.add_subplot(), layer, _group_labels(result), top_k, title)
    return fig


def overview_figure(result: NapResult, top_k: int = 20) -> Figure:
    """One heatmap row per layer, each with its own colour scale."""
    widest = max((min(top_k, len(layer.live)) for layer in result.layers.values()), default=1)
    row_height = 0.9 + 0.4 * len(result.group_names)
    fig = _new_figure(max(7.0, 0.32 * widest + 4.5), row_height * len(result.layers) + 0.6)
    axes = fig.subplots(len(result.layers), 1, squeeze=False)[:, 0]
    for ax, (name, layer) in zip(axes, result.layers.items(), strict=True):
        title = f"{name} ({len(layer.live)} live, {layer.dead} dead)"
        _heatmap(fig, ax, layer, _group_labels(result), top_k, title, bar_label="profile")
    fig.suptitle(f"Neuron activation profiles (group mean − mean over groups), {result.n_images} images")
    return fig


def _group_labels(result: NapResult) -> list[str]:
    return [f"{g} (n={result.group_sizes[g]})" for g in result.group_names]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "layer"


def _save_figure(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_nap(
    result: NapResult, out_dir: Path, top_k: int = 20, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``nap.npz``, figures and ``summary.json`` (atomically) into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **npz_arrays(result))
    atomic_write_bytes(out_dir / "nap.npz", buffer.getvalue())
    figures = {}
    used: set[str] = set()
    for name in result.layers:
        stem = f"layer_{_slug(name)}"
        while stem in used:
            stem += "_"
        used.add(stem)
        figures[name] = _save_figure(layer_figure(result, name, top_k), out_dir / f"{stem}.png").name
    overview = _save_figure(overview_figure(result, top_k), out_dir / "overview.png").name
    for old in out_dir.glob("layer_*.png"):  # figures of layers from an earlier call with other layers
        if old.name not in figures.values():
            old.unlink()
    summary = {**(extra or {}), **summary_dict(result, top_k)}
    summary["files"] = {"npz": "nap.npz", "summary": "summary.json", "figures": figures, "overview": overview}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------------------------
# on a run folder


def _choose_fold(trained: Sequence[tuple[str, int]], model_name: str, fold: int | None, root: Path) -> int:
    listing = ", ".join(f"{m} fold {f}" for m, f in trained) or "nothing"
    folds = sorted(f for m, f in trained if m == model_name)
    if not folds:
        raise RunError(
            f"{root}: model {model_name!r} is not trained in this run (trained: {listing}); run `cxrlens cv`"
        )
    if fold is None:
        return folds[0]
    if fold not in folds:
        raise RunError(f"{root}: {model_name} fold {fold} is not trained (trained folds of {model_name}: {folds})")
    return fold


def run_nap(
    run_dir: str | Path,
    model_name: str,
    fold: int | None = None,
    layers: Sequence[str] | None = None,
    groups: Mapping[str, str] | None = None,
    images: str = "test",
    top_k: int = 20,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Activation profiles of a trained model of a run, written to ``<run>/nap/<model>/fold<k>/``.

    ``fold``: default the lowest trained fold of ``model_name``. ``images``: ``"test"`` (that fold's test
    images) or ``"all"`` (every image of the splits). Groups use the ground-truth labels. Returns the summary
    (also in ``summary.json``) with ``dir`` (absolute output folder) and ``paths`` (absolute written files).
    """
    from cxrlens.data.splits import fold_files
    from cxrlens.models.checkpoint import load_model
    from cxrlens.run.folder import RunDir
    from cxrlens.train.data import CachedImages, make_loader
    from cxrlens.train.runner import open_study

    if images not in IMAGE_CHOICES:
        raise RunError(f"images must be one of {', '.join(IMAGE_CHOICES)}, not {images!r}")
    if top_k < 1:
        raise RunError(f"top_k must be at least 1, not {top_k}")
    run = RunDir(Path(run_dir))
    cfg = run.read_config()
    label_names = run.label_names()
    for name, expression in (DEFAULT_GROUPS if groups is None else groups).items():
        try:
            parse_expression(expression, label_names)
        except LabelError as err:
            raise type(err)(f"group {name!r}: {err}") from None
    fold = _choose_fold(run.trained(), model_name, fold, run.root)

    study = open_study(cfg, run.root)
    if images == "test":
        files = fold_files(study.splits, fold)["test"]
    else:
        files = list(dict.fromkeys(row.filename for row in study.splits))
    if not files:
        raise RunError(f"{run.root}: fold {fold} has no {images} images")
    index = study.dataset.by_filename()
    dataset = CachedImages([index[f] for f in files], study.space, study.cache)
    model, _ = load_model(run.model_file(model_name, fold), study.space.names)
    loader = make_loader(dataset, study.cfg.train.batch_size, None, study.cfg.train.num_workers)
    result = compute_nap(model, loader, dataset.targets, study.space.names, groups, layers, progress)

    out_dir = run.root / "nap" / model_name / f"fold{fold}"
    extra = {"model": model_name, "fold": fold, "images": images}
    summary = write_nap(result, out_dir, top_k, extra)
    files_written = summary["files"]
    paths = [out_dir / files_written["npz"], out_dir / files_written["summary"]]
    paths += [out_dir / name for name in files_written["figures"].values()]
    paths.append(out_dir / files_written["overview"])
    return {**summary, "dir": str(out_dir), "paths": [str(p) for p in paths]}
