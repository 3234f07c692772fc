"""The label hierarchy: findings become multi-hot vectors with every ancestor set.

A *node* is one component of a finding path (``Viral`` in ``Pneumonia/Viral/COVID-19``). Its
*label name* is what users see: a direct child of ``Pneumonia`` is called ``"<node> Pneumonia"``
("Viral Pneumonia"), every other node keeps its own name. A finding such as
``Pneumonia/Viral/COVID-19;ARDS`` is labelled with its nodes and all their ancestors:
{Pneumonia, Viral Pneumonia, COVID-19, ARDS}.

The tree grows with the data: each collection's own findings (NIH's Effusion, CheXpert's Lung Opacity, ...)
become root nodes unless a tree file or ``labels.extra_nodes`` places them (:meth:`Hierarchy.grow`). A label a
source does not annotate is *unknown* for its images, not negative (:meth:`Hierarchy.unknown_labels`,
:meth:`LabelSpace.known_mask`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cxrlens.errors import LabelError

#: node -> parent node (None for a root). Cohen's later hierarchical labels plus the paper's list.
BUILTIN_PARENTS: dict[str, str | None] = {
    "No Finding": None,
    "Pneumonia": None,
    "ARDS": None,
    "Tuberculosis": None,
    "Viral": "Pneumonia",
    "Bacterial": "Pneumonia",
    "Fungal": "Pneumonia",
    "Lipoid": "Pneumonia",
    "Aspiration": "Pneumonia",
    "COVID-19": "Viral",
    "SARS": "Viral",
    "MERS": "Viral",
    "Influenza": "Viral",
    "Varicella": "Viral",
    "Herpes": "Viral",
    "Streptococcus": "Bacterial",
    "Klebsiella": "Bacterial",
    "Chlamydophila": "Bacterial",
    "Legionella": "Bacterial",
    "E.Coli": "Bacterial",
    "Mycoplasma": "Bacterial",
    "Nocardia": "Bacterial",
    "Staphylococcus": "Bacterial",
    "MRSA": "Staphylococcus",
    "Pneumocystis": "Fungal",
    "Aspergillosis": "Fungal",
}

#: other spellings found in the sources (compared case-insensitively) -> node
BUILTIN_ALIASES: dict[str, str] = {
    "normal": "No Finding",
    "no findings": "No Finding",
    "healthy": "No Finding",
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "sars-cov-2": "COVID-19",
    "mers-cov": "MERS",
    "e. coli": "E.Coli",
    "e.coli": "E.Coli",
    "escherichia coli": "E.Coli",
    "mycoplasma bacterial pneumonia": "Mycoplasma",
    "pneumocystis jirovecii": "Pneumocystis",
    "chlamydia": "Chlamydophila",
    "virus": "Viral",
    "bacteria": "Bacterial",
}

#: the nodes of the paper's tree: what the cxrlens CSV, Cohen's and Kermany's data annotate
PAPER_NODES: frozenset[str] = frozenset(BUILTIN_PARENTS)

#: findings that mean "not labelled yet" in the sources: such rows are dropped, not errors
UNLABELLED_FINDINGS = frozenset({"todo", "unknown", ""})

#: the finding of an image with no positive label (every label it annotates is negative, e.g. COVIDx "negative")
NO_POSITIVE = "(none)"

#: the 14 outputs of the paper's published code (Chatterjee et al., J. Imaging 2024), in that order
PAPER14: tuple[str, ...] = (
    "ARDS",
    "Bacterial Pneumonia",
    "COVID-19",
    "Chlamydophila",
    "Fungal Pneumonia",
    "Klebsiella",
    "Legionella",
    "MERS",
    "No Finding",
    "Pneumocystis",
    "Pneumonia",
    "SARS",
    "Streptococcus",
    "Viral Pneumonia",
)

PRESETS: dict[str, tuple[str, ...]] = {"paper14": PAPER14}

_FLAT_SPLIT = re.compile(r"\s*[;,]\s*")


@dataclass(frozen=True)
class Hierarchy:
    """Parents of every known node plus alternative spellings."""

    parents: Mapping[str, str | None] = field(default_factory=lambda: dict(BUILTIN_PARENTS))
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(BUILTIN_ALIASES))

    @classmethod
    def build(
        cls, extra_nodes: Mapping[str, str | None] | None = None, aliases: Mapping[str, str] | None = None
    ) -> Hierarchy:
        parents = dict(BUILTIN_PARENTS)
        for node, parent in (extra_nodes or {}).items():
            parents[node] = parent
        for node, parent in parents.items():
            if parent is not None and parent not in parents:
                raise LabelError(f"label hierarchy: parent {parent!r} of {node!r} is not a known node")
        merged = dict(BUILTIN_ALIASES)
        merged.update({k.strip().lower(): v for k, v in (aliases or {}).items()})
        hierarchy = cls(parents=parents, aliases=merged)
        hierarchy._check_acyclic()
        return hierarchy

    def _check_acyclic(self) -> None:
        for node in self.parents:
            seen = {node}
            parent = self.parents[node]
            while parent is not None:
                if parent in seen:
                    raise LabelError(f"label hierarchy has a cycle through {node!r}")
                seen.add(parent)
                parent = self.parents.get(parent)

    # -- names -------------------------------------------------------------------------------
    def label_name(self, node: str) -> str:
        return f"{node} Pneumonia" if self.parents.get(node) == "Pneumonia" else node

    def ancestors(self, node: str) -> list[str]:
        """The node and all its ancestors, root last."""
        chain = [node]
        parent = self.parents.get(node)
        while parent is not None:
            chain.append(parent)
            parent = self.parents.get(parent)
        return chain

    def parent_label(self, label: str) -> str | None:
        """Label name of the parent of a label name (None for a root or an unknown label)."""
        node = self._node_of_label().get(label)
        if node is None:
            return None
        parent = self.parents.get(node)
        return None if parent is None else self.label_name(parent)

    def _node_of_label(self) -> dict[str, str]:
        return self._label_nodes

    @cached_property
    def _label_nodes(self) -> dict[str, str]:
        return {self.label_name(node): node for node in self.parents}

    @cached_property
    def _lower_nodes(self) -> tuple[dict[str, str], dict[str, str]]:
        by_lower = {node.lower(): node for node in self.parents}
        by_label = {label.lower(): node for label, node in self._label_nodes.items()}
        return by_lower, by_label

    @cached_property
    def _descendants(self) -> dict[str, frozenset[str]]:
        below: dict[str, set[str]] = {node: set() for node in self.parents}
        for node in self.parents:
            for ancestor in self.ancestors(node)[1:]:
                below[ancestor].add(node)
        return {node: frozenset(nodes) for node, nodes in below.items()}

    def node(self, name: str) -> str | None:
        """The node a spelling names (node, label name or alias, any case), or None."""
        return self._lookup(name)

    def label_names(self) -> list[str]:
        """Every label name of the tree, in node order."""
        return [self.label_name(node) for node in self.parents]

    def _lookup(self, name: str) -> str | None:
        text = name.strip()
        if text in self.parents:
            return text
        lowered = text.lower()
        by_lower, by_label = self._lower_nodes
        if lowered in by_lower:
            return by_lower[lowered]
        if lowered in by_label:
            return by_label[lowered]
        target = self.aliases.get(lowered)
        if target is None:
            return None
        if "/" in target or ";" in target:
            raise LabelError(f"alias {name!r} must map to one node, not the path {target!r}")
        return self._lookup(target) if target.lower() != lowered else None

    # -- growing -----------------------------------------------------------------------------
    def grow(self, names: Iterable[str]) -> Hierarchy:
        """This tree plus a root node for every name it does not know (a collection's own findings).

        A name that is an alias of a node the tree lacks adds that node (so ``Pleural Effusion -> Effusion``
        makes ``Effusion`` a node even without NIH's data).
        """
        parents = dict(self.parents)
        grown = self
        for name in names:
            text = name.strip()
            if not text or grown.node(text) is not None:
                continue
            if any(sep in text for sep in "/;,"):
                raise LabelError(f"label {text!r}: a node name cannot hold '/', ';' or ','")
            target = self.aliases.get(text.lower())
            new = target if target and not any(sep in target for sep in "/;,") else text
            parents[new] = None
            grown = Hierarchy(parents=dict(parents), aliases=self.aliases)
        return grown

    # -- unknown values ----------------------------------------------------------------------
    def unknown_labels(self, annotated: Iterable[str], positives: Iterable[str]) -> frozenset[str]:
        """Label names whose value is not known for an image with these ``positives`` (label names, ancestors
        included) from a source that annotates the ``annotated`` nodes.

        Known are: the annotated nodes, every positive label, and every descendant of an annotated negative
        node (no pneumonia means no viral pneumonia). Everything else is unknown, never a positive label.
        """
        label_nodes = self._label_nodes
        positive_nodes = {label_nodes[name] for name in positives if name in label_nodes}
        annotated_nodes = {node for node in annotated if node in self.parents}
        known = positive_nodes | annotated_nodes
        for node in annotated_nodes - positive_nodes:
            known |= self._descendants[node]
        return frozenset(self.label_name(node) for node in self.parents if node not in known)

    # -- findings ----------------------------------------------------------------------------
    def is_unlabelled(self, finding: str) -> bool:
        return finding.strip().lower() in UNLABELLED_FINDINGS

    def resolve(self, finding: str) -> frozenset[str]:
        """Label names (with every ancestor) of a finding string; raises LabelError if unknown.

        Accepts hierarchical paths joined by ``;`` (``Pneumonia/Viral/COVID-19;ARDS``), Cohen's
        older flat labels joined by ``,`` (``COVID-19, ARDS``), label names ("Viral Pneumonia")
        and the aliases in the hierarchy. ``(none)`` (:data:`NO_POSITIVE`) is an image with no positive label.
        """
        text = finding.strip()
        if text == NO_POSITIVE:
            return frozenset()
        whole_alias = self.aliases.get(text.lower())
        if whole_alias is not None and ("/" in whole_alias or ";" in whole_alias):
            text = whole_alias
        parts = [p for p in _FLAT_SPLIT.split(text) if p]
        if not parts:
            raise LabelError(f"empty finding {finding!r}")
        labels: set[str] = set()
        for part in parts:
            for node in self._resolve_part(part, finding):
                labels.update(self.label_name(n) for n in self.ancestors(node))
        return frozenset(labels)

    def _resolve_part(self, part: str, finding: str) -> list[str]:
        if "/" not in part:
            node = self._lookup(part)
            if node is None:
                raise LabelError(f"unknown finding {part!r} (in {finding!r})")
            return [node]
        components = [c.strip() for c in part.split("/") if c.strip()]
        nodes: list[str] = []
        for comp in components:
            node = self._lookup(comp)
            if node is None:
                raise LabelError(f"unknown finding {comp!r} (in {finding!r})")
            nodes.append(node)
        for parent, child in itertools.pairwise(nodes):
            if self.parents.get(child) != parent:
                actual = "/".join(reversed(self.ancestors(child)))
                raise LabelError(f"finding {finding!r}: {child!r} is not under {parent!r} (known as {actual!r})")
        return nodes

    # -- consistency ---------------------------------------------------------------------------
    def edges(self, label_names: Sequence[str]) -> list[tuple[int, int]]:
        """(child index, parent index) pairs among the given label names."""
        index = {name: i for i, name in enumerate(label_names)}
        pairs = []
        for name, i in index.items():
            parent = self.parent_label(name)
            if parent is not None and parent in index:
                pairs.append((i, index[parent]))
        return pairs

    def violations(self, label_names: Sequence[str], vector: Sequence[float] | np.ndarray) -> list[str]:
        """Children that are positive while their parent is not: ["COVID-19 without Viral Pneumonia"]."""
        values = np.asarray(vector).astype(bool)
        return [
            f"{label_names[c]} without {label_names[p]}"
            for c, p in self.edges(label_names)
            if values[c] and not values[p]
        ]

    def is_consistent(self, label_names: Sequence[str], vector: Sequence[float] | np.ndarray) -> bool:
        return not self.violations(label_names, vector)

    def consistency_rate(self, label_names: Sequence[str], matrix: np.ndarray) -> float:
        """Share of rows (label vectors) that respect the hierarchy; 1.0 for an empty matrix."""
        binary = np.asarray(matrix).astype(bool)
        if binary.size == 0:
            return 1.0
        bad = np.zeros(binary.shape[0], dtype=bool)
        for c, p in self.edges(label_names):
            bad |= binary[:, c] & ~binary[:, p]
        return float(1.0 - bad.mean())


@dataclass(frozen=True)
class LabelSpace:
    """The ordered label names a model predicts."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise LabelError(f"duplicate label names in {list(self.names)}")
        if not self.names:
            raise LabelError("a label space needs at least one label")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise LabelError(f"unknown label {name!r}; valid: {', '.join(self.names)}") from None

    def encode(self, labels: Iterable[str]) -> np.ndarray:
        vector = np.zeros(len(self.names), dtype=np.float32)
        wanted = set(labels)
        for i, name in enumerate(self.names):
            if name in wanted:
                vector[i] = 1.0
        return vector

    def encode_many(self, label_sets: Iterable[Iterable[str]]) -> np.ndarray:
        rows = [self.encode(s) for s in label_sets]
        if not rows:
            return np.zeros((0, len(self.names)), dtype=np.float32)
        return np.stack(rows)

    def known_mask(self, label_sets_unknown: Iterable[frozenset[str]]) -> np.ndarray:
        """Images x labels, bool: True where the label's value is known (False: mask it out of losses/metrics).

        Takes each image's unknown label names (``ImageRecord.unknown``), in the order of :meth:`encode_many`.
        """
        rows = [[name not in unknown for name in self.names] for unknown in label_sets_unknown]
        if not rows:
            return np.zeros((0, len(self.names)), dtype=bool)
        return np.asarray(rows, dtype=bool)


def label_counts(label_sets: Iterable[Iterable[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for labels in label_sets:
        for name in labels:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def choose_labels(
    label_sets: Sequence[Iterable[str]],
    preset: str = "auto",
    names: Sequence[str] | None = None,
    min_images: int = 10,
) -> tuple[LabelSpace, dict[str, int]]:
    """Pick the label space and report labels below ``min_images`` (name -> image count).

    ``names`` wins over ``preset``. ``preset="auto"`` keeps, in alphabetical order, every label with
    at least ``min_images`` images; a named preset keeps its list and only reports rare labels.
    """
    counts = label_counts(label_sets)
    if names:
        chosen = tuple(names)
    elif preset == "auto":
        chosen = tuple(sorted(n for n, c in counts.items() if c >= min_images))
        if not chosen:
            raise LabelError(f"no label has at least {min_images} images; lower labels.min_images")
    elif preset in PRESETS:
        chosen = PRESETS[preset]
    else:
        raise LabelError(f"unknown label preset {preset!r}; valid: auto, {', '.join(PRESETS)}")
    rare = {n: counts.get(n, 0) for n in sorted(set(chosen) | set(counts)) if counts.get(n, 0) < min_images}
    return LabelSpace(chosen), rare
