"""cxrlens: train, compare and explain chest X-ray classifiers."""

from __future__ import annotations

__version__ = "0.1.0"
