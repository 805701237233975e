"""Helpers for the fault tests: freezing a PostgreSQL cluster (SIGSTOP of the postmaster
and every process it started) and thawing it; moving a broker's wall clock (libfaketime)."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
from pathlib import Path

import pgcluster

__all__ = ["FakeClock", "freeze", "libfaketime", "server_pids", "thaw"]


def server_pids(cluster: pgcluster.Cluster) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, ...)."""
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == postmaster:
                pids.append(int(entry))
    return pids


def freeze(cluster: pgcluster.Cluster) -> list[int]:
    """SIGSTOP the server and all its processes: it accepts bytes and answers nothing.

    The postmaster first, so that it starts no backend while its children are listed (a
    connection a pool opens meanwhile would otherwise get a backend that runs on); then
    its children, listed again until a listing finds none not stopped."""
    postmaster = server_pids(cluster)[0]
    os.kill(postmaster, signal.SIGSTOP)
    stopped = [postmaster]
    while fresh := [pid for pid in server_pids(cluster) if pid not in stopped]:
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    return stopped


def thaw(cluster: pgcluster.Cluster) -> None:
    """SIGCONT whatever of the server is still there (harmless if it is not stopped)."""
    with contextlib.suppress(OSError, ValueError):
        for pid in server_pids(cluster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def libfaketime() -> str | None:
    """The preloadable libfaketime (its multi-threaded build), or None where it is missing."""
    for pattern in (
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


class FakeClock:
    """The offset (whole seconds) of every broker started with :meth:`env`."""

    def __init__(self, path: Path, library: str) -> None:
        self.path = path
        self.library = library
        self.set(0)

    def set(self, offset: int) -> None:
        # Replaced whole: libfaketime never reads a half-written file.
        draft = self.path.with_suffix(".draft")
        draft.write_text(f"{offset:+d}\n")
        os.replace(draft, self.path)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
            # Housekeeping (pruning, the clock-step check) every quarter second.
            "TASKLEASE_PRUNE_INTERVAL": "0.25",
        }
