"""What every section of the report shares: the "not computed yet" part, reading a stage's JSON result, tolerant
access to JSON values, the best of a column, fold counts beside a mean ± std, intervals, signed changes and shares.

Each section is a plain dict for the template with ``available`` (bool) and, when the part is missing or
damaged, ``missing``: the sentence the report shows (naming the command that computes it). Text values are kept
as they are in the data files; the template escapes them (Jinja2 autoescape).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrlens.errors import RunError
from cxrlens.fileio import json_text
from cxrlens.run.folder import Run
from cxrlens.text import UNDEFINED, fmt, fmt_ci, fmt_mean_std, number


def missing(text: str) -> dict[str, Any]:
    return {"available": False, "missing": text}


def read_part(run: Run, path: Path, command: str) -> dict[str, Any] | str:
    """A stage's JSON result, or the sentence saying why it is missing (absent, damaged, not an object).

    ``command`` computes the result (named in the sentence, e.g. ``cxrlens evaluate --run RUN``).
    """
    try:
        data = run.read_result(path)
    except RunError as err:  # damaged JSON or not an object: the message names the file
        return f"{err}: run `{command}`"
    return f"not computed yet: run `{command}`" if data is None else data


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a part written by an older or newer cxrlens)."""
    return value if isinstance(value, dict) else {}


def rows_of(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else: none)."""
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def strings(value: Any) -> list[str]:
    """The items of a JSON list as text (null items left out; anything but a list: none)."""
    return [str(v) for v in value if v is not None] if isinstance(value, list) else []


def ci_text(value: Any, interval: Any, digits: int = 3) -> str:
    """``0.610 [0.520, 0.700]`` from a value and its ``[low, high]`` (the value alone without an interval)."""
    low, high = interval if isinstance(interval, (list, tuple)) and len(interval) == 2 else (None, None)
    return fmt_ci(value, low, high, digits)


def signed(value: Any, digits: int = 3) -> str:
    """A change with its sign: ``+0.050``, ``-0.120``, ``0.000``; ``n/a`` if undefined."""
    out = number(value)
    return fmt(out, digits) if out is None or out <= 0 else "+" + fmt(out, digits)


def percent(share: Any) -> str:
    """``0.37`` -> ``37 %``; a part is never rounded up to ``100 %`` or down to ``0 %``; ``n/a`` if undefined."""
    out = number(share)
    if out is None:
        return UNDEFINED
    value = round(100 * out)
    if value == 100 and out < 1:
        return "99 %"
    if value == 0 and out > 0:
        return "<1 %"
    return f"{value} %"


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies inside the folder ``root`` (after resolving links and ``..``)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def best_keys(values: Mapping[str, float | None]) -> set[str]:
    """Keys with the largest value; none when fewer than two are defined or every value ties."""
    finite = {k: v for k, v in values.items() if v is not None}
    if len(finite) < 2:
        return set()
    top = max(finite.values())
    best = {k for k, v in finite.items() if v >= top - 1e-12}
    return set() if len(best) == len(finite) else best


def stat_text(stat: Any, n_folds: Any) -> str:
    """``mean ± std`` over folds, with ``(k/n folds)`` when the value is defined in fewer than all ``n`` folds.

    A summary stat is ``{"mean", "std", "n"}`` with ``n`` the number of folds where the value is defined (the
    mean is over those folds; the std is undefined with fewer than two): "1.000 ± n/a (1/3 folds)".
    """
    stat = as_dict(stat)
    text = fmt_mean_std(stat)
    n = stat.get("n")
    if text == UNDEFINED or not isinstance(n, int) or isinstance(n, bool) or not isinstance(n_folds, int):
        return text
    return f"{text} ({n}/{n_folds} folds)" if n < n_folds else text


def fmt_values(value: Any) -> str:
    """A number, or a list of numbers (e.g. one per randomisation step), with :func:`cxrlens.text.fmt`."""
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or UNDEFINED
    return fmt(value)


def text_of(value: Any) -> str:
    """A setting or version as one line of text (lists joined, objects as sorted JSON, null as n/a)."""
    if value is None:
        return UNDEFINED
    if isinstance(value, (list, tuple)):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        return json_text(dict(sorted(value.items())), indent=None)
    return str(value)


def texts(mapping: Any) -> dict[str, str]:
    """A JSON object as name -> :func:`text_of` (anything else: empty)."""
    return {str(k): text_of(v) for k, v in mapping.items()} if isinstance(mapping, Mapping) else {}


def relative(run: Run, path: Path) -> str:
    """``path`` inside the run folder, as the report shows it (``evaluation/figures``)."""
    try:
        return path.relative_to(run.root).as_posix()
    except ValueError:
        return str(path)
