"""Registrations streamed at brokers while a launch token's creator is ended.

Shared by the SQLite (``--workers 2``) and PostgreSQL (two replicas) tests of ending a
launch token's creator: a registration that commits after its launch token's creator was
ended (removed, rotated, re-keyed, its tokens revoked) is refused, whatever it read
before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from e2e_support import RunningBroker

STREAMS = 16  # registrations in flight at once
BEFORE_END = 30  # registrations that succeed before the creator is ended
AFTER_END = 1.0  # seconds the streams go on once the end was answered


@dataclass(frozen=True)
class Outcome:
    """What the race left: the registrations audited after the creator's end, and the
    tokens of those agents that still validate somewhere."""

    registered_before: int
    registered_after_end: list[int]  # audit seqs of agent_registered past the end's
    valid_after_end: list[str]  # their tokens, valid at one of the brokers


def race_registrations(
    brokers: Sequence[RunningBroker],
    launch_token: str,
    scope: list[str],
    end: Callable[[], httpx.Response],
    end_event: str,
    refused: frozenset[int] = frozenset({401}),
) -> Outcome:
    """Stream registrations with ``launch_token`` at ``brokers`` (in turn) until
    :data:`BEFORE_END` succeeded, then ``end`` the creator (it must answer 200), and let
    the streams run :data:`AFTER_END` seconds more; every registration answers 200 or
    one of ``refused``."""
    first = brokers[0]
    bodies = [first.register_body(launch_token, scope)[0] for _ in range(STREAMS * 40)]
    lock = threading.Lock()
    answered: list[tuple[int, dict[str, str]]] = []  # (status, answer)
    stop = threading.Event()

    def stream(i: int) -> None:
        with httpx.Client(base_url=brokers[i % len(brokers)].url, timeout=30) as client:
            while not stop.is_set():
                with lock:
                    if not bodies:
                        return
                    body = bodies.pop()
                resp = client.post("/v1/register", json=body)
                with lock:
                    answered.append((resp.status_code, resp.json()))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while sum(status == 200 for status, _ in list(answered)) < BEFORE_END:
            assert time.monotonic() < deadline, answered[-5:]
            time.sleep(0.005)
        resp = end()
        assert resp.status_code == 200, resp.text
        time.sleep(AFTER_END)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {status for status, _ in answered} <= {200, *refused}, answered
    events = first.get(
        "/v1/audit/events", params={"limit": 1000}, headers=first.admin_headers()
    ).json()["events"]
    end_seq = next(e["seq"] for e in events if e["event_type"] == end_event)
    registered = {e["agent_id"]: e["seq"] for e in events if e["event_type"] == "agent_registered"}
    late = {agent for agent, seq in registered.items() if seq > end_seq}
    tokens = [
        a["access_token"] for status, a in answered if status == 200 and a["agent_id"] in late
    ]
    return Outcome(
        registered_before=sum(seq < end_seq for seq in registered.values()),
        registered_after_end=sorted(registered[agent] for agent in late),
        valid_after_end=[t for t in tokens if any(b.is_valid(t) for b in brokers)],
    )
