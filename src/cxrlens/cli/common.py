"""Shared CLI helpers: consoles, progress bars, the allocator setting."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def tune_allocator() -> None:
    """Keep large activations in glibc's heap instead of fresh mmaps (1.2-2.7x faster batched work on a
    2-core CPU; README, "Benchmarks").

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
