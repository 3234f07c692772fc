"""Shared CLI helpers: console, progress bars, option resolution."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cxrlens.config import DataConfig, load_yaml, validate

# piped output is not cut to 80 columns (rich's default off a terminal)
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar with ETA on stderr; yields ``advance(n)``."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def default_sources(data: list[str] | None) -> list[str]:
    """Explicit --data, else $CXRLENS_DATA, else the embedded sample."""
    if data:
        return data
    env = os.environ.get("CXRLENS_DATA")
    return [env] if env else ["@sample"]


def data_config(
    config: Path | None,
    data: list[str] | None,
    overrides: dict[str, Any] | None = None,
) -> DataConfig:
    """The ``data:`` part of a study config (if any), with CLI options applied on top."""
    raw: dict[str, Any] = {}
    if config is not None:
        raw = dict(load_yaml(config).get("data") or {})
    if data or "sources" not in raw:
        raw["sources"] = default_sources(data)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate(DataConfig, raw, str(config) if config else "options")


def tune_allocator() -> None:
    """Keep large activations in glibc's heap instead of fresh mmaps (reference.md §9: 1.2-2.7x).

    Called once by the CLI entry point, before tensors exist; a no-op off glibc or when the user
    already set GLIBC_TUNABLES / CXRLENS_NO_MALLOPT.
    """
    if os.environ.get("CXRLENS_NO_MALLOPT") or "GLIBC_TUNABLES" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (macOS, musl, Windows): nothing to tune
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)  # largest int: never give the heap back
