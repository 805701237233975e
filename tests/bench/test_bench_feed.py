"""`python -m bench.feed` runs end to end: a broker, an offline verifier following its
revocation feed, revocations on the broker refused by the verifier (no timing assertions)."""

import pytest
from tests.bench._bench import last_json, run_module


@pytest.mark.slow
@pytest.mark.parametrize("level", ["token", "agent"])
def test_revocation_to_an_offline_verifier_runs(level: str) -> None:
    result = last_json("bench.feed", "--count", "4", "--level", level, timeout=120)
    assert result["count"] == 4
    assert result["level"] == level
    assert 0 <= result["from_answer_p50_ms"] <= result["from_answer_max_ms"]
    assert result["from_call_p50_ms"] >= result["from_answer_p50_ms"]


def test_a_count_below_one_is_refused() -> None:
    ran = run_module("bench.feed", "--count", "0", timeout=60)
    assert ran.returncode == 2
    assert "--count must be at least 1" in ran.stderr
