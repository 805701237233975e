"""Counted calls (``max_calls``) across a crash: ``tasklease serve`` on SQLite is killed
(SIGKILL, every process of it) while resource servers count one grant's calls from
several threads, then restarted on the same data directory. A count that was answered
200 is never lost (the budget holds it after the restart), none is counted twice (each
counted call is one ``grant_call_counted`` event), and the grant never makes more than
``max_calls`` calls between the runs: the refusals each carry a ``denial_id``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_crash import _audit_verifies, _kill, _start, _stop

pytestmark = pytest.mark.slow

MAX_CALLS = 120
LOCATION = "https://pay.example/payees/P"
GRANT = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": [LOCATION],
    "limits": {"max_calls": MAX_CALLS},
}
CALL = {"type": "resource_access", "action": "pay", "location": LOCATION}


def _register(broker: Any) -> str:
    created = broker.post(
        "/v1/admin/launch-tokens",
        headers=broker.admin_headers(),
        json={"agent_name": "payer", "authorization_details": [GRANT], "ttl": 600},
    )
    assert created.status_code == 201, created.text
    body, _ = broker.register_body(created.json()["launch_token"], [])
    body.update(requested_scope=None, authorization_details=[GRANT])
    answer = broker.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _events(broker: Any, event_type: str) -> list[dict[str, Any]]:
    query = f"/v1/audit/events?event_type={event_type}&limit=1000"
    answer = broker.get(query, headers=broker.admin_headers())
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == len(page["events"])
    return page["events"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("workers", [1, 2])
def test_counted_calls_survive_a_sigkill_mid_batch(tmp_path: Path, workers: int) -> None:
    data = tmp_path / "data"
    broker = _start(data, workers)
    token = _register(broker)
    acked: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def count(client: httpx.Client) -> None:
        while not stop.is_set():
            try:
                answer = client.post("/v1/token/calls", json={"token": token, **CALL})
            except httpx.TransportError:
                return  # cut off by the kill: may or may not have been counted
            with lock:
                if answer.status_code == 200:
                    acked.append(answer.json()["remaining"])
                else:
                    assert answer.status_code == 403, answer.text
                    refused.append(answer.json()["denial_id"])

    clients = [httpx.Client(base_url=broker.url, timeout=15.0) for _ in range(6)]
    threads = [threading.Thread(target=count, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acked) < MAX_CALLS // 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    _kill(broker.proc)
    stop.set()
    for thread in threads:
        thread.join(30)
    for client in clients:
        client.close()
    broker.client.close()
    before = len(acked)
    assert 0 < before < MAX_CALLS and not refused

    broker = _start(data, workers)
    try:
        after = 0
        while True:
            answer = broker.post("/v1/token/calls", json={"token": token, **CALL})
            if answer.status_code != 200:
                assert answer.status_code == 403, answer.text
                assert answer.json()["denial_id"].startswith("den_")
                break
            if after == 0:
                # Every acknowledged count is held: what is left is at most what the
                # last acknowledged answer before the kill said, less this call.
                assert answer.json()["remaining"] <= min(acked) - 1
            after += 1
        # Never more than max_calls between the runs, and each counted call once.
        assert before + after <= MAX_CALLS
        assert len(_events(broker, "grant_call_counted")) == MAX_CALLS
        assert len(_events(broker, "grant_calls_exhausted")) == 1
    finally:
        _stop(broker)
    _audit_verifies(data)
