# Would fail if: the console's audit page only walked the hash chain (and on every view):
# a writer of the database who edits an event and chains the events after it again,
# leaving the Merkle tree and the signed checkpoints as they were, would pass as "intact".
"""The console's audit page holds its events to the Merkle tree and the signed checkpoint:
each event it shows by an inclusion proof (on every view), every event by a full walk (in
the background, at most once per interval), in process over the app's ASGI interface,
on a SQLite database rewritten behind the broker's back."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import sqlite3
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from nacl.signing import SigningKey
from tests.console.console_support import ADMIN_SECRET, CTX, in_process_broker, run, sign_in

from tasklease.core.auditformat import event_hash
from tasklease.core.audittree import append_leaves
from tasklease.core.broker import Broker
from tasklease.rules.merkle import leaf_hash
from tasklease.storage import SQLiteStore

if TYPE_CHECKING:
    from tasklease.core.auditcheck import WalkResult
    from tasklease.core.store import Store
    from tasklease.rules.note import VerifierKey


def _rechain_from(database: Path, seq: int, detail: str) -> None:
    """Edit event ``seq``'s detail and hash it and every event after it again with the
    log's own hashing: the chain holds, the tree and the checkpoints are left alone."""
    with SQLiteStore(database) as store:
        events = list(store.iter_audit())
    prev = events[seq - 2].hash if seq > 1 else "0" * 64
    rows: list[tuple[str, str, str, int]] = []
    for event in events[seq - 1 :]:
        changed = dataclasses.replace(
            event, prev_hash=prev, detail=detail if event.seq == seq else event.detail
        )
        digest = event_hash(prev, changed.seq, changed.timestamp, changed)
        rows.append((changed.detail, prev, digest, changed.seq))
        prev = digest
    conn = sqlite3.connect(database)
    with conn:
        conn.executemany(
            "UPDATE audit_events SET detail = ?, prev_hash = ?, hash = ? "
            "WHERE seq = ? AND tenant_id = 'default'",
            rows,
        )
    conn.close()


def _logged(tmp_path: Path) -> tuple[Broker, Path]:
    """A broker on a SQLite file with a few events and a signed checkpoint of them."""
    database = tmp_path / "tasklease.db"
    broker = in_process_broker(SQLiteStore(database))
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    for _ in range(3):
        broker.rotate_signing_key(admin, CTX)
    assert broker.transparency.sign_if_due(force=True) is not None
    return broker, database


def _status(page: httpx.Response, element: str) -> str:
    found = re.search(rf'<(p|div)[^>]*id="{element}"[^>]*>(.*?)</\1>', page.text, re.S)
    assert found is not None, page.text[:3000]
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(2)).split())


async def _walked(client: httpx.AsyncClient, path: str = "/console/audit") -> httpx.Response:
    """The page once the full walk its first view started has finished."""
    for _ in range(400):
        page = await client.get(path)
        assert page.status_code == 200, page.text[:500]
        if "through evt-" in _status(page, "walk-status"):
            return page
        await asyncio.sleep(0.025)
    raise AssertionError(page.text[:3000])


def test_an_event_shown_that_was_rewritten_and_chained_again_is_marked(tmp_path: Path) -> None:
    broker, database = _logged(tmp_path)

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        assert (await sign_in(client)).status_code == 303
        _rechain_from(database, 2, "nothing to see")
        return await client.get("/console/audit")

    page = run(broker, go)
    assert page.status_code == 200
    verdict = _status(page, "chain-status")
    assert "intact" not in verdict and "broken" in verdict
    assert "evt-000002" in verdict
    rows = re.findall(r"<tr[^>]*data-altered[^>]*>.*?</tr>", page.text, re.S)
    # The edited event, and those chained again after it: none is the one written.
    assert [re.findall(r"evt-\d{6}", row)[0] for row in rows] == [
        f"evt-{seq:06d}" for seq in (2, 3, 4, 5)
    ]
    assert "nothing to see" in rows[0]
    assert "evt-000001" in page.text and "altered" not in verdict.split("evt-000002")[0]


def test_the_full_walk_finds_a_rewritten_event_the_page_does_not_show(tmp_path: Path) -> None:
    broker, database = _logged(tmp_path)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        admin = broker.admin_auth(ADMIN_SECRET, CTX).claims  # event 6
        broker.rotate_signing_key(admin, CTX)  # event 7, the last
        assert broker.transparency.sign_if_due(force=True) is not None
        _rechain_from(database, 7, "nothing to see")
        # A search that does not show event 7: its events are intact, the log is not.
        path = "/console/audit?event_type=admin_auth"
        first = await client.get(path)
        return first, await _walked(client, path)

    first, walked = run(broker, go)
    assert "evt-000007" not in first.text and "evt-000006" in first.text
    assert "intact" in _status(first, "chain-status")  # as far as it has checked
    assert "data-altered" not in walked.text
    walk = _status(walked, "walk-status")
    assert "audit tree broken" in walk and "the tree on record" in walk
    verdict = _status(walked, "chain-status")
    assert "intact" not in verdict and "broken" in verdict


