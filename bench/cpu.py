"""Server CPU per operation: ``python -m bench.cpu renew,delegate [--count N] [--workers 2]
[--database postgresql]``.

Throughput on a shared machine moves with whatever else runs on it; the CPU time the
broker's workers spend per operation moves much less. This runs ``tasklease serve`` on
SQLite (as ``python -m bench`` does) or on a throwaway PostgreSQL cluster made durable
(``bench.servers.Databases``), drives each scenario with the load generator, samples the
workers' CPU time (``/proc/<pid>/stat``, user + system) every 10 ms, and reports, for the
measured part of each scenario (not its setup), the workers' CPU microseconds per
operation beside the rate and p99. On PostgreSQL it also reports the server's
(``db_cpu_us_per_op``: the postmaster and every process it started). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.servers import ADMIN_SECRET, REPO, Broker, Databases

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (a process that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def server_pids(datadir: Path) -> list[int]:
    """A PostgreSQL cluster's processes: its postmaster (``postmaster.pid``) and the
    processes it started (backends, WAL writer, checkpointer...), from the kernel's list
    of its children: one small read, cheap enough to repeat at every sample."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
    return [postmaster, *(int(pid) for pid in children.split())]


def measure(
    broker: Broker, scenario: str, count: int, duration: float, datadir: Path | None = None
) -> dict[str, Any]:
    """One scenario against ``broker``: the load generator's figures and CPU per op (and
    the database server's, when ``datadir`` is its cluster's)."""
    pids = broker.worker_pids()
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            # Backends come and go with connections: find the server's processes anew.
            db = cpu_seconds(server_pids(datadir)) if datadir is not None else 0.0
            samples.append((time.monotonic(), cpu_seconds(pids), db))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    spec = {
        "host": "127.0.0.1",
        "port": broker.port,
        "scenario": scenario,
        "connections": 32,
        "count": count,
        "duration": duration,
        "secret": ADMIN_SECRET,
    }
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    stop.set()
    sampler.join()
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The measured window as the generator timed it (CLOCK_MONOTONIC, shared by every
    # process): neither its setup nor its exit, however long a loaded host makes them.
    since, until = result["window_monotonic"]
    start = min(samples, key=lambda s: abs(s[0] - since))
    end = min(samples, key=lambda s: abs(s[0] - until))
    n = max(1, result["n"])
    row = {
        "scenario": scenario,
        "rps": result["rps"],
        "p99_ms": result["p99_ms"],
        "n": result["n"],
        "errors": result["errors"],
        "cpu_us_per_op": round((end[1] - start[1]) / n * 1e6),
    }
    if datadir is not None:
        row["db_cpu_us_per_op"] = round((end[2] - start[2]) / n * 1e6)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("scenarios", help="comma-separated load generator scenarios")
    parser.add_argument("--count", type=int, default=3000, help="operations per scenario")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds, at most")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: a throwaway durable cluster (its CPU is reported too)",
    )
    args = parser.parse_args(argv)
    with Databases(args.database) as databases:
        url = databases.new_url()
        datadir = databases.cluster.datadir if databases.cluster is not None else None
        with Broker(workers=args.workers, loop="asyncio", database_url=url) as broker:
            for scenario in args.scenarios.split(","):
                row = measure(broker, scenario, args.count, args.duration, datadir)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
