"""`python -m bench.pgcommit --quick` runs end to end on a throwaway PostgreSQL cluster (no
timing assertions): every kind of commit is measured and every notification arrives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_commit_rate_benchmark_runs() -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    ran = subprocess.run(
        [sys.executable, "-m", "bench.pgcommit", "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    figures = json.loads(ran.stdout.strip().splitlines()[-1])
    assert figures["settings"]["fsync"] == "on"
    assert figures["settings"]["synchronous_commit"] == "on"
    for kind in ("single", "batched", "chained"):
        assert figures[kind] and all(row["commits_per_s"] > 0 for row in figures[kind])
    assert all(row["rows"] > 0 for row in figures["batched"] + figures["chained"])
    assert figures["notify"] and all(row["missing"] == 0 for row in figures["notify"])