def test_an_untouched_log_is_intact_and_walked_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, _ = _logged(tmp_path)
    from tasklease.core.auditcheck import walk_log

    walks: list[int] = []

    def counted(
        store: Store, log_keys: Sequence[VerifierKey], now: Callable[[], float]
    ) -> WalkResult:
        walks.append(1)
        return walk_log(store, log_keys, now)

    monkeypatch.setattr("tasklease.http.console.walk_log", counted)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        walked = await _walked(client)
        return walked, await client.get("/console/audit")

    walked, again = run(broker, go)
    assert walks == [1]  # views within the interval read the last walk, not the log
    total, _ = broker.store.audit_head()
    verdict = _status(again, "chain-status")
    assert "intact" in verdict and "broken" not in verdict
    walk = _status(again, "walk-status")
    assert "intact" in walk and re.search(r"evt-0000\d\d", walk)
    assert "data-altered" not in again.text
    assert total >= 4


def _retile(database: Path) -> None:
    """Build the Merkle tree on record again from the events as they are now (tiles and
    tree row): what a writer of the database can do, unlike signing a checkpoint."""
    with SQLiteStore(database) as store:
        leaves = [leaf_hash(bytes.fromhex(e.hash)) for e in store.iter_audit()]
    tree, tiles = append_leaves(None, leaves)
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("DELETE FROM audit_tiles WHERE tenant_id = 'default'")
        conn.executemany(
            "INSERT INTO audit_tiles (tenant_id, level, idx, hashes) VALUES ('default', ?, ?, ?)",
            [(t.level, t.index, t.hashes) for t in tiles],
        )
        conn.execute(
            "UPDATE audit_tree SET size = ?, root = ?, edge = ? WHERE tenant_id = 'default'",
            (tree.size, tree.root, b"".join(tree.edge)),
        )
    conn.close()


def test_a_tree_built_again_over_rewritten_events_is_not_the_signed_one(tmp_path: Path) -> None:
    broker, database = _logged(tmp_path)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        _rechain_from(database, 2, "nothing to see")
        _retile(database)
        return await client.get("/console/audit"), await _walked(client)

    page, walked = run(broker, go)
    assert "data-altered" not in page.text  # every event is in the forged tree...
    verdict = _status(page, "chain-status")
    assert "intact" not in verdict and "does not extend the latest checkpoint" in verdict
    walk = _status(walked, "walk-status")  # ...which is not the one the log key signed
    assert "audit tree broken" in walk and "the latest checkpoint" in walk


# --- the agent and task pages: the same check on the events they list ----------------------


def _register(broker: Broker, task_id: str) -> str:
    """An agent registered under ``task_id`` (its events: the launch token's, its own)."""
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    launch, _ = broker.create_launch_token(
        admin,
        agent_name="audited",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=CTX,
    )
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    issued = broker.register(
        launch_token=launch,
        nonce=nonce,
        public_key=base64.b64encode(bytes(key.verify_key)).decode(),
        signature=base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
        orch_id="orch-1",
        task_id=task_id,
        requested_scope=["read:data:*"],
        ctx=CTX,
    )
    return issued.claims.sub


def _altered_rows(page: httpx.Response) -> list[str]:
    rows = re.findall(r"<tr[^>]*data-altered[^>]*>.*?</tr>", page.text, re.S)
    return [re.findall(r"evt-\d{6}", row)[0] for row in rows]


@pytest.mark.parametrize("forged", ["rechained", "retiled"])
def test_the_agent_and_task_pages_mark_the_events_they_list_that_were_rewritten(
    tmp_path: Path, forged: str
) -> None:
    # Would fail if: the agent and task pages listed audit events unchecked: an event
    # about the agent edited in the database and the log chained again showed as written.
    broker, database = _logged(tmp_path)
    agent_id = _register(broker, "task-audited")
    assert broker.transparency.sign_if_due(force=True) is not None
    with SQLiteStore(database) as store:
        own = [e.seq for e in store.iter_audit() if e.agent_id == agent_id]
    assert own

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        _rechain_from(database, own[0], "nothing to see")
        if forged == "retiled":
            _retile(database)
        return (
            await client.get(f"/console/agents/{agent_id}"),
            await client.get("/console/tasks/task-audited"),
        )

    for page in run(broker, go):
        assert page.status_code == 200, page.text[:500]
        verdict = _status(page, "chain-status")
        assert "Audit log broken" in verdict
        if forged == "rechained":
            # The edited event is marked, and so is every event of the page after it.
            marked = _altered_rows(page)
            assert marked and marked[0] == f"evt-{own[0]:06d}"
            assert f"evt-{own[0]:06d}" in verdict
            assert "nothing to see" in page.text
        else:
            # Every event is in the tree rebuilt over them, which the log key never signed.
            assert not _altered_rows(page)
            assert "does not extend the latest checkpoint" in verdict


