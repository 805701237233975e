"""First halves on the event loop over PostgreSQL (decision 124): their reads fetched on
asynchronous connections, the first half run again with them; in a thread when it
writes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from pg_e2e import count_backends, warm

from tasklease.core import readahead
from tasklease.core.records import TenantRecord
from tasklease.http._reading import run_reading
from tasklease.storage.postgres import PostgresStore


def _connections(url: str) -> int:
    return count_backends(url, "true")


def test_a_first_half_reads_on_the_event_loop_without_a_thread(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_max=2)
    try:
        with store.write() as tx:
            tx.insert_tenant(TenantRecord("acme", "acme.example", "active", time.time(), "op"))
        expected = (store.get_tenant("acme"), [t.name for t in store.list_tenants()])
        threads: list[int] = []

        def first_half() -> tuple[object, list[str]]:
            threads.append(threading.get_ident())
            return store.get_tenant("acme"), [t.name for t in store.list_tenants()]

        async def main() -> tuple[object, list[str]]:
            await warm(store)
            loop_thread = threading.get_ident()
            found = await run_reading(store, first_half)
            assert set(threads) == {loop_thread}
            return found

        assert asyncio.run(main()) == expected
        assert expected[1] == ["acme"]
        assert len(threads) == 3  # stopped at each of its two reads, then completed
    finally:
        store.close()


def test_a_first_half_that_writes_runs_once_in_a_thread(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_max=2)
    try:
        written: list[tuple[int, bool]] = []

        def first_half() -> bool:
            store.get_tenant("default")
            with store.write() as tx:
                first = tx.consume_dpop_proof("proof-1", time.time() + 60)
            written.append((threading.get_ident(), first))
            return first

        async def main() -> tuple[bool, int]:
            return await run_reading(store, first_half), threading.get_ident()

        first, loop_thread = asyncio.run(main())
        assert first is True
        assert len(written) == 1  # the write ran once: not on the loop, not twice
        assert written[0][0] != loop_thread
    finally:
        store.close()


def test_a_read_error_is_raised_where_it_is_read(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_max=2)
    try:

        async def main() -> object:
            await warm(store)
            return await store.read_ahead(("one", "SELECT %s::int + 1", (41,)))

        assert asyncio.run(main()) == (42,)

        async def broken() -> object:
            await warm(store)
            return await store.read_ahead(("one", "SELECT * FROM no_such_table", ()))

        # Anything but a deadline: the first half runs in a thread, where the store's
        # own path translates the error.
        try:
            asyncio.run(broken())
        except readahead.InThread as exc:
            assert "UndefinedTable" in exc.reason
        else:
            raise AssertionError("a failed read did not send the first half to a thread")
    finally:
        store.close()


def test_a_read_never_waits_for_a_connection_and_they_are_closed_with_the_store(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url, pool_min=1, pool_max=2)
    before = _connections(pg_url)

    async def main() -> str:
        try:
            await store.read_ahead(("one", "SELECT 0", ()))
        except readahead.InThread as exc:
            first = exc.reason  # none yet: to a thread, one opened in the background
        else:
            first = "answered"
        await warm(store)
        for i in range(20):
            row = await store.read_ahead(("one", "SELECT %s::int", (i,)))
            assert row == (i,)
        return first

    assert asyncio.run(main()) == "no connection open on the loop yet"
    assert _connections(pg_url) == before + 1  # one loop connection, used for them all
    store.close()
    deadline = time.monotonic() + 10  # a backend leaves pg_stat_activity as it exits
    while _connections(pg_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections(pg_url) == 0


def test_a_connection_given_to_a_request_cancelled_meanwhile_goes_back(pg_url: str) -> None:
    # Would fail if: a connection handed to a waiting read whose request was cancelled
    # before it resumed (the client went away) were lost to the loop for good.
    store = PostgresStore(pg_url, pool_max=1)
    try:

        async def main() -> None:
            await warm(store)
            reads = store._ahead
            reader = reads._reader()
            held = await reads._take(reader)  # the loop's one connection, in use
            waiting = asyncio.create_task(reads._take(reader))
            await asyncio.sleep(0.01)
            assert len(reader.waiting) == 1
            reads._give_back(reader, held)  # handed to the waiter...
            waiting.cancel()  # ...whose request ends before it runs again
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            assert reader.idle == [held]
            assert reader.opened == 1
            assert await store.read_ahead(("one", "SELECT 5", ())) == (5,)

        asyncio.run(main())
    finally:
        store.close()


def test_a_renewal_run_again_after_its_read_counts_its_token_once(pg_url: str) -> None:
    # Would fail if: the token cache's hit and the validation time, counted while the
    # renewal's first half authenticates, were counted again when it ran again after
    # reading the agent's session (two lookups and two validations for one token).
    import httpx
    from tests.core.conftest import Kit

    from tasklease.core.broker import Broker
    from tasklease.core.config import Config
    from tasklease.core.keys import KeyRing
    from tasklease.core.passwords import hash_secret
    from tasklease.http.app import create_app

    store = PostgresStore(pg_url, pool_max=2)
    broker = Broker(
        Config(admin_secret_hash=hash_secret(Kit.admin_secret)),
        store,
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )
    try:
        agent = Kit.register(broker)
        fetched: list[object] = []
        read_ahead = store.read_ahead

        async def counting(query: object) -> object:
            fetched.append(query)
            return await read_ahead(query)

        store.read_ahead = counting  # type: ignore[method-assign]
        sample = broker.metrics.registry.get_sample_value

        def lookups() -> float:
            return sum(
                sample("tasklease_token_cache_total", {"result": result}) or 0.0
                for result in ("hit", "miss")
            )

        async def renew() -> httpx.Response:
            await warm(store)
            fetched.clear()
            app = create_app(broker, background=False)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.post(
                    "/v1/token/renew", headers={"Authorization": Kit.bearer(agent.token)}
                )

        before = (lookups(), sample("tasklease_validation_seconds_count") or 0.0)
        answer = asyncio.run(renew())
        assert answer.status_code == 200, answer.text
        assert fetched  # the first half read ahead on the loop, and so ran more than once
        after = (lookups(), sample("tasklease_validation_seconds_count") or 0.0)
        assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
    finally:
        store.close()
