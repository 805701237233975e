"""`python -m bench.propagation --database sqlite` runs end to end: two workers, a
connection to each, revocations through one refused by the other (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("wake", [True, False])
def test_propagation_between_sqlite_workers_runs(wake: bool) -> None:
    args = [sys.executable, "-m", "bench.propagation", "--database", "sqlite", "--count", "3"]
    proc = subprocess.run(
        [*args, *([] if wake else ["--no-wake"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["database"] == "sqlite"
    assert result["wake"] is wake
    assert result["revocations"] == 3
    for measure in ("from_commit", "from_call"):
        assert 0 <= result[measure]["p50_ms"] <= result[measure]["max_ms"]
