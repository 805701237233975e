"""Run a function on an event loop's thread for a thread that waits, or in that thread if
the loop does not take it in time.

The group committer (:mod:`tasklease.core.audit`) holds a SQLite transaction in its
thread: taking the write turn, ``BEGIN`` and the commit's ``fsync`` wait there. The
units' statements in between are CPU work. Run in the committer thread, each statement
releases the GIL and takes it back from the busy event loop's thread; run on that
thread, in one callback, they do not (decision 120 in ``docs/decisions.md``).

The loop may never get to the function: it is blocked (a synchronous wait on a lock the
waiting thread holds would otherwise be a deadlock), stopped or closed. So the waiting
thread gives it ``patience`` seconds; after that whichever side claims the function
first runs it, exactly once, and the other does nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

__all__ = ["run_on_loop"]

T = TypeVar("T")

_PENDING, _CLAIMED = 0, 1


class _Handoff(Generic[T]):
    __slots__ = ("_claim", "_done", "_fn", "_state", "error", "ran_on_loop", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._claim = threading.Lock()
        self._state = _PENDING
        self._done = threading.Lock()
        self._done.acquire()  # released once the function has run, on either side
        self.result: T | None = None
        self.error: BaseException | None = None
        self.ran_on_loop = False

    def on_loop(self) -> None:
        self._run(on_loop=True)

    def _run(self, *, on_loop: bool) -> None:
        with self._claim:
            if self._state != _PENDING:
                return
            self._state = _CLAIMED
        self.ran_on_loop = on_loop
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc  # raised in the waiting thread
            if on_loop and not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the loop's too
        finally:
            self._done.release()

    def wait(self, patience: float) -> None:
        if not self._done.acquire(timeout=patience):
            self._run(on_loop=False)  # claims it unless the loop already has
            self._done.acquire()  # ours just ended, or the loop's is running


def run_on_loop(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], T], *, patience: float
) -> tuple[T, bool]:
    """``fn()`` run on ``loop``'s thread, or here once ``patience`` seconds have passed
    without the loop starting it; returns its result and whether the loop ran it.

    Call from a thread other than ``loop``'s. What ``fn`` raises is raised here.
    """
    handoff = _Handoff(fn)
    try:
        loop.call_soon_threadsafe(handoff.on_loop)
    except RuntimeError:  # the loop is closed
        handoff.wait(0)
    else:
        handoff.wait(patience)
    if handoff.error is not None:
        raise handoff.error
    return cast(T, handoff.result), handoff.ran_on_loop
