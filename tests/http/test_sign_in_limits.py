"""The sign-in limits' refusals are audited by runs (docs/decisions.md 148).

Every refusal carries a ``denial_id`` naming one audit event, and a sign-in limit's 429
had neither: a flood of sign-ins past the burst was refused without a trace. Now the
first 429 of a run writes one ``admin_auth_rate_limited`` or ``app_auth_rate_limited``
event (the client's address, the limit), and every 429 of the run carries its
``denial_id``, whichever door of that limit it came through; once the client's bucket
refills and it is served, the next 429 begins a new run with a new event. Real brokers
(``tasklease serve``) over loopback HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem, metrics_url

pytestmark = pytest.mark.slow

BURST = 3
RATE = 0.5  # a wrong secret's check (argon2id) takes up to a second on a loaded host
WRONG = "wrong-secret-0123456789"
FLOOD = 12
SIGN_INS = ("/v1/admin/auth", "/v1/operator/auth", "/v1/app/auth", "/v1/oauth/token")


def _admin_auth(broker: RunningBroker) -> httpx.Response:
    return broker.post("/v1/admin/auth", json={"secret": WRONG})


def _operator_auth(broker: RunningBroker) -> httpx.Response:
    return broker.post("/v1/operator/auth", json={"name": "nobody", "secret": WRONG})


def _app_auth(broker: RunningBroker) -> httpx.Response:
    return broker.post("/v1/app/auth", json={"client_id": "nope", "client_secret": WRONG})


def _client_credentials(broker: RunningBroker) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": "nope", "client_secret": WRONG}
    return broker.post("/v1/oauth/token", data=form)


@dataclass(frozen=True)
class Door:
    """A sign-in route, the limit it spends, and another route spending the same one."""

    path: str
    attempt: Callable[[RunningBroker], httpx.Response]
    limit: str  # "admin" or "app"
    other: Callable[[RunningBroker], httpx.Response]

    @property
    def env(self) -> dict[str, str]:
        prefix = f"TASKLEASE_{self.limit.upper()}_AUTH"
        return {f"{prefix}_BURST": str(BURST), f"{prefix}_RATE": str(RATE)}

    @property
    def event_type(self) -> str:
        return f"{self.limit}_auth_rate_limited"


DOORS = [
    pytest.param(Door("/v1/admin/auth", _admin_auth, "admin", _operator_auth), id="admin"),
    pytest.param(Door("/v1/app/auth", _app_auth, "app", _client_credentials), id="app"),
    pytest.param(
        Door("/v1/oauth/token", _client_credentials, "app", _app_auth), id="client_credentials"
    ),
]


def _flood(broker: RunningBroker, door: Door) -> tuple[list[int], list[httpx.Response]]:
    """Attempts until the limit refuses one (the statuses served before), then ``FLOOD``
    more at once: every 429."""
    served: list[int] = []
    while True:
        resp = door.attempt(broker)
        if resp.status_code == 429:
            break
        served.append(resp.status_code)
        assert len(served) <= 3 * BURST, served
    limited = [resp, *(door.attempt(broker) for _ in range(FLOOD))]
    return served, limited


def _run_id(limited: list[httpx.Response]) -> str:
    """The one ``denial_id`` of a run of 429s, each a well-formed refusal."""
    for resp in limited:
        body = assert_problem(resp, 429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1
        assert body["denial_id"].startswith("den_"), body
    ids = {resp.json()["denial_id"] for resp in limited}
    assert len(ids) == 1, f"one run, several events: {ids}"
    return ids.pop()


def _events(broker: RunningBroker, event_type: str) -> list[dict[str, Any]]:
    resp = broker.get(
        "/v1/audit/events", params={"event_type": event_type}, headers=broker.admin_headers()
    )
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


def _rate_limited(broker: RunningBroker, path: str) -> float:
    text = httpx.get(metrics_url(broker), timeout=10).text
    pattern = rf'^tasklease_rate_limited_total\{{endpoint="{re.escape(path)}"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match[1]) if match else 0.0


@pytest.mark.parametrize("door", DOORS)
def test_a_sign_in_flood_is_refused_by_runs_each_under_one_audit_event(
    start_broker: Callable[..., RunningBroker], door: Door
) -> None:
    broker = start_broker(env=door.env)
    broker.admin_token()  # before the flood (an admin sign-in spends the admin limit)

    served, limited = _flood(broker, door)
    assert served and set(served) == {401}, served
    denial_id = _run_id(limited)
    # Another door to the same secret's limit: refused in the same run, under its event.
    other = door.other(broker)
    assert _run_id([other]) == denial_id

    [event] = _events(broker, door.event_type)
    assert event["outcome"] == "denied"
    assert event["detail"].endswith(f"denial={denial_id}"), event
    assert "client 127.0.0.1 " in event["detail"], event
    assert f"the {door.limit} sign-in limit ({BURST} at {RATE:g}/s)" in event["detail"], event
    # Written by the run's first refusal, the request that carried its id first.
    assert event["request_id"] == limited[0].headers["x-request-id"]
    # Every 429 still counts in the metric (by route).
    assert sum(_rate_limited(broker, path) for path in SIGN_INS) == len(limited) + 1

    # Refilled: the client is served again, which ends the run, and the next refusal
    # begins another, under an event of its own.
    time.sleep(int(limited[-1].headers["Retry-After"]))
    served, limited = _flood(broker, door)
    assert served and set(served) == {401}, served
    again = _run_id(limited)
    assert again != denial_id
    events = _events(broker, door.event_type)
    assert sorted(e["detail"].rpartition("denial=")[2] for e in events) == sorted(
        [denial_id, again]
    )


def test_a_tenant_sign_in_refused_counts_under_the_route_template(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """``tasklease_rate_limited_total`` labels a sign-in's 429 by its route template, as
    every metric labels a route: a tenant's name (or any other part of the path a caller
    chooses) never becomes a label of its own."""
    door = Door("/v1/admin/auth", _admin_auth, "admin", _operator_auth)
    broker = start_broker(env=door.env)
    tenant = broker.create_tenant("acme")

    _, limited = _flood(tenant, door)
    _run_id(limited)
    text = httpx.get(metrics_url(broker), timeout=10).text
    assert not re.search(r'endpoint="/t/acme/', text), "a tenant's name became a label"
    assert _rate_limited(broker, "/t/{tenant}/v1/admin/auth") == len(limited)
