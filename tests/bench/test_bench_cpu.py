"""``python -m bench.cpu`` runs a scenario and reports the workers' CPU per operation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.bench._bench import run_module

# The SQLite scenarios share one run of bench.cpu (one broker, started once): each
# scenario's row is checked by its own test below.
SQLITE_SCENARIOS = (
    "release",
    "renew_dpop",
    "validate_dpop",
    "launch",
    "heartbeat",
    "handshake",
    "resume",
)
COUNT = 150


def _rows(*args: str, timeout: float = 180) -> dict[str, dict[str, Any]]:
    """The JSON rows ``bench.cpu`` prints, one per scenario, by scenario (it must exit
    cleanly, and each must have run its ``COUNT`` operations without an error)."""
    ran = run_module("bench.cpu", *args, "--count", str(COUNT), "--duration", "3", timeout=timeout)
    assert ran.returncode == 0, ran.stderr[-3000:]
    rows = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        assert row["n"] == COUNT and row["errors"] == 0, row
    return {row["scenario"]: row for row in rows}


@pytest.fixture(scope="module")
def sqlite_rows() -> dict[str, dict[str, Any]]:
    rows = _rows(",".join(SQLITE_SCENARIOS))
    assert set(rows) == set(SQLITE_SCENARIOS), rows
    return rows


@pytest.mark.slow
def test_cpu_per_operation_of_a_write_path(sqlite_rows: dict[str, dict[str, Any]]) -> None:
    row = sqlite_rows["release"]
    assert row["cpu_us_per_op"] > 0  # the workers did the releases
    assert "db_cpu_us_per_op" not in row  # SQLite: no server of its own


@pytest.mark.slow
@pytest.mark.soak  # make soak: the same harness runs on SQLite in every make test
def test_cpu_per_operation_on_postgresql_counts_the_server_too() -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    row = _rows("revoke", "--database", "postgresql")["revoke"]
    assert row["cpu_us_per_op"] > 0  # the workers did the revocations
    assert row["db_cpu_us_per_op"] > 0  # and the server's backends wrote them


@pytest.mark.slow
def test_dpop_bound_renewals_each_with_a_fresh_proof(
    sqlite_rows: dict[str, dict[str, Any]],
) -> None:
    # Every renewal presents its token as DPoP with a new proof of the agent's key: a
    # refused proof (replayed, wrong key, wrong URI) would count as an error.
    assert sqlite_rows["renew_dpop"]["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_dpop_bound_validations_each_forward_a_fresh_proof(
    sqlite_rows: dict[str, dict[str, Any]],
) -> None:
    # A resource server's validations: a proof replayed or made for another request would
    # be answered {"valid": false} and count as an error.
    assert sqlite_rows["validate_dpop"]["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_launch_token_creation(sqlite_rows: dict[str, dict[str, Any]]) -> None:
    # An operator creating launch tokens: any answer but 201 would count as an error.
    assert sqlite_rows["launch"]["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_signed_heartbeats(sqlite_rows: dict[str, dict[str, Any]]) -> None:
    # A heartbeat refused (a proof reused, a bad signature) would count as an error.
    assert sqlite_rows["heartbeat"]["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_whole_handshakes(sqlite_rows: dict[str, dict[str, Any]]) -> None:
    # Each operation is initiate, respond and complete: any refusal counts as an error.
    assert sqlite_rows["handshake"]["cpu_us_per_op"] > 0


@pytest.mark.slow
def test_resumptions_of_restarted_agents(sqlite_rows: dict[str, dict[str, Any]]) -> None:
    # Challenge + resume, signed with each agent's registered key; any refusal is an error.
    assert sqlite_rows["resume"]["cpu_us_per_op"] > 0
