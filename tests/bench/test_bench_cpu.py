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


@pytest.mark.slow
def test_cpu_per_operation_on_postgresql_counts_the_server_too() -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cpu",
            "revoke",
            "--count",
            "400",
            "--duration",
            "3",
            "--database",
            "postgresql",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["scenario"] == "revoke"
    assert row["n"] == 400 and row["errors"] == 0
    assert row["cpu_us_per_op"] > 0  # the workers did the revocations
    assert row["db_cpu_us_per_op"] > 0  # and the server's backends wrote them
