"""cxrlens model checkpoints: weights plus what they mean (model, labels, preprocessing, version).

Saved atomically; loaded with ``torch.load(weights_only=True)``. A checkpoint whose labels do not match
the data it is used with is refused.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cxrlens.errors import ModelError
from cxrlens.fileio import atomic_write_bytes, sha256_file
from cxrlens.models.registry import CxrClassifier, create_model
from cxrlens.models.weights import read_state_file
from cxrlens.version import __version__

FORMAT = "cxrlens-model/1"


def save_model(model: CxrClassifier, path: str | Path, preprocess: dict[str, Any], **extra: Any) -> str:
    """Write ``model`` with its metadata; returns the file's sha256 (first 16 hex digits)."""
    meta = {
        "format": FORMAT,
        "version": __version__,
        "model": model.model_name,
        "label_names": list(model.label_names),
        "in_chans": model.in_chans,
        "input_norm": model.input_norm,
        "preprocess": preprocess,
        **extra,
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"cxrlens": meta, "state_dict": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return sha256_file(path)[:16]


def read_meta(path: str | Path) -> dict[str, Any]:
    obj = read_state_file(path)
    meta = obj.get("cxrlens")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a cxrlens model checkpoint (no '{FORMAT}' metadata)")
    return meta


def load_model(path: str | Path, label_names: Sequence[str] | None = None) -> tuple[CxrClassifier, dict[str, Any]]:
    """Rebuild the model of a checkpoint; refuses it if ``label_names`` differ from the checkpoint's."""
    obj = read_state_file(path)
    meta = obj.get("cxrlens")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a cxrlens model checkpoint (no '{FORMAT}' metadata)")
    check_labels(meta["label_names"], label_names, str(path))
    model = create_model(
        meta["model"],
        label_names=meta["label_names"],
        in_chans=int(meta.get("in_chans", 3)),
        input_norm=str(meta.get("input_norm", "none")),
    )
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise ModelError(f"{path}: weights do not fit {meta['model']} ({str(err).splitlines()[0]})") from None
    model.eval()
    return model, meta


def check_labels(checkpoint_labels: Sequence[str], data_labels: Sequence[str] | None, where: str) -> None:
    if data_labels is None or list(checkpoint_labels) == list(data_labels):
        return
    missing = [n for n in data_labels if n not in checkpoint_labels]
    extra = [n for n in checkpoint_labels if n not in data_labels]
    detail = []
    if missing:
        detail.append(f"data has {missing} that the checkpoint lacks")
    if extra:
        detail.append(f"checkpoint has {extra} that the data lacks")
    if not detail:
        detail.append("same labels in another order")
    raise ModelError(f"{where}: checkpoint labels do not match the data ({'; '.join(detail)})")
