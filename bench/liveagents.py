"""How long ``Store.live_agents`` (``tasklease_active_agents``) takes with every agent live.

Seeds a store with ``--agents`` registrations all within ``renewal_ceiling`` (each of an
app, with an attested ancestor in its lineage, a session, so that every test of the count
has rows to read), plus a few that are not live (revoked, released, of a deregistered
app, under a task- or chain-level revocation in force), then times the count::

    python -m bench.liveagents --store sqlite --agents 1000000
    python -m bench.liveagents --store postgres --agents 1000000   # a throwaway cluster

Rows go in through the store's own write transactions, in large batches. It prints the
count and the seconds each of ``--repeat`` counts took. Not a test: a million rows take
minutes to seed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NOW = 1_800_000_000.5
CEILING = 86_400
BATCH = 20_000
NOT_LIVE = 1000  # of each kind
LATER = NOW + 31  # after the chain-level entry has ended


def _agents(store: Any, total: int) -> int:
    from tasklease.core.store import AgentRecord, AgentSession, AppRecord, RevocationRecord

    key = bytes(range(32))
    with store.write() as tx:
        for app, status in (("app-live", "active"), ("app-gone", "deregistered")):
            tx.insert_app(
                AppRecord(
                    app_id=app,
                    name=app,
                    client_id=f"client-{app}",
                    secret_hash="hash",  # noqa: S106 (no secret: never verified)
                    scopes=("read:data:*",),
                    token_ttl=300,
                    status=status,
                    created_at=NOW - 10,
                    updated_at=NOW - 10,
                    created_by="admin",
                )
            )
        # The chain-level entry ends before LATER: the count is timed with it and without.
        for level, target, until in (
            ("task", "task-dead", NOW + 3600),
            ("chain", "attest:k8s_sat:idp:dead", NOW + 30),
        ):
            tx.insert_revocation(
                RevocationRecord(
                    level=level, target=target, revoked_at=int(NOW) - 5, expires_at=until
                )
            )
    expected = 0
    for lo in range(0, total, BATCH):
        with store.write() as tx:
            for i in range(lo, min(total, lo + BATCH)):
                kind = i // NOT_LIVE if i < 6 * NOT_LIVE else 6
                agent = AgentRecord(
                    agent_id=f"spiffe://tasklease.local/agent/o/t{i % 9973}/{i:016x}",
                    public_key=key,
                    orch_id="o",
                    task_id="task-dead" if kind == 3 else f"t{i % 9973}",
                    scope=("read:data:*",),
                    app_id="app-gone" if kind == 2 else "app-live",
                    client_id="client-app-live",
                    registered_at=NOW - CEILING + 60 + i * 1e-4,
                    status="revoked" if kind == 0 else "active",
                    lineage=(
                        "attest:k8s_sat:idp:dead" if kind == 4 else f"attest:k8s_sat:idp:{i % 97}",
                    ),
                    ceiling=int(NOW) - 1 if kind == 5 else 0,
                )
                tx.insert_agent(agent)
                tx.put_agent_session(
                    AgentSession(
                        agent_id=agent.agent_id,
                        principal="",
                        heartbeat_required=False,
                        last_heartbeat=NOW,
                        resumes=0,
                        state="released" if kind == 1 else "active",
                        expires_at=NOW + 3600,
                    )
                )
                expected += kind == 6
    return expected


def _time(store: Any, repeat: int, now: float) -> tuple[int, list[float]]:
    took, count = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = store.live_agents(now, float(int(now - CEILING) + 1))
        took.append(round(time.perf_counter() - t0, 3))
    return count, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.liveagents")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30.0, help="statement_timeout (s)")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite database")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="liveagents-") as tmp:
        cluster, url = None, ""
        if args.store == "sqlite":
            from tasklease.storage import SQLiteStore

            path = Path(tempfile.mkdtemp(prefix="liveagents-") if args.keep else tmp)
            store: Any = SQLiteStore(path / "broker.db")
            if args.keep:
                print(f"database: {path / 'broker.db'}")
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "postgres"))
            from pgcluster import Cluster  # type: ignore[import-not-found]

            from tasklease.core.config import Config
            from tasklease.storage import open_store

            cluster = Cluster.create()  # started
            url = cluster.new_database("live")
            store = open_store(url, config=Config(database_statement_timeout=args.timeout))
        try:
            t0 = time.perf_counter()
            expected = _agents(store, args.agents)
            seeded = round(time.perf_counter() - t0, 1)
            if url:  # the planner's statistics and visibility map, as autovacuum makes them
                import psycopg

                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
            count, took = _time(store, args.repeat, NOW)
            print(
                f"{args.store}: {args.agents} agents seeded in {seeded} s; with a chain-level"
                f" entry in force: live_agents = {count} (expected {expected}); seconds: {took}"
            )
            later, took = _time(store, args.repeat, LATER)
            print(
                f"{args.store}: with none: live_agents = {later} (expected "
                f"{expected + NOT_LIVE}); seconds: {took}"
            )
            return 0 if (count, later) == (expected, expected + NOT_LIVE) else 1
        finally:
            store.close()
            if cluster is not None:
                cluster.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
