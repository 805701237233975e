"""What ``tasklease serve --workers N`` looks like from /proc: its worker processes, their
sockets, and which of them listen on or hold connections to a port (Linux only)."""

from __future__ import annotations

import os
import time
from pathlib import Path

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
ESTABLISHED = "01"  # TCP_ESTABLISHED


def worker_pids(supervisor: int) -> set[int]:
    """The worker processes of ``supervisor`` (not multiprocessing's resource tracker)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor and b"resource_tracker" not in cmdline:
            found.add(int(entry))
    return found


def age(pid: int) -> float:
    """Seconds since process ``pid`` started (its fork), by the kernel's count.

    The supervisor times a worker's life from its start, before the worker serves: a
    test that waits for a worker to be past an age counts from here, not from when the
    broker answered."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22 of stat
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds (none once it is gone)."""
    inodes = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_inodes(port: int, state: str, *, remote_port: int | None = None) -> set[str]:
    """Inodes of the TCP sockets whose local port is ``port``, in ``state`` (and, if
    given, whose remote port is ``remote_port``)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) != port or fields[3] != state:
            continue
        if remote_port is None or int(fields[2].split(":")[1], 16) == remote_port:
            inodes.add(fields[9])
    return inodes


def listening_workers(supervisor: int, port: int) -> set[int]:
    """The workers of ``supervisor`` that hold a socket listening on ``port``."""
    listening = tcp_inodes(port, LISTEN)
    return {pid for pid in worker_pids(supervisor) if socket_inodes(pid) & listening}


def holds_file(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file whose path ends with ``name`` open."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name):
                return True
        except OSError:
            continue
    return False


def wait_workers_listening(
    supervisor: int, port: int, count: int, *, database: str | None = None, timeout: float = 60
) -> set[int]:
    """Until ``count`` workers run and each listens on ``port``; their pids.

    A worker binds its socket before it builds its application: connections the kernel
    gives it from then on wait in its backlog until it serves. With ``database`` (the
    SQLite file's name), also until each worker has it open, the last step before it
    serves, for a test that times what a worker does with a connection.
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = worker_pids(supervisor)
        listening = len(workers) == count and listening_workers(supervisor, port) == workers
        if listening and (database is None or all(holds_file(p, database) for p in workers)):
            return workers
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} workers did not all listen on {port}: {workers}")
        time.sleep(0.1)
