"""The report tests' runs: a tiny trained run with every part, and one with hostile names (built per module)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.report.runs import build_tiny_run, build_xss_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny trained run: a report before anything else, then evaluation, explanations, NAP, xai, audit, an external
    set, and a report."""
    return build_tiny_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def xss_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A run whose data holds a file name with a script tag, and a finding and patient ids with markup and quotes."""
    return build_xss_run(tmp_path_factory.mktemp("xss"))
