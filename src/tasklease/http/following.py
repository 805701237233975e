"""Following the revocations other processes commit to a store without notifications:
a read at once when woken (SQLite's wake-up datagram), and a poll as the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from starlette.concurrency import run_in_threadpool

__all__ = ["RevocationWake", "follow_revocations", "open_wake"]

_log = logging.getLogger("tasklease.http")


@runtime_checkable
class RevocationWake(Protocol):
    """A socket that becomes readable when another process committed a revocation."""

    def fileno(self) -> int: ...

    def drain(self) -> int: ...

    def close(self) -> None: ...


def open_wake(store: object) -> RevocationWake | None:
    """The store's wake-up socket (``SQLiteStore.open_revocation_wake``), if it has one."""
    opener: Callable[[], object] | None = getattr(store, "open_revocation_wake", None)
    if opener is None:
        return None
    wake = opener()
    return wake if isinstance(wake, RevocationWake) else None


async def follow_revocations(
    refresh: Callable[[], object],
    *,
    interval: float,
    wake: RevocationWake | None,
    on_loop: bool,
) -> None:
    """Run ``refresh`` every ``interval`` seconds, and at once whenever ``wake`` is readable.

    The wake-up carries nothing: whatever woke us, ``refresh`` reads the committed
    revocations from the store, so a forged wake-up costs one early read and a lost one
    waits for the poll. ``on_loop`` runs ``refresh`` on the event loop (a store that reads
    locally, in microseconds: a thread-pool hop would be most of the delay), right in the
    socket's readiness callback; otherwise in the thread pool, one at a time, with
    wake-ups that arrive meanwhile making one more.
    """
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()

    def run() -> None:
        try:
            refresh()
        except Exception:  # noqa: BLE001 - housekeeping must never take the server down
            _log.exception("revocation refresh failed")

    if wake is not None:

        def readable() -> None:
            wake.drain()
            if on_loop:
                run()
            else:
                woken.set()

        loop.add_reader(wake.fileno(), readable)
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await woken.wait()
            woken.clear()
            if on_loop:
                run()
            else:
                try:
                    await run_in_threadpool(refresh)
                except Exception:  # noqa: BLE001 - as in run()
                    _log.exception("revocation refresh failed")
    finally:
        if wake is not None:
            loop.remove_reader(wake.fileno())
            wake.close()
