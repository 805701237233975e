"""Code of a route that may read the store and writes nothing itself (a first half: its
audit events and guards deferred), run on the event loop: inline when the store reads
locally, else ahead of its reads (``core.readahead``), in a thread when it cannot be."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from tasklease.core import readahead
from tasklease.core.audit import Deferred, deferring
from tasklease.core.store import Store

__all__ = ["first_half", "run_reading"]

T = TypeVar("T")


async def run_reading(store: Store, fn: Callable[[], T]) -> T:
    """``fn()``, which may read ``store`` and writes nothing itself, run on the event loop:
    inline when the store reads locally (a hop to a thread costs more than its reads),
    else again after each read it needs, fetched without blocking the loop
    (``core.readahead``). In a thread when it cannot run that way (it commits, or reads
    more than a few times, or the read fails but for its deadline)."""
    if store.local_reads:
        return fn()
    try:
        return await readahead.run(fn, store.read_ahead)
    except readahead.InThread:
        return await run_in_threadpool(fn)


async def first_half(fn: Callable[[], T], *, store: Store | None) -> Deferred[T]:
    """``fn`` under ``core.audit.deferring``, run as :func:`run_reading` does (inline when
    ``store`` is None: ``fn`` reads nothing). Its audit events and guards are the caller's
    to write (``Broker.settle``, ``answer``)."""
    if store is None:
        return deferring(fn)
    return await run_reading(store, functools.partial(deferring, fn))
