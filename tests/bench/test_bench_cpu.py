"""``python -m bench.cpu`` runs a scenario and reports the workers' CPU per operation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_per_operation_of_a_write_path() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "release", "--count", "300", "--duration", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["scenario"] == "release"
    assert row["n"] == 300 and row["errors"] == 0
    assert row["cpu_us_per_op"] > 0  # the workers did the releases
