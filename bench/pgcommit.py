"""PostgreSQL's own commit rate and NOTIFY fan-out, without the broker:
``python -m bench.pgcommit [--duration 3] [--database postgresql://...] [--quick]``.

The inputs of docs/scaling.md's model. On a throwaway cluster made durable like the
benchmark's (``fsync``, ``synchronous_commit``, ``full_page_writes`` on; see
``bench.servers.Databases``), or on the database ``--database`` names (a scratch one:
tables ``bench_commit_*`` are made and dropped):

- ``single``: one ~300-byte row per transaction (an audit event's size, a primary key and
  two secondary indexes), from 1, 4, 16 and 64 connections at once (threads): commits/s.
  Concurrent commits share WAL flushes (PostgreSQL's group commit), so this is the rate
  a fleet of replicas committing one operation per transaction reaches;
- ``batched``: the same rows, 64 and 1,000 per transaction (one statement each), from 1
  and 4 connections: rows/s (what group commit in the broker buys);
- ``chained``: the broker's audit append's shape: each transaction locks one head row,
  inserts 1 or 64 rows, updates the head and commits, from 1 to 16 connections. They take
  turns on the lock through their commits: one tenant's ceiling of write transactions,
  whatever the number of replicas;
- ``notify``: ``NOTIFY`` on commit with 1, 8 and 32 listening connections (a replica
  each): p50/p99 from sending the notifying transaction (it commits in that call) to the
  last listener receiving it.

The last line of output is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TABLE = "bench_commit_rows"
DDL = f"""
CREATE TABLE {TABLE} (
    tenant_id TEXT NOT NULL, seq BIGSERIAL, agent_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (tenant_id, seq));
CREATE INDEX {TABLE}_by_agent ON {TABLE} (tenant_id, agent_id);
CREATE INDEX {TABLE}_by_ts ON {TABLE} (tenant_id, ts);
CREATE TABLE bench_commit_head (tenant_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
INSERT INTO bench_commit_head VALUES ('default', 0);
"""  # noqa: S608
# The table name is this module's constant; values go as parameters.
HEAD = "bench_commit_head"
LOCK_HEAD = f"SELECT seq FROM {HEAD} WHERE tenant_id = 'default' FOR UPDATE"  # noqa: S608
BUMP_HEAD = f"UPDATE {HEAD} SET seq = seq + %s WHERE tenant_id = 'default'"  # noqa: S608
INSERT = f"INSERT INTO {TABLE} (tenant_id, agent_id, ts, body) VALUES (%s, %s, %s, %s)"  # noqa: S608
BATCH = (
    f"INSERT INTO {TABLE} (tenant_id, agent_id, ts, body) "  # noqa: S608
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[])"
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(i: int) -> tuple[str, str, float, str]:
    return (
        "default",
        f"spiffe://tasklease.local/agent/o/t/{os.urandom(8).hex()}",
        time.time(),
        f"Token issued, jti={i:032x}, ttl=300 " + "x" * 200,
    )


def single(url: str, connections: int, duration: float) -> dict[str, Any]:
    """Commits/s with ``connections`` threads each committing one row per transaction."""
    import psycopg

    counts = [0] * connections
    stop = time.perf_counter() + duration
    start = threading.Barrier(connections + 1)

    def work(k: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor()
            start.wait()
            n = 0
            while time.perf_counter() < stop:
                cur.execute(INSERT, _row(n), prepare=True)  # autocommit: one commit each
                n += 1
            counts[k] = n

    threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "connections": connections,
        "commits": sum(counts),
        "commits_per_s": round(sum(counts) / elapsed, 1),
    }


def batched(url: str, batch: int, connections: int, duration: float) -> dict[str, Any]:
    """Rows/s with ``batch`` rows per transaction from ``connections`` threads, each batch
    one statement (``unnest`` of arrays): the server's cost per row, not the client's."""
    import psycopg

    counts = [0] * connections
    commits = [0] * connections
    stop = time.perf_counter() + duration
    start = threading.Barrier(connections + 1)

    def work(k: int) -> None:
        with psycopg.connect(url) as conn:
            cur = conn.cursor()
            start.wait()
            n = 0
            while time.perf_counter() < stop:
                rows = [_row(n + i) for i in range(batch)]
                cur.execute(BATCH, [list(column) for column in zip(*rows, strict=True)])
                conn.commit()
                n += batch
                commits[k] += 1
            counts[k] = n

    threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"batch": batch, "connections": connections, "rows": sum(counts),
            "rows_per_s": round(sum(counts) / elapsed, 1),
            "commits_per_s": round(sum(commits) / elapsed, 1)}  # fmt: skip


def chained(url: str, batch: int, connections: int, duration: float) -> dict[str, Any]:
    """Like the broker's audit append: every transaction locks one head row
    (``SELECT ... FOR UPDATE``), inserts ``batch`` rows, updates the head and commits, from
    ``connections`` threads. Transactions of one chain take turns, each holding the lock
    through its commit: the ceiling of one tenant's write transactions across replicas."""
    import psycopg

    counts = [0] * connections
    commits = [0] * connections
    stop = time.perf_counter() + duration
    start = threading.Barrier(connections + 1)

    def work(k: int) -> None:
        with psycopg.connect(url) as conn:
            cur = conn.cursor()
            start.wait()
            n = 0
            while time.perf_counter() < stop:
                cur.execute(LOCK_HEAD, prepare=True)
                rows = [_row(n + i) for i in range(batch)]
                cur.execute(BATCH, [list(column) for column in zip(*rows, strict=True)])
                cur.execute(BUMP_HEAD, (batch,), prepare=True)
                conn.commit()
                n += batch
                commits[k] += 1
            counts[k] = n

    threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"batch": batch, "connections": connections, "rows": sum(counts),
            "rows_per_s": round(sum(counts) / elapsed, 1),
            "commits_per_s": round(sum(commits) / elapsed, 1)}  # fmt: skip


