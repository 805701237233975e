"""`python -m bench.feed` runs end to end: a broker, an offline verifier following its
revocation feed, revocations on the broker refused by the verifier (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("level", ["token", "agent"])
def test_revocation_to_an_offline_verifier_runs(level: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.feed", "--count", "4", "--level", level],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["count"] == 4
    assert result["level"] == level
    assert 0 <= result["from_answer_p50_ms"] <= result["from_answer_max_ms"]
    assert result["from_call_p50_ms"] >= result["from_answer_p50_ms"]


def test_a_count_below_one_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.feed", "--count", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--count must be at least 1" in proc.stderr
