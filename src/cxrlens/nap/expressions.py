"""Groups of images for activation profiles, defined by label expressions over their ground-truth labels.

Expressions: label names joined by ``&`` (and), ``|`` (or), ``!`` (not) and parentheses; ``!`` binds tighter than
``&``, which binds tighter than ``|``. Names may contain spaces and hyphens (``Viral Pneumonia``, ``COVID-19``);
a name holding an operator character can be quoted (``"A & B"``). The default groups are the paper's (§3.4):
COVID-19, pneumonia, pneumonia without COVID-19, neither.

Unknown labels (a source that does not annotate a label; NaN in the label matrix) follow three-valued logic: an
image is in a group only when its labels make the expression certainly true (``!COVID-19`` leaves out an image
whose COVID-19 value is unknown; ``Pneumonia | COVID-19`` keeps one that is positive for Pneumonia).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cxrlens.errors import DataError, LabelError

DEFAULT_GROUPS: dict[str, str] = {
    "COVID-19": "COVID-19",
    "pneumonia": "Pneumonia",
    "pneumonia without COVID-19": "Pneumonia & !COVID-19",
    "neither": "!Pneumonia & !COVID-19",
}


class ExpressionError(LabelError):
    """A group expression is not well formed; the message names the expression and the position."""


Truth = tuple[np.ndarray, np.ndarray]  # (certainly true, certainly false) per image; neither: unknown


class Expr:
    """A parsed label expression; :meth:`evaluate` gives one boolean per image (certainly true)."""

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """``columns``: label name -> values per image (1 positive, 0 negative, NaN unknown)."""
        return self.truth(columns)[0]

    def truth(self, columns: Mapping[str, np.ndarray]) -> Truth:
        raise NotImplementedError

    def labels(self) -> set[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Label(Expr):
    name: str

    def truth(self, columns: Mapping[str, np.ndarray]) -> Truth:
        values = np.asarray(columns[self.name], dtype=float)
        return values == 1, values == 0

    def labels(self) -> set[str]:
        return {self.name}

    def __str__(self) -> str:
        return self.name if not re.search(r"[&|!()\"']", self.name) else '"' + self.name + '"'


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr

    def truth(self, columns: Mapping[str, np.ndarray]) -> Truth:
        true, false = self.operand.truth(columns)
        return false, true

    def labels(self) -> set[str]:
        return self.operand.labels()

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!{inner}" if isinstance(self.operand, Label | Not) else f"!({inner})"


@dataclass(frozen=True)
class And(Expr):
    left: Expr
    right: Expr

    def truth(self, columns: Mapping[str, np.ndarray]) -> Truth:
        (left_true, left_false), (right_true, right_false) = self.left.truth(columns), self.right.truth(columns)
        return left_true & right_true, left_false | right_false

    def labels(self) -> set[str]:
        return self.left.labels() | self.right.labels()

    def __str__(self) -> str:
        parts = [f"({p})" if isinstance(p, Or) else str(p) for p in (self.left, self.right)]
        return " & ".join(parts)


@dataclass(frozen=True)
class Or(Expr):
    left: Expr
    right: Expr

    def truth(self, columns: Mapping[str, np.ndarray]) -> Truth:
        (left_true, left_false), (right_true, right_false) = self.left.truth(columns), self.right.truth(columns)
        return left_true | right_true, left_false & right_false

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
        return matrix.astype(float)  # 1 / 0, NaN where unknown
    index = {name: j for j, name in enumerate(label_names)}
    matrix = np.zeros((len(labels), len(label_names)), dtype=float)
    for i, label_set in enumerate(labels):
        if isinstance(label_set, str):
            raise LabelError(f"labels of image {i} are a string ({label_set!r}); give a set of label names")
        for name in label_set:
            j = index.get(name)
            if j is not None:  # labels outside the label space cannot be named in expressions
                matrix[i, j] = 1.0
    return matrix


def make_groups(
    labels: np.ndarray | Sequence[Iterable[str]],
    label_names: Sequence[str],
    groups: Mapping[str, str] | None = None,
) -> GroupSet:
    """Evaluate group expressions on ground truth (a 0/1 matrix over ``label_names``, NaN where unknown, or label
    sets).

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
