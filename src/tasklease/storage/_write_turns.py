"""Fair write turns between the processes that write one SQLite file (``--workers``).

:class:`WriteTurns` is the part of :class:`tasklease.storage.sqlite.SQLiteStore` that
queues its writers behind an advisory ``flock`` before ``BEGIN IMMEDIATE``: a lock file
hands the turn over faster than SQLite's busy handler, and a second one lets a waiting
process announce itself so that a busy releaser stands back for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasklease.core.errors import Unavailable

__all__ = ["WriteTurns"]

_TURN_POLL = 0.00005  # first pause of a waiter, and the stand-back poll
_TURN_POLL_MAX = 0.0002  # a waiter polls at least this often
_STAND_BACK = 0.002  # the longest a releaser waits for a waiter to take the turn
_STAND_BACK_PAUSE = 0.05  # after waiters failed to come: no standing back for this long
_STAND_BACK_MISSES = 3  # ... after this many in a row


def _held_by_others_quietly(fd: int) -> bool:
    """:func:`_held_by_others`, False when the probe itself fails (it is only a courtesy)."""
    try:
        return _held_by_others(fd)
    except OSError:
        return False


def _held_by_others(fd: int) -> bool:
    """True while another process holds a lock on ``fd``'s file (probed, then released)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class WriteTurns:
    """:meth:`_writer_turn` for the writers of one store on the database file ``path``
    (one object per store, shared by its tenant views)."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._turn_fds: tuple[int, int] | None = None  # opened at the first turn
        self._yield_until = 0.0  # stand back before the next turn until then (0: do not)
        self._stand_back = _STAND_BACK
        self._stand_back_after = 0.0  # no standing back before then
        self._stand_back_misses = 0  # waiters in a row that did not come

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Take turns with writers in other processes (``--workers``) before BEGIN IMMEDIATE.

        SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between attempts, so a
        worker that found the write lock taken waited milliseconds after it was released.
        An advisory ``flock`` on ``<database>.writelock``, held for the transaction, hands
        the turn over within ~0.1 ms instead. It is only a queue in front of SQLite's own
        lock (which still decides), and it keeps ``busy_timeout``: past it, ``Unavailable``.

        The turn is fair between processes. ``flock`` is not: a process that releases the
        lock and asks again at once (a busy group committer does) gets it back before a
        waiter that polls, which then waits for many turns. So a waiter also holds a
        shared lock on ``<database>.writewait`` while it waits, and a process that finds
        that lock held when it releases its turn stands back before its next one, until
        the waiter has taken the turn (2 ms at most).
        """
        fds = self._turn_fds
        if fds is None:
            lock_fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                wait_fd = os.open(f"{self.path}.writewait", os.O_RDWR | os.O_CREAT, 0o600)
            except BaseException:
                os.close(lock_fd)
                raise
            fds = (lock_fd, wait_fd)
            for fd in fds:
                weakref.finalize(self, os.close, fd)
            self._turn_fds = fds
        turn, waiting = fds
        deadline = time.monotonic() + self._busy_timeout
        if self._yield_until:
            while _held_by_others_quietly(waiting):
                if time.monotonic() >= self._yield_until:
                    # The waiter did not come. Once may be a descheduled process; several
                    # times running is a frozen one: then stand back no more for a while,
                    # so it costs 2 ms per 50 ms, not 2 ms per transaction.
                    self._stand_back_misses += 1
                    if self._stand_back_misses >= _STAND_BACK_MISSES:
                        self._stand_back_after = time.monotonic() + _STAND_BACK_PAUSE
                        self._stand_back_misses = 0
                    break
                time.sleep(_TURN_POLL)  # a waiter in another process goes first
            else:
                self._stand_back_misses = 0
            self._yield_until = 0.0
        pause = _TURN_POLL
        announced = False
        try:
            while True:
                try:
                    fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Unavailable(
                            "storage is busy", reason="another process holds the write turn"
                        ) from None
                    if not announced:
                        # Fails only while a releaser probes the file: try again next time.
                        with contextlib.suppress(BlockingIOError):
                            fcntl.flock(waiting, fcntl.LOCK_SH | fcntl.LOCK_NB)
                            announced = True
                    time.sleep(pause)
                    pause = min(pause * 2, _TURN_POLL_MAX)
        finally:
            if announced:
                fcntl.flock(waiting, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
            # Only a courtesy: a failed probe must not turn a committed write into an error.
            now = time.monotonic()
            with contextlib.suppress(OSError):
                if now >= self._stand_back_after and _held_by_others(waiting):
                    self._yield_until = now + self._stand_back