def notify(url: str, listeners: int, rounds: int) -> dict[str, Any]:
    """From sending a NOTIFY (autocommit) to the last of ``listeners`` connections
    receiving it."""
    import psycopg

    received: list[dict[int, float]] = [{} for _ in range(listeners)]
    ready = threading.Barrier(listeners + 1)
    done = threading.Event()

    def listen(k: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN bench_commit")
            ready.wait()
            for note in conn.notifies(timeout=rounds * 0.05 + 30):
                received[k][int(note.payload)] = time.perf_counter()
                if len(received[k]) >= rounds or done.is_set():
                    break

    threads = [threading.Thread(target=listen, args=(k,), daemon=True) for k in range(listeners)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.2)
    sent: dict[int, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(rounds):
            sent[i] = time.perf_counter()  # its transaction commits in this call
            conn.execute("SELECT pg_notify('bench_commit', %s)", (str(i),))
            time.sleep(0.01)
    for t in threads:
        t.join(timeout=10)
    done.set()
    last = [max(r.get(i, float("inf")) for r in received) - sent[i] for i in range(rounds)]
    missing = sum(1 for v in last if v == float("inf"))
    seen = [v for v in last if v != float("inf")]
    return {
        "listeners": listeners,
        "rounds": rounds,
        "missing": missing,
        "p50_ms": round(_percentile(seen, 0.5) * 1e3, 3) if seen else None,
        "p99_ms": round(_percentile(seen, 0.99) * 1e3, 3) if seen else None,
    }


def run(url: str, duration: float, quick: bool) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {HEAD}")
        conn.execute(DDL)
        settings = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "commit_delay")
        }
    try:
        fanin = (1, 4) if quick else (1, 4, 16, 64)
        fanout = (1, 4) if quick else (1, 8, 32)
        out: dict[str, Any] = {"settings": settings, "cores": os.cpu_count()}
        out["single"] = [single(url, c, duration) for c in fanin]
        shapes = ((64, 1), (1000, 1)) if quick else ((64, 1), (1000, 1), (64, 4), (1000, 4))
        out["batched"] = [batched(url, b, c, duration) for b, c in shapes]
        turns = ((1, 1), (1, 8), (64, 8)) if quick else ((1, 1), (1, 4), (1, 16), (64, 4), (64, 16))
        out["chained"] = [chained(url, b, c, duration) for b, c in turns]
        out["notify"] = [notify(url, n, 20 if quick else 200) for n in fanout]
        return out
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {HEAD}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgcommit", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per rate")
    parser.add_argument("--database", help="a scratch postgresql:// database")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter measurements")
    args = parser.parse_args(argv)
    from bench.servers import Databases

    with Databases(args.database or "postgresql") as databases:
        url = args.database or databases.cluster.new_database("commit")
        result = run(url, 0.5 if args.quick else args.duration, args.quick)
    print(
        f"PostgreSQL {result['settings']['server_version']}, fsync "
        f"{result['settings']['fsync']}, synchronous_commit "
        f"{result['settings']['synchronous_commit']}"
    )
    for row in result["single"]:
        print(
            f"  one row per transaction, {row['connections']:>2} connections: "
            f"{row['commits_per_s']:>9,.0f} commits/s"
        )
    for row in result["batched"]:
        print(
            f"  {row['batch']:>4} rows per transaction, {row['connections']} connection(s): "
            f"{row['rows_per_s']:>9,.0f} rows/s ({row['commits_per_s']:,.0f} commits/s)"
        )
    for row in result["chained"]:
        print(f"  chained (head row locked), {row['batch']:>2} rows per transaction, "
              f"{row['connections']:>2} connections: {row['commits_per_s']:>7,.0f} commits/s, "
              f"{row['rows_per_s']:>9,.0f} rows/s")  # fmt: skip
    for row in result["notify"]:
        print(
            f"  NOTIFY to {row['listeners']:>2} listeners: send -> last listener p50 "
            f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms, missing {row['missing']}"
        )
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
