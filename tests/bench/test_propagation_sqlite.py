"""`python -m bench.propagation --database sqlite` runs end to end: two workers, a
connection to each, revocations through one refused by the other (no timing assertions)."""

import pytest
from tests.bench._bench import last_json


@pytest.mark.slow
@pytest.mark.parametrize("wake", [True, False])
def test_propagation_between_sqlite_workers_runs(wake: bool) -> None:
    args = ["bench.propagation", "--database", "sqlite", "--count", "3"]
    result = last_json(*args, *([] if wake else ["--no-wake"]), timeout=120)
    assert result["database"] == "sqlite"
    assert result["wake"] is wake
    assert result["revocations"] == 3
    for measure in ("from_commit", "from_call"):
        assert 0 <= result[measure]["p50_ms"] <= result[measure]["max_ms"]
