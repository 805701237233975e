"""`python -m bench.auditquery --quick` runs end to end (no timing assertions): it fills a
log past the lookups' lag, so both the lookups and the log's own tail are read, and times
every query."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_audit_query_benchmark_runs() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "bench.auditquery", "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    figures = json.loads(ran.stdout.strip().splitlines()[-1])
    assert figures["events"] == 20_000
    assert figures["lookups_behind"] == 4_000  # the queries read the log's tail as well
    timed = {k: v for k, v in figures.items() if k not in ("events", "fill_s", "lookups_behind")}
    assert len(timed) == 10
    assert all(isinstance(v, float) and v > 0 for v in timed.values())
