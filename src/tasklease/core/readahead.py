"""A first half run on an event loop whose reads are network round trips: each read it
has not been given stops it, the caller fetches that read without blocking the loop, and
runs it again from the start with every answer so far (decision 124 in
``docs/decisions.md``).

A first half writes nothing (``core.audit.deferring`` collects its audit events and
guards), so running it again is safe; what it does to memory (caches, the policy's
remembered decisions) it would do again the same way. A call that must not be repeated
or made on the loop (a commit, a read the store cannot answer ahead) stops it with
:class:`InThread`, and the caller runs it in a thread instead, as before.

What a first half counts (a metric) goes through :func:`count`, so that it is counted
once per request: by the run that first reaches it, and only if the first half completes
on the loop.

The store decides what a read is (``query``: anything comparable with ``==``); a run
takes its ``n``-th answer for its ``n``-th read. A first half whose ``n``-th read is not
the one it made before depends on more than its reads (the time in a query's
parameters): it runs in a thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = [
    "MAX_READS",
    "InThread",
    "ReadNeeded",
    "active",
    "answer",
    "count",
    "refuse",
    "run",
]

T = TypeVar("T")

MAX_READS = 8
"""Reads a first half may be given ahead; one that makes more runs in a thread (each
read costs a run of what comes before it)."""


class ReadNeeded(BaseException):
    """A read the run has not been given: ``query`` is the store's description of it.

    A ``BaseException``, so that no ``except Exception`` on the way (``deferring``'s
    among them) takes it for the first half's own error."""

    def __init__(self, query: object) -> None:
        super().__init__("a read to fetch ahead")
        self.query = query


class InThread(BaseException):
    """The call cannot run on the loop this way (``reason`` says why): run it in a thread."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Run:
    __slots__ = ("answers", "counted", "position", "stopping")

    def __init__(self) -> None:
        self.answers: list[tuple[object, bool, Any]] = []  # query, raised, outcome
        self.position = 0
        # Set while a run unwinds from the read that stopped it: what it counts on the
        # way out (a ``finally``) is counted by the run that completes.
        self.stopping = False
        self.counted: list[Callable[[], object]] = []  # done once the first half completes


_RUN: ContextVar[_Run | None] = ContextVar("tasklease_readahead", default=None)


def answer(query: object) -> Any:
    """The answer to ``query`` when a run is under way here and was given it (what the
    read raised is raised); ``ReadNeeded`` when it was not. Call only under a run
    (:func:`active`)."""
    run_ = _RUN.get()
    if run_ is None:
        raise RuntimeError("no read-ahead run is under way")
    position = run_.position
    run_.position = position + 1
    if position < len(run_.answers):
        given, raised, outcome = run_.answers[position]
        if given != query:
            # Run again, it asked for another read than before: it depends on more than
            # its reads (the time in a query's parameters). It would never settle here.
            raise InThread("a read that changed when run again")
        if raised:
            raise outcome
        return outcome
    run_.stopping = True
    raise ReadNeeded(query)


def active() -> bool:
    """Whether a read-ahead run is under way here (this task)."""
    return _RUN.get() is not None


def refuse(what: str) -> None:
    """Raise :class:`InThread` if a read-ahead run is under way here: ``what`` (a commit,
    a transaction) must run once, in a thread."""
    if _RUN.get() is not None:
        raise InThread(f"{what} in a first half")


def count(action: Callable[[], object]) -> None:
    """Do ``action`` (update a metric) once for this request.

    Outside a run it is done at once. Under a run it is done when the first half
    completes. It is not done at all in these cases:
    - the code around it ran already in an earlier run, before a read that run was not
      given;
    - a run is unwinding from such a read;
    - the first half goes to a thread (``InThread``), whose own run does it.
    """
    run_ = _RUN.get()
    if run_ is None:
        action()
    elif not run_.stopping and run_.position >= len(run_.answers):
        run_.counted.append(action)


async def run(fn: Callable[[], T], fetch: Callable[[object], Awaitable[Any]]) -> T:
    """``fn()``, run again after each read it needs until it completes; ``fetch(query)``
    gets a read (what it raises is the read's outcome, except :class:`InThread`).

    Raise :class:`InThread` when ``fn`` or ``fetch`` does, or ``fn`` needs more than
    :data:`MAX_READS` reads: the caller runs ``fn`` in a thread.
    """
    state = _Run()
    while True:
        state.position = 0
        state.stopping = False
        token = _RUN.set(state)
        try:
            result = fn()
        except ReadNeeded as need:
            query = need.query
        except InThread:
            raise
        except BaseException:
            _done(state)  # it completed by raising: what it counted stands
            raise
        else:
            _done(state)
            return result
        finally:
            _RUN.reset(token)
        if len(state.answers) >= MAX_READS:
            raise InThread(f"more than {MAX_READS} reads")
        try:
            fetched = await fetch(query)
        except InThread:
            raise
        except Exception as exc:  # noqa: BLE001 - the read's outcome, raised where it is read
            state.answers.append((query, True, exc))
        else:
            state.answers.append((query, False, fetched))


def _done(state: _Run) -> None:
    for action in state.counted:
        action()
