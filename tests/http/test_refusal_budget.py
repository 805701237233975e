"""Each client's budget of audited refusals over HTTP (docs/decisions.md 138).

Every audited refusal writes a permanent audit event, and refusing needs no credential:
without a budget one unauthenticated client wrote hundreds of events a second. Once a
client has spent its budget it is answered 429 up front, under one audit event, until the
budget refills; limits count a client by its address, an IPv6 one by its /64.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker
from starlette.applications import Starlette

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.http.ratelimit import client_key
from tasklease.storage import open_store

BURST = 5
ADMIN_SECRET = "a" * 40


def _audit_rows(broker: RunningBroker) -> int:
    db = broker.data_dir / "tasklease.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (count,) = con.execute("SELECT count(*) FROM audit_events").fetchone()
    finally:
        con.close()
    return int(count)


def _refused(broker: RunningBroker) -> httpx.Response:
    # No credential worth the name: refused, and audited, all the same.
    return broker.post("/v1/token/renew", headers={"Authorization": "Bearer x"}, json={})


def test_a_flood_of_refusals_is_answered_429_under_one_audit_event(
    start_broker: Callable[..., RunningBroker],
) -> None:
    broker = start_broker(
        env={"TASKLEASE_REFUSAL_BURST": str(BURST), "TASKLEASE_REFUSAL_RATE": "0.5"}
    )
    before = _audit_rows(broker)
    served = [_refused(broker) for _ in range(BURST)]
    assert [r.status_code for r in served] == [401] * BURST
    assert len({r.json()["denial_id"] for r in served}) == BURST
    limited = [_refused(broker) for _ in range(3 * BURST)]
    assert [r.status_code for r in limited] == [429] * len(limited)
    for r in limited:
        assert r.json()["error_code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
    [denial_id] = {r.json()["denial_id"] for r in limited}
    assert denial_id.startswith("den_")
    # The burst's refusals and the one event of the run: nothing for the other 429s.
    assert _audit_rows(broker) - before <= BURST + 1

    time.sleep(int(limited[-1].headers["Retry-After"]))
    # Refilled: served again (a successful request spends nothing).
    resp = broker.get(
        "/v1/audit/events",
        params={"event_type": "refusals_rate_limited"},
        headers=broker.admin_headers(),
    )
    assert resp.status_code == 200, resp.text
    [event] = resp.json()["events"]
    assert event["outcome"] == "denied"
    assert event["detail"].endswith(f"denial={denial_id}")
    assert "127.0.0.1" in event["detail"]
    again = _refused(broker)
    assert again.status_code == 401
    assert again.json()["denial_id"] != denial_id


# --- one client by its address, an IPv6 one by its /64 -----------------------------------


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a v4 client on a dual-stack socket
        ("::1", "::/64"),
        ("unknown", "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_an_ipv6_client_is_its_slash_64(host: str, key: str) -> None:
    assert client_key(host) == key


def _app(**settings: Any) -> Starlette:
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET), **settings)
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"n" * 32)
    return create_app(broker, background=False)


async def _statuses(
    app: Starlette, host: str, method: str, path: str, n: int, **kw: Any
) -> list[int]:
    transport = httpx.ASGITransport(app=app, client=(host, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        return [(await c.request(method, path, **kw)).status_code for _ in range(n)]


def test_refusals_from_one_slash_64_share_one_budget() -> None:
    app = _app(refusal_burst=3, refusal_rate=0.001)
    bearer = {"headers": {"Authorization": "Bearer x"}, "json": {}}

    async def run() -> tuple[list[int], list[int], list[int]]:
        first = await _statuses(app, "2001:db8::1", "POST", "/v1/token/renew", 3, **bearer)
        # Another address of the same /64: no fresh burst.
        same = await _statuses(app, "2001:db8::2:3", "POST", "/v1/token/renew", 2, **bearer)
        other = await _statuses(app, "2001:db8:0:1::1", "POST", "/v1/token/renew", 1, **bearer)
        return first, same, other

    first, same, other = asyncio.run(run())
    assert first == [401, 401, 401]
    assert same == [429, 429]
    assert other == [401]


def test_sign_ins_from_one_slash_64_share_one_limit() -> None:
    app = _app(admin_auth_burst=2, admin_auth_rate=0.001)
    wrong = {"json": {"secret": "b" * 40}}

    async def run() -> tuple[list[int], list[int]]:
        first = await _statuses(app, "2001:db8::1", "POST", "/v1/admin/auth", 2, **wrong)
        same = await _statuses(app, "2001:db8::ffff", "POST", "/v1/admin/auth", 1, **wrong)
        return first, same

    first, same = asyncio.run(run())
    assert first == [401, 401]
    assert same == [429]


def _spent_nonces(broker: RunningBroker) -> int:
    db = broker.data_dir / "tasklease.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (count,) = con.execute("SELECT count(*) FROM used_nonces").fetchone()
    finally:
        con.close()
    return int(count)


def test_a_malformed_registration_that_spends_its_nonce_spends_the_budget(
    start_broker: Callable[..., RunningBroker],
) -> None:
    # A malformed registration (400, not audited) spends its nonce when its signature
    # verifies (decision 262): a write to the store. Anyone can sign a free challenge
    # with a key of their own, so without a charge one anonymous client forced a
    # durable write per request, past its spent budget, for ever.
    broker = start_broker(
        env={"TASKLEASE_REFUSAL_BURST": str(BURST), "TASKLEASE_REFUSAL_RATE": "0.001"}
    )
    n = 4 * BURST
    nonces = [broker.nonce() for _ in range(n)]  # free, and stateless
    before = _spent_nonces(broker)
    statuses = []
    for nonce in nonces:
        body, _ = broker.register_body("x" * 64, ["read:data:x"], nonce=nonce)
        body["orch_id"] = "not a segment/"
        statuses.append(broker.post("/v1/register", json=body).status_code)
    assert statuses == [400] * BURST + [429] * (n - BURST)
    assert _spent_nonces(broker) - before == BURST
