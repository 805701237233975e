"""Revocation propagation between two replicas on PostgreSQL (LISTEN/NOTIFY).

``python -m bench.propagation [--count 200] [--database postgresql://...]``

Starts two ``tasklease serve`` replicas (A and B) on one database (a throwaway cluster
in a temp dir unless ``--database`` names one; needs initdb/pg_ctl, see
scripts/ensure-postgres.sh), registers ``count`` agents on A, then for each: revoke it on
A and poll ``/v1/token/validate`` on B until B refuses the token. Reports p50/p99/max of

* ``from commit``: from A's answer to the revoke (the revocation is durable) to B's first
  refusal (includes one validate round trip of polling resolution, ~0.5 ms);
* ``from call``: from sending the revoke to B's first refusal;

and B's own ``tasklease_revocation_propagation_seconds`` (A's commit to B applying it).
The last line of output is the figures as JSON. Target: p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import re
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="revocations (default 200)")
    parser.add_argument("--database", help="a postgresql:// URL (default: throwaway cluster)")
    args = parser.parse_args(argv)
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
    c, s = result["from_commit"], result["from_call"]
    print(f"revocation propagation between two replicas, {result['revocations']} revocations")
    print(f"  from commit: p50 {c['p50_ms']} ms  p99 {c['p99_ms']} ms  max {c['max_ms']} ms")
    print(f"  from call:   p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms")
    m = result["server_metric_on_b"]
    metric = "tasklease_revocation_propagation_seconds"
    print(f"  B's {metric}: n={m['count']:g} mean {m['mean_ms']} ms")
    print("  target p99 < 100 ms:", "met" if c["p99_ms"] < 100 else "NOT met")
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
