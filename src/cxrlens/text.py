"""The one slug and the one number formatter used in file names, tables, the report and the command line."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
UNDEFINED = "n/a"


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text``: ``COVID-19`` stays, ``Viral Pneumonia`` -> ``Viral-Pneumonia-<hash>``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``-``; when anything was replaced or
    cut, six hex digits of the text's SHA-1 are appended, so two different texts never share a slug.
    """
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "x"
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    return f"{cleaned[:limit]}-{digest}"


def number(value: Any) -> float | None:
    """A finite float, or None for null, NaN, infinity, booleans and text."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 3) -> str:
    """``digits`` decimals; a non-zero value too small for them in scientific notation; ``n/a`` if undefined."""
    out = number(value)
    if out is None:
        return UNDEFINED
    if out != 0 and abs(out) < 0.5 * 10.0**-digits:
        return f"{out:.{max(1, digits - 2)}e}"
    return f"{out:.{digits}f}"


def fmt_mean_std(stat: Mapping[str, Any], digits: int = 3) -> str:
    """``0.854 ± 0.008``; ``0.854 ± n/a`` when the spread is undefined (fewer than two folds); ``n/a``."""
    mean = number(stat.get("mean"))
    if mean is None:
        return UNDEFINED
    return f"{fmt(mean, digits)} ± {fmt(stat.get('std'), digits)}"


def fmt_ci(mean: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``0.61 [0.52, 0.70]``; the mean alone without an interval; ``n/a``."""
    if number(mean) is None:
        return UNDEFINED
    if number(low) is None or number(high) is None:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"
