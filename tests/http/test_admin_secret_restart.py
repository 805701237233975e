# Would fail if: a broker restarted with another admin secret still admitted agents with
# the launch tokens made under the old one, or let the old secret's admin tokens act.
"""``tasklease serve`` restarted with another admin secret (one worker, then two): the
admin's tokens and launch tokens made before are ended, audited once per change, and
the new secret signs in once past the entry; the same secret again ends nothing."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, launch_broker, stop_broker

pytestmark = pytest.mark.slow

OTHER_SECRET = secrets.token_hex(32)
SCOPE = ["read:data:*"]
# A short skew: the new secret signs in clock_skew + 1 s after the change.
ENV = {"TASKLEASE_CLOCK_SKEW": "1"}


def _start(data: Path, secret: str, *args: str) -> RunningBroker:
    return launch_broker(
        data, {**ENV, "TASKLEASE_ADMIN_SECRET": secret}, admin_secret=secret, args=args
    )


def _signed_in(broker: RunningBroker) -> str:
    """The admin's token, once the entry the change wrote is past (503 until then)."""
    deadline = time.monotonic() + 15
    while True:
        resp = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
        if resp.status_code == 200:
            return str(resp.json()["access_token"])
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)


def _refused(broker: RunningBroker, launch_token: str) -> None:
    body, _ = broker.register_body(launch_token, SCOPE)
    resp = broker.post("/v1/register", json=body)
    assert resp.status_code == 401, resp.text
    assert resp.json()["denial_id"]


def _changes(broker: RunningBroker, token: str) -> list[dict[str, object]]:
    resp = broker.get(
        "/v1/audit/events?event_type=admin_secret_changed&limit=10",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["events"])


def test_a_restart_with_another_admin_secret_ends_what_the_old_one_made(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    broker = _start(data, ADMIN_SECRET)
    try:
        old_admin = broker.admin_token()
        kept = broker.launch_token(SCOPE)
        ended = broker.launch_token(SCOPE)
    finally:
        stop_broker(broker)

    # The same secret again: nothing is ended.
    broker = _start(data, ADMIN_SECRET)
    try:
        assert broker.register(SCOPE, launch_token=kept).agent_id
        assert "admin secret changed" not in broker.log()
    finally:
        stop_broker(broker)

    broker = _start(data, OTHER_SECRET)
    try:
        assert "the admin secret changed since the last start" in broker.log()
        _refused(broker, ended)
        stale = broker.get(
            "/v1/audit/events?limit=1", headers={"Authorization": f"Bearer {old_admin}"}
        )
        assert stale.status_code == 401, stale.text
        old = broker.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
        assert old.status_code == 401, old.text
        admin = _signed_in(broker)
        (change,) = _changes(broker, admin)
        assert change["agent_id"] == "admin"
        later = broker.launch_token(SCOPE, bearer=admin)
    finally:
        stop_broker(broker)

    # Back to the first secret, with two workers: the supervisor records it once.
    broker = _start(data, ADMIN_SECRET, "--workers", "2")
    try:
        _refused(broker, later)
        assert len(_changes(broker, _signed_in(broker))) == 2
    finally:
        stop_broker(broker)


def test_a_process_not_yet_restarted_refuses_the_old_secret(tmp_path: Path) -> None:
    """A rolling restart of two processes sharing one database: once one runs the new
    secret, the other, still running with the old one, signs nobody in with it (401, the
    reason under its denial_id); restarted with the new one, it does again."""
    data = tmp_path / "broker"
    old = _start(data, ADMIN_SECRET)
    try:
        assert old.post("/v1/admin/auth", json={"secret": ADMIN_SECRET}).status_code == 200
        new = _start(data, OTHER_SECRET)
        try:
            token = _signed_in(new)
            refused = old.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
            assert refused.status_code == 401, refused.text
            denial = refused.json()["denial_id"]
            events = new.get(
                "/v1/audit/events?event_type=admin_auth_failed&limit=10",
                headers={"Authorization": f"Bearer {token}"},
            ).json()["events"]
            [event] = [e for e in events if f"denial={denial}" in e["detail"]]
            assert "changed by another broker process's start" in event["detail"]
        finally:
            stop_broker(new)
    finally:
        stop_broker(old)
