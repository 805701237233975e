"""The metrics listener: Prometheus text on an address of its own, one scrape for all workers.

By default the broker's metrics are not served on its public port: they have a listener of
their own (``metrics_listen``, loopback unless the operator says otherwise), so who may
read them is decided by where they listen, and no scraper needs a credential. The
listener is a small threaded HTTP server in the process that owns the figures: the
broker's single process, or the supervisor of ``--workers``, which sums the workers'
values from prometheus-client's multiprocess files (:func:`multiprocess_renderer`). It
answers ``GET`` and ``HEAD`` on ``/metrics`` (Prometheus's default path) and
``/v1/metrics``, and 404 on anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import socketserver
import stat
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROCESS_ENV",
    "PATHS",
    "MetricsListener",
    "WorkerMetrics",
    "multiprocess_registry",
    "multiprocess_renderer",
]

_log = logging.getLogger("tasklease.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, version 0.0.4."""

PATHS = ("/metrics", "/v1/metrics")
"""Where the listener serves the metrics."""

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's switch to multiprocess mode: a directory for each process's values.
It must be set before a process first imports prometheus-client (the supervisor sets it
for the workers it spawns)."""

# A scraper that sends nothing for this long is dropped, and no more than this many
# connections are served at once: a slow or flooding client cannot pile up threads.
_CLIENT_TIMEOUT = 10.0
_MAX_CONNECTIONS = 16


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """Every worker's values in ``directory``, summed, read at each collection.

    Counters and histograms add up over every worker that ever ran (a replaced worker's
    counts stay, so counters never go backwards); gauges combine as each declares
    (``core.metrics``).
    """
    registry = CollectorRegistry(auto_describe=False)
    # prometheus-client's multiprocess module is not annotated.
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def multiprocess_renderer(directory: str) -> Callable[[], bytes]:
    """The text exposition of :func:`multiprocess_registry`."""
    registry = multiprocess_registry(directory)

    def render() -> bytes:
        return generate_latest(registry)

    return render


_DIRECTORY_PREFIX = "tasklease-worker-metrics-"
"""The name of every supervisor's directory begins so (in the temporary directory)."""
_EARLIER_PREFIX = "tasklease-metrics-"
"""The name of a supervisor's directory before it held a lock (no lock to test)."""


class WorkerMetrics:
    """The metrics of several worker processes: a private directory (0700) for their
    values, which a worker uses when it starts with ``MULTIPROCESS_ENV`` naming it.

    The supervisor holds an exclusive ``flock`` on the directory for as long as it runs,
    released by the system however it ends: a directory no process holds was left by a
    supervisor killed before it could remove it, and the next one to start removes it
    (:func:`remove_abandoned`). The directory is created under a name beginning with a
    dot, locked, then renamed: no directory of this name is ever unlocked while its
    supervisor lives.
    """

    def __init__(self) -> None:
        parent = tempfile.gettempdir()
        remove_abandoned(parent)
        staging = tempfile.mkdtemp(prefix=f".{_DIRECTORY_PREFIX}", dir=parent)
        self._lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.directory = os.path.join(parent, os.path.basename(staging)[1:])
            os.rename(staging, self.directory)
        except BaseException:
            os.close(self._lock)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.render = multiprocess_renderer(self.directory)

    def process_gone(self, pid: int) -> None:
        """A worker ended: its live gauges leave the sum (its counts stay)."""
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._lock)


def remove_abandoned(parent: str) -> None:
    """Remove the metrics directories in ``parent`` that no running supervisor holds.

    Only directories (never a symbolic link, never followed) that this user owns, whose
    name is a supervisor's, and whose lock can be taken: a running supervisor holds its
    own, so a live broker's directory is never touched. A directory of the earlier layout
    (``tasklease-metrics-*``, no lock) is removed when it holds worker files and no
    process holds any of its files open (:func:`_unused`): a running broker's workers
    hold theirs, in whatever PID namespace. Nothing here stops a start: a directory that
    cannot be read or removed stays.
    """
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        for name in os.listdir(parent_fd):
            if name.startswith(_DIRECTORY_PREFIX):
                _remove_if_abandoned(parent_fd, name)
            elif name.startswith(_EARLIER_PREFIX):
                _remove_if_abandoned(parent_fd, name, locked=False)
    except OSError:
        pass
    finally:
        os.close(parent_fd)


def _remove_if_abandoned(parent_fd: int, name: str, *, locked: bool = True) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError:  # a symbolic link, not a directory, or gone
        return
    try:
        held = os.fstat(fd)
        if held.st_uid != os.geteuid():
            return
        if locked:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a running supervisor holds it
                return
        else:
            entries = os.listdir(fd)
            if not any(entry.endswith(".db") for entry in entries):
                return  # no worker's file yet: a supervisor of that version starting
            if not all(_unused(fd, entry) for entry in entries):
                return  # a worker of a running broker holds its files
        # Still the directory that was locked under this name (not swapped meanwhile).
        named = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return
        _log.info("removing the metrics directory %s left by a stopped broker", name)
        shutil.rmtree(name, dir_fd=parent_fd, ignore_errors=True)
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _unused(directory_fd: int, name: str) -> bool:
    """Whether ``name`` in the directory is a regular file no process holds open: a write
    lease (``F_SETLEASE``) is granted only then, whoever and wherever the holder is (a
    file system without leases answers no, and the directory stays)."""
    try:
        fd = os.open(
            name,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=directory_fd,
        )
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except OSError:  # EAGAIN: open elsewhere
        return False
    finally:
        os.close(fd)


class _Handler(BaseHTTPRequestHandler):
    timeout = _CLIENT_TIMEOUT

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        if urlsplit(self.path).path not in PATHS:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", with_body=with_body)
            return
        try:
            data = cast("_Server", self.server).render()
        except Exception:  # noqa: BLE001 - a scrape must not take the listener down
            _log.exception("the metrics could not be rendered")
            self._send(500, b"internal error\n", "text/plain; charset=utf-8", with_body=with_body)
            return
        self._send(200, data, CONTENT_TYPE, with_body=with_body)

    def _send(self, status: int, data: bytes, content_type: str, *, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def version_string(self) -> str:
        return "tasklease"  # no Python version in the Server header

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds would drown the log)."""


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, host: str, port: int, render: Callable[[], bytes]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.render = render
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsListener:
    """Serves ``render()`` on ``(host, port)`` from a thread of its own until :meth:`close`.

    Raises:
        OSError: the address cannot be bound (in use, not an address of this host).
    """

    def __init__(self, host: str, port: int, render: Callable[[], bytes]) -> None:
        self._server = _Server(host, port, render)
        self.host = host
        self.port = int(self._server.server_address[1])  # the one chosen for port 0
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="tasklease-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1/metrics"

    def close(self) -> None:
        """Stop serving and release the address."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
