"""Liveness never touches storage, ``/v1/health`` never waits on it, and readiness says
no, with a reason, while storage hangs or writes fail.

Seen under faults: ``/v1/health`` read the database on the request (3 s with PostgreSQL
stopped, more than 10 s with it frozen) and said "ok" while every write failed on a full
disk.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

ADMIN_SECRET = "h" * 40


class SickStore(MemoryStore):
    """A memory store whose reads of the audit head can hang, and whose writes can fail
    or be refused by ``check_writable`` (the optional capability of the SQL stores)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = threading.Event()
        self.reads.set()
        self.full = False

    def audit_head(self) -> tuple[int, str]:
        self.reads.wait(30)
        return super().audit_head()

    @contextmanager
    def write(self) -> Iterator[Any]:
        if self.full:
            raise Unavailable("the disk holding the database is full", retry_after=5)
        with super().write() as tx:
            yield tx

    def check_writable(self) -> None:
        if self.full:
            raise Unavailable("the disk holding the database is full", retry_after=5)


@pytest.fixture
def sick() -> Iterator[tuple[SickStore, httpx.AsyncClient]]:
    store = SickStore()
    broker = Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        store,
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )
    app = create_app(broker, background=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    yield store, client
    store.reads.set()


def _get(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[float, httpx.Response]:
    async def go() -> httpx.Response:
        return await client.get(path, headers=headers)

    started = time.monotonic()
    answer = asyncio.run(go())
    return time.monotonic() - started, answer


def test_health_answers_within_its_bound_while_storage_hangs(
    sick: tuple[SickStore, httpx.AsyncClient],
) -> None:
    store, client = sick
    took, first = _get(client, "/v1/health")
    assert first.status_code == 200
    assert first.json()["status"] == "ok" and first.json()["db_connected"] is True
    store.reads.clear()  # storage stops answering
    time.sleep(1.1)  # the last report ages past the check interval
    took, during = _get(client, "/v1/health")
    assert during.status_code == 200 and took < 0.5, took  # answered from the last report
    time.sleep(2.2)  # the check under way outlives its bound
    took, later = _get(client, "/v1/health")
    assert later.status_code == 200 and took < 0.5, took
    body = later.json()
    assert body["status"] == "degraded" and body["db_connected"] is False, body
    assert "did not answer" in body["reason"]
    assert {"version", "uptime", "audit_events_count", "revocations_current"} <= set(body)
    took, live = _get(client, "/v1/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"} and took < 0.5
    took, ready = _get(client, "/v1/health/ready")
    assert ready.status_code == 503 and took < 2.5, took
    assert ready.json()["error_code"] == "service_unavailable"
    assert "did not answer" in ready.json()["detail"]
    assert ready.headers["retry-after"] == "1"

    store.reads.set()  # storage is back: the next checks say so
    deadline = time.monotonic() + 5
    while _get(client, "/v1/health/ready")[1].status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _get(client, "/v1/health")[1].json()["status"] == "ok"


def test_failing_writes_make_the_broker_degraded_and_not_ready(
    sick: tuple[SickStore, httpx.AsyncClient],
) -> None:
    store, client = sick

    async def admin_auth() -> httpx.Response:
        return await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})

    assert asyncio.run(admin_auth()).status_code == 200
    assert _get(client, "/v1/health/ready")[1].status_code == 200
    store.full = True
    refused = asyncio.run(admin_auth())
    assert refused.status_code == 503
    assert "full" in refused.json()["detail"] and refused.headers["retry-after"] == "5"
    health = _get(client, "/v1/health")[1].json()
    assert health["status"] == "degraded" and "full" in health["reason"], health
    ready = _get(client, "/v1/health/ready")[1]
    assert ready.status_code == 503 and "full" in ready.json()["detail"]
    assert _get(client, "/v1/health/live")[1].status_code == 200

    store.full = False
    assert asyncio.run(admin_auth()).status_code == 200
    deadline = time.monotonic() + 5
    while _get(client, "/v1/health/ready")[1].status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_health_keeps_its_shape_when_storage_never_answered(
    sick: tuple[SickStore, httpx.AsyncClient],
) -> None:
    store, client = sick

    async def admin_auth() -> httpx.Response:
        return await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})

    # An operator's token for the details, before storage hangs (signing in is audited).
    operator = {"Authorization": f"Bearer {asyncio.run(admin_auth()).json()['access_token']}"}
    store.reads.clear()  # hung from the start: there is no report to answer from
    took, answer = _get(client, "/v1/health")
    assert answer.status_code == 200 and took < 3.0, took
    body = answer.json()
    assert body["status"] == "degraded" and body["db_connected"] is False
    for field in ("version", "uptime", "audit_events_count"):
        assert field in body, body  # what the AgentWrit SDK requires
    took, answer = _get(client, "/v1/health", operator)
    assert answer.status_code == 200 and took < 3.0, took
    body = answer.json()
    assert body["status"] == "degraded" and body["db_connected"] is False
    for field in ("version", "uptime", "audit_events_count", "signing_kid"):
        assert field in body and body[field] != "", body  # and ours, for operators


class _AuditTableLocked:
    """A transaction whose audit appends fail, as under a lock held on the audit table
    (``LOCK TABLE audit_events``, ``VACUUM FULL``): everything else it writes commits."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def append_audit(self, events: Any) -> None:
        raise Unavailable("the database did not finish in time", retry_after=1)


class AuditLockedStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.audit_locked = False

    @contextmanager
    def write(self) -> Iterator[Any]:
        with super().write() as tx:
            yield _AuditTableLocked(tx) if self.audit_locked else tx


def test_a_batch_without_audit_events_does_not_end_a_run_of_failed_audit_writes() -> None:
    # Seen on PostgreSQL with the audit table locked: the transparency claim (a batch that
    # appends no event) committed between the failing issuances, so the broker logged
    # "audit writes succeed again" and readiness said ready while every audited write
    # still failed.
    store = AuditLockedStore()
    broker = Broker(
        Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
        store,
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )
    app = create_app(broker, background=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async def admin_auth() -> httpx.Response:
        return await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})

    assert asyncio.run(admin_auth()).status_code == 200
    store.audit_locked = True
    assert asyncio.run(admin_auth()).status_code == 503
    assert broker.audit.commit(lambda tx: []) == []  # commits: it appends nothing
    assert broker.audit.failure() is not None
    ready = _get(client, "/v1/health/ready")[1]
    assert ready.status_code == 503 and "writes fail" in ready.json()["detail"], ready.text

    store.audit_locked = False
    assert asyncio.run(admin_auth()).status_code == 200
    assert broker.audit.failure() is None
    deadline = time.monotonic() + 5
    while _get(client, "/v1/health/ready")[1].status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
