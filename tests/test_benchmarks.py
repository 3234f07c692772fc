"""`make bench` keeps working: every benchmark of the suite runs to the end in its quick mode (seconds each).

No timing is checked (the suite's numbers are measurements, never thresholds); only that every script runs,
exits 0 and that the document gets its machine, targets and one section per benchmark.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "suite.py"


@pytest.mark.slow
def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    listing = subprocess.run(
        [sys.executable, str(SUITE), "--list", "--quick"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    listed = [line.split()[0] for line in listing.stdout.splitlines()]
    assert "explain-cost" in listed and "predict" in listed
    env = {k: v for k, v in os.environ.items() if k != "CXRLENS_DATA"}  # the embedded sample: quick everywhere
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--quick", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    states = dict(re.findall(r"^\[suite\] (\S+): (exit -?\d+|timed out) after", done.stderr, re.M))
    assert states == dict.fromkeys(listed, "exit 0"), done.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    assert "## Machine" in text and "## Targets" in text
    assert "stopped at its time limit" not in text and "Exit code" not in text
