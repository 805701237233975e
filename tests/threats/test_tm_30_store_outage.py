# Would fail if: an operation were acknowledged while its audit event could not be
# written (the state change kept, or the token handed out, without its event) — that is,
# if the audit log failed open instead of failing the operation.
"""TM-30 — failing open when the store is out: while the database (or the audit log in it)
cannot be written, credentials are issued without a trace, a revocation is answered as
done though nothing was kept, or refusals go unrecorded — the window an attacker would
create (a full disk, a locked or broken database) to act unseen.

Every operation is audited in the same transaction as its state change. When that
transaction cannot commit, the answer is 503 and nothing was changed: no token, no
consumed launch token, no revocation claimed; even a refusal cannot be given without its
audit event. Validation of existing tokens needs no write and goes on. Once the store is
back, the log continues as one unbroken chain.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from e2e_support import RunningBroker, assert_problem
from threat_support import audit_events, bearer

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def _unavailable(resp: Any) -> None:
    body = assert_problem(resp, 503, "service_unavailable")
    assert "access_token" not in body and "launch_token" not in body


def test_nothing_happens_unrecorded_while_the_audit_log_cannot_be_written(
    broker: RunningBroker,
) -> None:
    agent, helper = broker.register(SCOPE), broker.register(SCOPE)
    launch = broker.launch_token(SCOPE)
    body, _ = broker.register_body(launch, SCOPE)
    before = len(audit_events(broker))
    conn = sqlite3.connect(broker.data_dir / "tasklease.db", isolation_level=None, timeout=10)
    conn.execute(
        "CREATE TRIGGER outage BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END"
    )
    try:
        _unavailable(broker.post("/v1/register", json=body))
        _unavailable(broker.post("/v1/token/renew", headers=agent.bearer))
        _unavailable(broker.delegate(agent.access_token, helper.agent_id, ["read:tickets:1"]))
        _unavailable(broker.revoke("agent", agent.agent_id))
        _unavailable(broker.post("/v1/admin/auth", json={"secret": broker.admin_secret}))
        _unavailable(
            broker.post(
                "/v1/admin/launch-tokens",
                json={"agent_name": "x", "allowed_scope": SCOPE},
                headers=broker.admin_headers(),
            )
        )
        # A refusal is an event too: without its record there is no refusal either.
        _unavailable(broker.post("/v1/token/renew", headers=bearer("forged.token.here")))
        # Tokens already issued still validate: checking needs no write.
        assert broker.is_valid(agent.access_token)
    finally:
        conn.execute("DROP TRIGGER outage")
        conn.close()
    # Nothing of that window was recorded, and nothing of it took effect.
    events = audit_events(broker)
    assert len(events) == before
    assert broker.is_valid(agent.access_token)  # the failed revoke claimed nothing
    renewed = broker.post("/v1/token/renew", headers=agent.bearer)  # the failed renew spent nothing
    assert renewed.status_code == 200, renewed.text
    assert broker.register(SCOPE, launch_token=launch)  # the launch token was not consumed
    # The log continues as one chain across the outage.
    events = audit_events(broker)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for earlier, later in zip(events, events[1:], strict=False):
        assert later["prev_hash"] == earlier["hash"]


def test_a_locked_database_fails_the_registration_closed(broker: RunningBroker) -> None:
    launch = broker.launch_token(SCOPE)
    body, _ = broker.register_body(launch, SCOPE)
    other = sqlite3.connect(broker.data_dir / "tasklease.db", isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database past busy_timeout
    try:
        _unavailable(broker.post("/v1/register", json=body))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert broker.post("/v1/register", json=body).status_code == 200  # nothing was spent
