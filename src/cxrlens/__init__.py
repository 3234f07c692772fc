"""cxrlens: train, compare and explain chest X-ray classifiers.

``cxrlens.create_model(name, num_labels=14, weights="none")`` builds any registered backbone;
``cxrlens.attribution.prepare_model(model)`` readies one for captum. Heavy modules load on first use.
"""

from __future__ import annotations

from typing import Any

from cxrlens.version import __version__

__all__ = ["__version__", "create_model", "model_names"]


def __getattr__(name: str) -> Any:  # lazy: `cxrlens data ...` does not pay for importing torch
    if name in ("create_model", "model_names"):
        from cxrlens.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cxrlens' has no attribute {name!r}")
