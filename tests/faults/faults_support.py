"""Helpers for the fault tests: freezing a PostgreSQL cluster (SIGSTOP of the postmaster
and every process it started) and thawing it."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pgcluster

__all__ = ["freeze", "server_pids", "thaw"]


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
    """SIGSTOP the server and all its processes: it accepts bytes and answers nothing."""
    pids = server_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(cluster: pgcluster.Cluster) -> None:
    """SIGCONT whatever of the server is still there (harmless if it is not stopped)."""
    with contextlib.suppress(OSError, ValueError):
        for pid in server_pids(cluster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
