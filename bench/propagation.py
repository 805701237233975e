"""Revocation propagation between two replicas on PostgreSQL (LISTEN/NOTIFY), or between
two workers on one SQLite file (the wake-up datagram, the poll behind it).

``python -m bench.propagation [--count 200] [--database postgresql://...|sqlite] [--no-wake]``

PostgreSQL: starts two ``tasklease serve`` replicas (A and B) on one database (a
throwaway cluster in a temp dir unless ``--database`` names one; needs initdb/pg_ctl, see
scripts/ensure-postgres.sh). SQLite (``--database sqlite``): one ``tasklease serve
--workers 2``, with A and B its two workers (a kept-alive connection to each, told apart
by the process holding its server side in ``/proc``, so Linux only); ``--no-wake`` makes
the wake-up directory unusable first, which leaves the poll (the figures before it).
Registers ``count`` agents, then for each: revoke it on A and poll
``/v1/token/validate`` on B until B refuses the token. Reports p50/p99/max of

* ``from commit``: from A's answer to the revoke (the revocation is durable) to B's first
  refusal (includes one validate round trip of polling resolution, ~0.5 ms);
* ``from call``: from sending the revoke to B's first refusal;

and on PostgreSQL B's own ``tasklease_revocation_propagation_seconds`` (A's commit to B
applying it). The last line of output is the figures as JSON. Targets: p99 from the call
< 20 ms between PostgreSQL replicas, < 5 ms between SQLite workers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
for _support in (REPO / "tests" / "postgres", REPO / "tests" / "http"):
    if str(_support) not in sys.path:
        sys.path.insert(0, str(_support))

import pgcluster  # noqa: E402
from e2e_support import RunningBroker, launch_broker, metrics_url, stop_broker  # noqa: E402

from tasklease.storage.postgres import PostgresStore  # noqa: E402

ENV = {"TASKLEASE_ADMIN_AUTH_BURST": "1000", "TASKLEASE_APP_AUTH_BURST": "1000"}
POLL_TIMEOUT = 5.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(values, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3),
    }


def _server_histogram(replica: RunningBroker) -> dict[str, float]:
    text = httpx.get(metrics_url(replica), timeout=10).text
    name = "tasklease_revocation_propagation_seconds"
    count = re.search(rf"^{name}_count (\S+)$", text, re.M)
    total = re.search(rf"^{name}_sum (\S+)$", text, re.M)
    n = float(count[1]) if count else 0.0
    return {
        "count": n,
        "mean_ms": round(float(total[1]) / n * 1000, 3) if total and n else 0.0,
    }


def measure(url: str, count: int) -> dict[str, Any]:
    PostgresStore(url).close()  # migrate (what `tasklease db migrate` does)
    with tempfile.TemporaryDirectory(prefix="tasklease-bench-") as tmp:
        data_dir = Path(tmp)
        env = {**ENV, "TASKLEASE_DATABASE": url}
        a = launch_broker(data_dir, env)
        b = launch_broker(data_dir, env)
        try:
            launch = a.launch_token(
                ["read:data:*"], single_use=False, max_uses=max(count, 1), ttl=3600
            )
            agents = [a.register(["read:data:*"], launch_token=launch) for _ in range(count)]
            admin = a.admin_headers()
            from_commit: list[float] = []
            from_call: list[float] = []
            with (
                httpx.Client(base_url=a.url, timeout=10) as revoker,
                httpx.Client(base_url=b.url, timeout=10) as validator,
            ):
                for agent in agents:
                    body = {"token": agent.access_token}
                    if not validator.post("/v1/token/validate", json=body).json()["valid"]:
                        raise RuntimeError("token not valid on B before the revocation")
                    sent = time.perf_counter()
                    resp = revoker.post(
                        "/v1/revoke",
                        json={"level": "agent", "target": agent.agent_id},
                        headers=admin,
                    )
                    committed = time.perf_counter()
                    resp.raise_for_status()
                    while validator.post("/v1/token/validate", json=body).json()["valid"]:
                        if time.perf_counter() - committed > POLL_TIMEOUT:
                            raise RuntimeError("revocation did not reach B in time")
                    refused = time.perf_counter()
                    from_commit.append(refused - committed)
                    from_call.append(refused - sent)
            return {
                "revocations": count,
                "from_commit": _summary(from_commit),
                "from_call": _summary(from_call),
                "server_metric_on_b": _server_histogram(b),
            }
        finally:
            stop_broker(b)
            stop_broker(a)


class _Conn:
    """One kept-alive HTTP/1.1 connection (bench-grade: JSON bodies, Content-Length)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: dict[str, str], headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += self.sock.recv(65536)
        head, rest = raw.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += self.sock.recv(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{path}: {head.splitlines()[0]!r}")
        return json.loads(rest)

    def worker(self, port: int, supervisor: int) -> int:
        """The pid of the worker (a child of ``supervisor``) holding our server side."""
        mine = self.sock.getsockname()[1]
        inode = ""
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].split(":")[1], 16) == port and int(f[2].split(":")[1], 16) == mine:
                inode = f[9]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != supervisor:
                    continue
                for fd in os.listdir(f"/proc/{entry}/fd"):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == f"socket:[{inode}]":
                        return int(entry)
            except OSError:
                continue
        raise RuntimeError("no worker holds the connection")


