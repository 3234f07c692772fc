"""prefetch: work per item done ahead in worker processes, in order, errors raised as they were."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrlens.errors import ImageReadError, RunError
from cxrlens.run.stream import prefetch


def _square_and_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def _fail_on_seven(n: int) -> int:
    if n == 7:
        raise ImageReadError(Path(f"/data/img{n}.png"), "not an image (truncated PNG)")
    return n


@pytest.mark.parametrize("workers", [0, 2])
def test_items_come_back_in_order_with_their_values(workers: int) -> None:
    items = list(range(40))
    out = list(prefetch(items, _square_and_pid, workers=workers))
    assert [item for item, _ in out] == items
    assert [value for _, (value, _pid) in out] == [n * n for n in items]
    pids = {pid for _, (_value, pid) in out}
    assert (pids == {os.getpid()}) if workers == 0 else (os.getpid() not in pids)


def test_a_handful_of_items_stays_in_the_calling_process() -> None:
    out = list(prefetch([1, 2, 3], _square_and_pid))
    assert {pid for _, (_value, pid) in out} == {os.getpid()}


@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_is_raised_as_is_when_its_turn_comes(workers: int) -> None:
    seen = []
    with pytest.raises(ImageReadError) as caught:
        for item, value in prefetch(list(range(20)), _fail_on_seven, workers=workers):
            seen.append((item, value))
    assert seen == [(n, n) for n in range(7)]
    assert str(caught.value) == "/data/img7.png: not an image (truncated PNG)"
    assert caught.value.reason == "not an image (truncated PNG)"


def _run_error(n: int) -> int:
    raise RunError(f"item {n}: gone")


def test_other_cxrlens_errors_keep_their_type_and_message() -> None:
    with pytest.raises(RunError, match=r"^item 0: gone$"):
        list(prefetch(list(range(20)), _run_error, workers=2))
