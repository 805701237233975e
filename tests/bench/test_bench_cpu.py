"""``python -m bench.cpu`` runs a scenario and reports the workers' CPU per operation."""

from __future__ import annotations

from typing import Any

import pytest
from tests.bench._bench import last_json


def _row(scenario: str, count: int, *extra: str) -> dict[str, Any]:
    """The JSON row ``bench.cpu`` prints for ``scenario`` (it must exit cleanly)."""
    row = last_json("bench.cpu", scenario, "--count", str(count), *extra, timeout=180)
    assert row["scenario"] == scenario
    assert row["n"] == count and row["errors"] == 0
    return row


@pytest.mark.slow
def test_cpu_per_operation_of_a_write_path() -> None:
    row = _row("release", 300, "--duration", "3")
    assert row["cpu_us_per_op"] > 0  # the workers did the releases
    assert "db_cpu_us_per_op" not in row  # SQLite: no server of its own


@pytest.mark.slow
def test_cpu_per_operation_on_postgresql_counts_the_server_too() -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    row = _row("revoke", 400, "--duration", "3", "--database", "postgresql")
    assert row["cpu_us_per_op"] > 0  # the workers did the revocations
    assert row["db_cpu_us_per_op"] > 0  # and the server's backends wrote them


@pytest.mark.slow
def test_dpop_bound_renewals_each_with_a_fresh_proof() -> None:
    # Every renewal presents its token as DPoP with a new proof of the agent's key: a
    # refused proof (replayed, wrong key, wrong URI) would count as an error.
    row = _row("renew_dpop", 200, "--duration", "3")
    assert row["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_dpop_bound_validations_each_forward_a_fresh_proof() -> None:
    # A resource server's validations: a proof replayed or made for another request would
    # be answered {"valid": false} and count as an error.
    row = _row("validate_dpop", 200, "--duration", "3")
    assert row["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_launch_token_creation() -> None:
    # An operator creating launch tokens: any answer but 201 would count as an error.
    row = _row("launch", 300, "--duration", "3")
    assert row["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_signed_heartbeats() -> None:
    # A heartbeat refused (a proof reused, a bad signature) would count as an error.
    row = _row("heartbeat", 300, "--duration", "3")
    assert row["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_whole_handshakes() -> None:
    # Each operation is initiate, respond and complete: any refusal counts as an error.
    row = _row("handshake", 150, "--duration", "3")
    assert row["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_resumptions_of_restarted_agents() -> None:
    # Challenge + resume, signed with each agent's registered key; any refusal is an error.
    row = _row("resume", 200, "--duration", "3")
    assert row["cpu_us_per_op"] > 0
