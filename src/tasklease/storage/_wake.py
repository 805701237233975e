"""Waking the other processes on one SQLite file when a revocation commits: a datagram each.

Every serving process binds a Unix datagram socket in ``<database>.wake/``, a directory
only the broker's user can enter (0700, owned by it, checked on an open descriptor). A
process that commits a revocation sends one empty datagram to every other socket there.
The datagram means only "look now": its content is never read, and the process that
receives it reads the durable revocation rows from the database as its poll does
(``revocations_since``). A lost, late or forged datagram therefore costs at most one
early read; the poll stays as the fallback, and a directory or socket that cannot be used
leaves the process polling, with one warning.

Names are ``<pid>-<random>``, never reused, so a sender may remove the socket of a
process that is gone (the kernel refuses a datagram to it) without ever removing a live
one. Socket addresses go through ``/proc/self/fd/<directory descriptor>/<name>``, which
keeps them under the 108 bytes a Unix socket address allows wherever the database lives.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import stat
import threading
from pathlib import Path

__all__ = ["WakeDirectory", "WakeSocket", "Wakes", "wake_directory"]

_log = logging.getLogger("tasklease.storage.wake")

# At most this many peers are woken per commit (a directory cluttered by someone with
# our uid cannot make a commit slow; the rest poll).
_MAX_PEERS = 64
# Datagrams read per readiness callback, so a flood cannot hold the event loop.
_MAX_DRAIN = 64
# Errors that mean "nobody listens there any more".
_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)


class WakeDirectory:
    """``<database>.wake/``: sends wake-ups to its sockets and binds this process's own.

    Thread-safe: :meth:`wake_peers` may be called from any thread that committed.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._own: dict[str, socket.socket] = {}  # this process's sockets, by name
        self._warned = False
        self._closed = False

    def _address(self, name: str) -> str:
        return f"/proc/self/fd/{self._fd}/{name}"

    def bind(self) -> WakeSocket | None:
        """This process's receiving socket, or None (logged once) if it cannot be made."""
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        with self._lock:  # the descriptor the address names stays open meanwhile
            if self._closed:
                return None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(self._address(name))
            except OSError as exc:
                sock.close()
                _log.warning(
                    "revocation wake-ups unavailable (%s); other processes' revocations are polled",
                    exc,
                )
                return None
            self._own[name] = sock
        return WakeSocket(self, name, sock)

    def wake_peers(self) -> int:
        """Send one empty datagram to every other process's socket; return how many got one.

        Never raises: a failure is logged once and the peers fall back to their poll.
        """
        with self._lock:
            if self._closed:
                return 0
            try:
                names = os.listdir(self._fd)
                if self._sender is None:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sender.setblocking(False)
                sender = self._sender
            except OSError as exc:
                self._warn_once(exc)
                return 0
            woken = 0
            for name in names[:_MAX_PEERS]:
                if name in self._own:
                    continue
                try:
                    sender.sendto(b"", self._address(name))
                    woken += 1
                except BlockingIOError:
                    woken += 1  # its queue is full: it has wake-ups pending already
                except OSError as exc:
                    if exc.errno in _GONE:
                        self._remove_stale(name)
                    else:
                        self._warn_once(exc)
            return woken

    def _remove_stale(self, name: str) -> None:
        """Remove a socket nobody is bound to (names are never reused, so it stays dead)."""
        try:
            st = os.lstat(name, dir_fd=self._fd)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(name, dir_fd=self._fd)
        except OSError:
            pass

    def _warn_once(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            _log.warning("could not wake the other processes (%s); they will poll", exc)

    def _unbind(self, name: str) -> None:
        with self._lock:
            sock = self._own.pop(name, None)
            if sock is None:  # closed already, with the directory
                return
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._fd)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._sender is not None:
                self._sender.close()
            for name, sock in self._own.items():
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._fd)
            self._own.clear()
            os.close(self._fd)


class WakeSocket:
    """This process's receiving socket: readable when another process asks it to look."""

    def __init__(self, directory: WakeDirectory, name: str, sock: socket.socket) -> None:
        self._directory = directory
        self.name = name
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read (and discard) the pending datagrams, at most a bounded number; return how many."""
        count = 0
        while count < _MAX_DRAIN:
            try:
                self._sock.recv(1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            count += 1
        return count

    def close(self) -> None:
        """Stop receiving and remove the socket (also done when the store closes)."""
        self._directory._unbind(self.name)


class Wakes:
    """One database's wake-ups, opened when first needed and shared by its store's views.

    :meth:`wake_peers` (after a commit that stored a revocation) never creates the
    directory: with nobody listening there is no one to wake. :meth:`bind` (a serving
    process) creates it.
    """

    def __init__(self, database: Path) -> None:
        self._database = database
        self._lock = threading.Lock()
        self._directory: WakeDirectory | None = None
        self._refused = False  # an unsafe directory: polled from then on, warned once
        self._closed = False

    def _open(self, *, create: bool) -> WakeDirectory | None:
        with self._lock:
            if self._directory is None and not (self._refused or self._closed):
                opened = wake_directory(self._database, create=create)
                if opened is not None:
                    self._directory = opened
                elif create or Path(f"{self._database}.wake").exists():
                    self._refused = True
            return self._directory

    def bind(self) -> WakeSocket | None:
        directory = self._open(create=True)
        return None if directory is None else directory.bind()

    def wake_peers(self) -> int:
        directory = self._open(create=False)
        return 0 if directory is None else directory.wake_peers()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            directory, self._directory = self._directory, None
        if directory is not None:
            directory.close()


def wake_directory(database: Path, *, create: bool = True) -> WakeDirectory | None:
    """Open (with ``create``, creating it 0700 if missing) ``<database>.wake/``; None if
    it is missing or not safe.

    Safe means: a directory (not a link), owned by this process's user, that nobody else
    may enter or write (no group or other permission bits), checked on the opened
    descriptor. Anything else is logged once and the processes poll instead.
    """
    path = Path(f"{database}.wake")
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            _log.warning("revocation wake-ups unavailable: cannot create %s (%s)", path.name, exc)
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            _log.warning("revocation wake-ups unavailable: %s vanished", path.name)
        return None
    except OSError as exc:
        _log.warning("revocation wake-ups unavailable: cannot open %s (%s)", path.name, exc)
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        _log.warning(
            "revocation wake-ups unavailable: %s must be owned by this user with mode 0700 "
            "(it is uid %d, mode %o); revocations between processes are polled",
            path.name,
            st.st_uid,
            stat.S_IMODE(st.st_mode),
        )
        return None
    return WakeDirectory(path, fd)
