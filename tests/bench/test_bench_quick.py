"""`python -m bench --quick` runs end to end and writes every row (no timing assertions),
on SQLite and on PostgreSQL (a throwaway cluster; skipped without initdb/pg_ctl)."""

import json
from pathlib import Path

import pytest
from tests.bench._bench import run_module

HTTP = {
    "empty",
    "register",
    "renew",
    "validate",
    "validate_uncached",
    "protected",
    "delegate",
    "revoke",
    "release",
    "launch",
    "heartbeat",
    "handshake",
    "renew_dpop",
    "validate_dpop",
    "introspect",
    "calls",
    "resume",
    "propagation",
}
EXPECTED = HTTP | {"audit_append", "audit_append_async_8", "offline", "audit_verify", "memory"}


@pytest.mark.slow
def test_quick_bench_completes_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_module("bench", "--quick", "--json", str(out), timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(out.read_text())
    keys = {row["key"] for row in document["rows"]}
    assert keys >= EXPECTED, EXPECTED - keys
    for row in document["rows"]:
        if row["key"] in ("offline", "memory", "audit_verify", "propagation"):
            continue
        assert row["n"] > 0, row
        assert row["errors"] == 0, row
    memory = next(r for r in document["rows"] if r["key"] == "memory")
    assert memory["revocation_index_after_prune"] == 0
    verify = next(r for r in document["rows"] if r["key"] == "audit_verify")
    assert verify["ok"], verify
    assert document["database"] == "sqlite"
    for row in document["rows"]:
        if row["key"] in HTTP - {"empty"}:
            assert row["database"] == "sqlite", row
    assert "operation" in proc.stdout


@pytest.mark.slow
@pytest.mark.soak  # make soak: the same harness runs on SQLite in every make test
# A guard against a hang, not a timing assertion: eighteen scenarios, each with its own
# server and database, beside the other soak tests (make soak runs them in parallel).
@pytest.mark.timeout(330)
def test_quick_bench_on_postgresql_runs_every_http_scenario(tmp_path: Path) -> None:
    import pgcluster

    pytest.importorskip("psycopg")
    try:
        pgcluster.find_bin()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "bench.json"
    args = ["--quick", "--database", "postgresql", "--only", "http", "--json", str(out)]
    proc = run_module("bench", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["database"] == "postgresql"
    assert document["database_server"]["fsync"] == "on"
    rows = {row["key"]: row for row in document["rows"]}
    assert set(rows) == HTTP, set(rows) ^ HTTP
    for key in HTTP - {"empty"}:
        assert rows[key]["database"] == "postgresql", rows[key]
        assert "postgresql" in rows[key]["operation"], rows[key]
    for row in document["rows"]:
        assert row["n"] > 0, row
        assert row["errors"] == 0, row
    assert "skipping the in-process parts" in proc.stderr