def test_the_agent_and_task_pages_of_an_untouched_log_mark_nothing(tmp_path: Path) -> None:
    broker, _ = _logged(tmp_path)
    agent_id = _register(broker, "task-audited")

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        return [
            await client.get(f"/console/agents/{agent_id}"),
            await client.get("/console/tasks/task-audited"),
        ]

    for page in run(broker, go):
        assert page.status_code == 200
        assert agent_id in page.text
        assert "data-altered" not in page.text and 'id="chain-status"' not in page.text


# --- a full walk that fails -----------------------------------------------------------------


class _Monotonic:
    """The console's ``time`` module, with a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def _until(client: httpx.AsyncClient, said: Callable[[str], bool]) -> httpx.Response:
    """The audit page once its walk status says what ``said`` looks for."""
    for _ in range(400):
        page = await client.get("/console/audit")
        assert page.status_code == 200, page.text[:500]
        if said(_status(page, "walk-status")):
            return page
        await asyncio.sleep(0.025)
    raise AssertionError(page.text[:3000])


def test_a_walk_that_fails_is_said_and_the_verdict_is_not_intact_until_one_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: a walk that raised were only logged, the page keeping the previous
    # walk's "intact" and its time as if current.
    broker, _ = _logged(tmp_path)
    from tasklease.core.auditcheck import walk_log

    clock = _Monotonic()
    monkeypatch.setattr("tasklease.http.console.time", clock)
    calls: list[int] = []

    def flaky(
        store: Store, log_keys: Sequence[VerifierKey], now: Callable[[], float]
    ) -> WalkResult:
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("unable to open database file /srv/secret-name.db")
        return walk_log(store, log_keys, now)

    monkeypatch.setattr("tasklease.http.console.walk_log", flaky)

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        first = await _walked(client)
        clock.now += 600
        failed = await _until(client, lambda text: "failed at" in text)
        clock.now += 599  # tried again only once the interval has passed
        still = await client.get("/console/audit")
        clock.now += 1
        again = await _until(client, lambda text: "failed" not in text and "evt-" in text)
        return [first, failed, still, again]

    first, failed, still, again = run(broker, go)
    assert "intact" in _status(first, "chain-status")
    for page in (failed, still):
        verdict = _status(page, "chain-status")
        assert "intact" not in verdict and "not verified" in verdict
        assert "the last full check" in verdict and "OperationalError" in verdict
        walk = _status(page, "walk-status")
        assert "failed at" in walk and "did not finish" in walk
        # The walk before it is named as the earlier one, not as the current verdict.
        assert "The last that finished" in walk
        assert "secret-name" not in page.text  # the cause, never what the driver quoted
    assert calls == [1, 1, 1]
    verdict = _status(again, "chain-status")
    assert "intact" in verdict and "not verified" not in verdict


def test_a_walk_that_cannot_start_is_said_and_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: a walk whose thread could not start took the page down (500) and
    # left it "running" for ever, never tried again.
    broker, _ = _logged(tmp_path)
    clock = _Monotonic()
    monkeypatch.setattr("tasklease.http.console.time", clock)

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(
        "tasklease.http.console.threading",
        types.SimpleNamespace(Lock=threading.Lock, Thread=NoThread),
    )

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        assert (await sign_in(client)).status_code == 303
        refused = await client.get("/console/audit")
        monkeypatch.setattr("tasklease.http.console.threading", threading)
        clock.now += 600
        return [refused, await _walked(client)]

    refused, walked = run(broker, go)
    assert refused.status_code == 200
    verdict = _status(refused, "chain-status")
    assert "intact" not in verdict and "RuntimeError" in verdict
    assert "did not finish" in _status(refused, "walk-status")
    assert "intact" in _status(walked, "chain-status")


def test_the_walk_interval_is_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "tasklease.db"
    broker = in_process_broker(SQLiteStore(database), console_audit_walk_interval=30)
    from tasklease.core.auditcheck import walk_log

    clock = _Monotonic()
    monkeypatch.setattr("tasklease.http.console.time", clock)
    walks: list[int] = []

    def counted(
        store: Store, log_keys: Sequence[VerifierKey], now: Callable[[], float]
    ) -> WalkResult:
        walks.append(1)
        return walk_log(store, log_keys, now)

    monkeypatch.setattr("tasklease.http.console.walk_log", counted)

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        assert (await sign_in(client)).status_code == 303
        await _walked(client)
        clock.now += 29
        await client.get("/console/audit")
        assert walks == [1]
        clock.now += 1
        for _ in range(400):
            if len(walks) == 2:
                break
            page = await client.get("/console/audit")
            await asyncio.sleep(0.025)
        return page

    page = run(broker, go)
    assert walks == [1, 1]
    assert "at most once every 30 seconds" in _status(page, "walk-status")
