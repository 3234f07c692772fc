"""The configured label tree: the paper's hierarchy plus a YAML tree file plus ``labels.extra_nodes``/``aliases``.

A tree file (``labels.tree``, example and format: ``configs/label-tree.yaml``) has two optional mappings::

    nodes:                      # node: parent node (null: a root); a known node given here is moved
      Lung Opacity: null
      Consolidation: Lung Opacity
      Pneumonia: Consolidation
    aliases:                    # another spelling (any case): node
      Pleural Effusion: Effusion

``labels.extra_nodes`` and ``labels.aliases`` of the study config are applied after the file (they win).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxrlens.config import LabelConfig, read_yaml
from cxrlens.data.labels import Hierarchy
from cxrlens.errors import ConfigError, LabelError

TREE_KEYS = ("nodes", "aliases")


@dataclass(frozen=True)
class TreeFile:
    nodes: dict[str, str | None] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def read_tree(path: str | Path) -> TreeFile:
    """The nodes and aliases of a YAML tree file; a ConfigError names what is wrong."""
    path = Path(path)
    data = read_yaml(path, "label tree file not found (labels.tree)")
    if data is None:
        return TreeFile()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with {' and/or '.join(TREE_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in TREE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (a tree file has {', '.join(TREE_KEYS)})")
    nodes = _mapping(path, "nodes", data.get("nodes"), allow_null=True)
    aliases = _mapping(path, "aliases", data.get("aliases"), allow_null=False)
    return TreeFile(nodes=nodes, aliases={k: str(v) for k, v in aliases.items()})


def _mapping(path: Path, key: str, value: object, allow_null: bool) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must be a mapping (name: {'parent' if allow_null else 'node'})")
    out: dict[str, str | None] = {}
    for name, target in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: {key}: {name!r} is not a name")
        if target is None and allow_null:
            out[name.strip()] = None
        elif isinstance(target, str) and target.strip():
            out[name.strip()] = target.strip()
        else:
            raise ConfigError(f"{path}: {key}: {name!r} maps to {target!r}, expected a node name")
    return out


def configured_hierarchy(labels: LabelConfig) -> Hierarchy:
    """The paper's hierarchy + ``labels.tree`` + ``labels.extra_nodes``/``aliases`` (before the data grows it)."""
    tree = read_tree(labels.tree) if labels.tree else TreeFile()
    nodes = {**tree.nodes, **labels.extra_nodes}
    aliases = {**tree.aliases, **labels.aliases}
    try:
        return Hierarchy.build(nodes, aliases)
    except LabelError as err:
        where = f"{labels.tree}: " if labels.tree else ""
        raise ConfigError(f"{where}{err}") from None
