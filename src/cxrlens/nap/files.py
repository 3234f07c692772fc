"""What `cxrlens nap` writes for one model and fold (the paths are :class:`~cxrlens.run.layout.NapFiles`):

* ``nap.npz``: ``layers``, ``group_names``, ``group_expressions``, ``group_sizes`` (non-empty groups, in
  order), ``n_images``, and per layer ``<layer>/profile`` ``[G, n_live]``, ``<layer>/group_means``
  ``[G, n_live]``, ``<layer>/live`` ``[n_live]`` (channel indices), ``<layer>/score`` ``[n_live]`` (spread),
  ``<layer>/std`` ``[n_live]``, ``<layer>/order`` ``[n_live]`` (positions into ``live``, most discriminative
  first), ``<layer>/dead`` and ``<layer>/channels`` (scalars). String arrays are unicode: no pickle needed.
* ``summary.json``: ``model``, ``fold``, ``images``, ``n_images``, ``groups`` (name, expression, size of the
  non-empty ones), ``group_sizes`` (all, empty ones 0), ``empty_groups``, ``ranking``, ``top_k``, ``layers``
  (per layer ``name``, ``channels``, ``dead``, ``live`` and ``top``: ``channel``, ``score``, ``std``,
  ``profile`` {group: value}) and ``files`` (``npz``, ``summary``, ``figures`` {layer: png}, ``overview``).
* a heatmap per layer (the ``top_k`` maps: groups as rows, channel indices as columns, diverging colours
  centred on 0) and ``overview.png`` (every layer).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cxrlens.figures import new_figure, save_figure
from cxrlens.fileio import atomic_write_bytes, write_json
from cxrlens.nap.profiles import RANKING, LayerProfile, NapResult
from cxrlens.run.layout import NapFiles


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
    fig = new_figure(max(6.0, 0.32 * shown + 4.5), 1.2 + 0.45 * len(result.group_names) + 1.2, constrained=True)
    title = f"{layer_name}: top {shown} of {len(layer.live)} live maps ({layer.dead} dead), {result.n_images} images"
    _heatmap(fig, fig.add_subplot(), layer, _group_labels(result), top_k, title)
    return fig


def overview_figure(result: NapResult, top_k: int = 20) -> Figure:
    """One heatmap row per layer, each with its own colour scale."""
    widest = max((min(top_k, len(layer.live)) for layer in result.layers.values()), default=1)
    row_height = 0.9 + 0.4 * len(result.group_names)
    fig = new_figure(max(7.0, 0.32 * widest + 4.5), row_height * len(result.layers) + 0.6, constrained=True)
    axes = fig.subplots(len(result.layers), 1, squeeze=False)[:, 0]
    for ax, (name, layer) in zip(axes, result.layers.items(), strict=True):
        title = f"{name} ({len(layer.live)} live, {layer.dead} dead)"
        _heatmap(fig, ax, layer, _group_labels(result), top_k, title, bar_label="profile")
    fig.suptitle(f"Neuron activation profiles (group mean − mean over groups), {result.n_images} images")
    return fig


def _group_labels(result: NapResult) -> list[str]:
    return [f"{g} (n={result.group_sizes[g]})" for g in result.group_names]


def write_nap(
    result: NapResult, files: NapFiles, top_k: int = 20, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``nap.npz``, figures and ``summary.json`` (atomically) into ``files.root``; returns the summary."""
    files.root.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **npz_arrays(result))
    atomic_write_bytes(files.npz, buffer.getvalue())
    figures = {}
    for name in result.layers:
        figures[name] = save_figure(layer_figure(result, name, top_k), files.layer_figure(name)).name
    overview = save_figure(overview_figure(result, top_k), files.overview).name
    for old in files.layer_figures():  # figures of layers from an earlier call with other layers
        if old.name not in figures.values():
            old.unlink()
    summary = {**(extra or {}), **summary_dict(result, top_k)}
    summary["files"] = {"npz": files.npz.name, "summary": files.summary.name, "figures": figures, "overview": overview}
    write_json(files.summary, summary)
    return summary