def _two_workers(port: int, supervisor: int) -> tuple[_Conn, _Conn]:
    """A connection to each of the two workers (the kernel spreads them by hash)."""
    deadline = time.monotonic() + 30
    first: tuple[int, _Conn] | None = None
    while time.monotonic() < deadline:
        conn = _Conn(port)
        conn.post("/v1/token/validate", {"token": "x"})
        pid = conn.worker(port, supervisor)
        if first is None:
            first = (pid, conn)
        elif pid != first[0]:
            return first[1], conn
        else:
            conn.sock.close()
        time.sleep(0.05)  # the second worker may still be starting
    raise RuntimeError("could not reach two workers")


def measure_sqlite(count: int, *, wake: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tasklease-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir(mode=0o700)
        if not wake:  # others may enter it: refused, so the workers only poll
            (data_dir / "tasklease.db.wake").mkdir(mode=0o755)
            (data_dir / "tasklease.db.wake").chmod(0o755)
        broker = launch_broker(data_dir, ENV, args=("--workers", "2"))
        try:
            port = int(broker.url.rsplit(":", 1)[1])
            launch = broker.launch_token(
                ["read:data:*"], single_use=False, max_uses=max(count, 1), ttl=3600
            )
            agents = [broker.register(["read:data:*"], launch_token=launch) for _ in range(count)]
            admin = broker.admin_headers()
            revoker, validator = _two_workers(port, broker.proc.pid)
            from_commit: list[float] = []
            from_call: list[float] = []
            for agent in agents:
                body = {"token": agent.access_token}
                if not validator.post("/v1/token/validate", body)["valid"]:
                    raise RuntimeError("token not valid on B before the revocation")
                sent = time.perf_counter()
                revoker.post("/v1/revoke", {"level": "agent", "target": agent.agent_id}, admin)
                committed = time.perf_counter()
                while validator.post("/v1/token/validate", body)["valid"]:
                    if time.perf_counter() - committed > POLL_TIMEOUT:
                        raise RuntimeError("revocation did not reach B in time")
                refused = time.perf_counter()
                from_commit.append(refused - committed)
                from_call.append(refused - sent)
            return {
                "database": "sqlite",
                "wake": wake,
                "revocations": count,
                "from_commit": _summary(from_commit),
                "from_call": _summary(from_call),
            }
        finally:
            stop_broker(broker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="revocations (default 200)")
    parser.add_argument(
        "--database",
        help="a postgresql:// URL (default: throwaway cluster), or sqlite: two workers",
    )
    parser.add_argument(
        "--no-wake",
        action="store_true",
        help="sqlite: leave the workers to their poll (the wake-up directory refused)",
    )
    args = parser.parse_args(argv)
    if args.database == "sqlite":
        _report(measure_sqlite(args.count, wake=not args.no_wake), target_ms=5.0)
        return
    cluster = None
    url = args.database
    if url is None:
        cluster = pgcluster.Cluster.create()
        url = cluster.new_database("bench")
    try:
        result = measure(url, args.count)
    finally:
        if cluster is not None:
            cluster.destroy()
    _report(result, target_ms=20.0)


def _report(result: dict[str, Any], *, target_ms: float) -> None:
    c, s = result["from_commit"], result["from_call"]
    between = "two workers (SQLite)" if result.get("database") == "sqlite" else "two replicas"
    if result.get("wake") is False:
        between += ", poll only"
    print(f"revocation propagation between {between}, {result['revocations']} revocations")
    print(f"  from commit: p50 {c['p50_ms']} ms  p99 {c['p99_ms']} ms  max {c['max_ms']} ms")
    print(f"  from call:   p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms")
    m = result.get("server_metric_on_b")
    if m is not None:
        metric = "tasklease_revocation_propagation_seconds"
        print(f"  B's {metric}: n={m['count']:g} mean {m['mean_ms']} ms")
    print(
        f"  target p99 from the call < {target_ms:g} ms:",
        "met" if s["p99_ms"] < target_ms else "NOT met",
    )
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
