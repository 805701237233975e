"""The audit queries the console and ``tasklease audit events`` make, on a large log:
``python -m bench.auditquery [--events N] [--quick]``.

Fills a SQLite store straight through ``append_audit`` with ``events`` events over 30 days
(batches of 10,000, the last 4,000 in batches of 100: the agent and task lookups behind
the log are filled as the broker fills them, and end 4,000 events behind, near their
largest lag, so the queries by agent and task also read the log's own rows for those):
one agent per ten events, one task per hundred, a principal on 70 % of them and one
outcome in ten not a success. Then times each query as ``store.query_audit`` runs it
(the count and the page; the median of ``rounds``, each with other values), and the
inventory's token lookup. Prints one JSON object: milliseconds per query.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DAY = 86_400.0
T0 = 1_800_000_000.0
BATCH = 10_000
TAIL, TAIL_BATCH = 4_000, 100
TYPES = ("token_issued", "token_renewed", "agent_registered", "delegation_created")
OUTCOMES = ("denied", "failure")


def _agent(i: int) -> str:
    return f"spiffe://tasklease.local/agent/orch/t{i // 10:06d}/{i:016x}"


def _fill(store: Any, events: int) -> None:
    from tasklease.core.clock import format_rfc3339
    from tasklease.core.store import AuditEvent

    agents, tasks = max(1, events // 10), max(1, events // 100)
    prev, seq = "0" * 64, 0
    while seq < events:
        rows = []
        left = events - seq
        batch = min(BATCH, left - TAIL) if left > TAIL else min(TAIL_BATCH, left)
        for _ in range(batch):
            seq += 1
            # Agents and tasks interleave as a busy broker's do: consecutive events belong
            # to different agents, each agent's events spread over its minutes of life.
            a = (seq * 7_919) % agents
            outcome = OUTCOMES[seq % 2] if seq % 10 == 0 else "success"
            digest = hashlib.sha256(f"{prev}{seq}".encode()).hexdigest()
            rows.append(
                AuditEvent(
                    seq,
                    format_rfc3339(T0 + seq * 30 * DAY / events),
                    TYPES[seq % 7 % len(TYPES)],
                    _agent(a),
                    f"task-{a % tasks}",
                    "orch",
                    f"Token issued, jti={seq:032x}, ttl=300",
                    "",
                    outcome,
                    0,
                    "",
                    "",
                    prev,
                    digest,
                    "default",
                    "",
                    f"user-{seq % 1_000}" if seq % 10 < 7 else "",
                    "",
                    2,
                )
            )
            prev = digest
        with store.write() as tx:
            tx.append_audit(rows)


def measure(events: int, rounds: int) -> dict[str, Any]:
    from tasklease.core.store import AuditQuery
    from tasklease.storage import SQLiteStore

    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-auditquery-"))
    try:
        path = folder / "audit.db"
        started = time.perf_counter()
        store = SQLiteStore(path)
        _fill(store, events)
        store.close()  # the planner's statistics (PRAGMA optimize), as a restart leaves them
        filled = time.perf_counter() - started
        store = SQLiteStore(path)
        rng = random.Random(18)  # noqa: S311 - which values to look up, not a secret
        agents, tasks = max(1, events // 10), max(1, events // 100)
        end = T0 + 30 * DAY
        queries: dict[str, Callable[[], AuditQuery]] = {
            "no filter, first page": lambda: AuditQuery(limit=100),
            "agent": lambda: AuditQuery(agent_id=_agent(rng.randrange(agents)), limit=100),
            "task": lambda: AuditQuery(task_id=f"task-{rng.randrange(tasks)}", limit=100),
            "task and event type": lambda: AuditQuery(
                task_id=f"task-{rng.randrange(tasks)}", event_type="token_renewed", limit=100
            ),
            "agent, denied": lambda: AuditQuery(
                agent_id=_agent(rng.randrange(agents)), outcome="denied", limit=100
            ),
            "event type": lambda: AuditQuery(event_type="delegation_created", limit=100),
            "outcome denied": lambda: AuditQuery(outcome="denied", limit=100),
            "event type and outcome denied": lambda: AuditQuery(
                event_type="token_renewed", outcome="denied", limit=100
            ),
            "the last hour": lambda: AuditQuery(since=end - 3_600, limit=100),
            "principal": lambda: AuditQuery(
                principal_ref=f"user-{rng.randrange(1_000)}", limit=100
            ),
        }
        out: dict[str, Any] = {
            "events": events,
            "fill_s": round(filled, 1),
            "lookups_behind": events - store.audit_indexed(),
        }
        for name, make in queries.items():
            times = []
            for _ in range(rounds):
                query = make()
                t0 = time.perf_counter()
                store.query_audit(query)
                times.append(time.perf_counter() - t0)
            out[name] = round(statistics.median(times) * 1e3, 3)
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 3 rounds")
    args = parser.parse_args(argv)
    events, rounds = (20_000, 3) if args.quick else (args.events, args.rounds)
    print(json.dumps(measure(events, rounds)))


if __name__ == "__main__":
    main()
