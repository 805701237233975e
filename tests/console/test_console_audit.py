# Would fail if: the console's audit page only walked the hash chain (and on every view):
# a writer of the database who edits an event and chains the events after it again,
# leaving the Merkle tree and the signed checkpoints as they were, would pass as "intact".
"""The console's audit page holds its events to the Merkle tree and the signed checkpoint:
each event it shows by an inclusion proof (on every view), every event by a full walk (in
the background, at most once per interval), in process over the app's ASGI interface,
on a SQLite database rewritten behind the broker's back."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
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
