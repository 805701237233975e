"""``python -m bench``: run every scenario, print one table, write the figures as JSON.

The broker runs on SQLite (default) or, with ``--database postgresql``, on PostgreSQL: a
throwaway cluster in a temp directory (needs initdb/pg_ctl, see scripts/ensure-postgres.sh)
with a fresh database per broker configuration, or ``--database postgresql://...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.offline_chain import chain_rows
from bench.report import format_table, write_json
from bench.servers import ADMIN_SECRET, REPO, Broker, Databases, EmptyServer

CORES = os.cpu_count() or 1
NO_DB = "no database"
IN_PROCESS = ("audit", "verify", "proof", "memory", "chain")

# How many HTTP requests, Ed25519 verifications and signatures each operation needs at
# the least: its floor is the empty-request cost plus that cryptography.
COMPOSITION = {
    "register": (2, 1, 1),  # challenge + register; verify the agent's proof; sign its token
    "renew": (1, 1, 1),  # bearer check; sign the successor
    "validate": (1, 1, 0),
    "validate_uncached": (1, 1, 0),
    "protected": (1, 1, 0),
    "delegate": (1, 1, 2),  # bearer check; sign the delegation record and the token
    "revoke": (1, 1, 0),
    "release": (1, 1, 0),  # bearer check
    "launch": (1, 1, 0),  # the operator's bearer check; the launch token is random bytes
    "heartbeat": (1, 2, 0),  # bearer check; the heartbeat's signature
    # initiate, respond, complete: three bearer checks, the two tickets opened and the two
    # transcripts' signatures; the offer, the answer and the receipt signed.
    "handshake": (3, 7, 3),
    "renew_dpop": (1, 2, 1),  # bearer check and the DPoP proof; sign the successor
    "validate_dpop": (1, 2, 0),  # the token and the forwarded proof
    "introspect": (1, 2, 0),  # the caller's token and the introspected one
    "calls": (1, 1, 0),  # the counted token
    "resume": (2, 1, 1),  # challenge + resume; verify the agent's proof; sign its token
}
LABELS = {
    "register": "full registration (challenge+register)",
    "renew": "renew",
    "validate": "validate /v1/token/validate",
    "validate_uncached": "validate, every signature verified (token_cache_size 0)",
    "protected": "protected call (GET /v1/admin/apps/{id})",
    "delegate": "delegate",
    "revoke": "revoke (token level)",
    "release": "release",
    "launch": "launch token (POST /v1/admin/launch-tokens)",
    "heartbeat": "heartbeat (signed)",
    "handshake": "mutual authentication (initiate+respond+complete)",
    "renew_dpop": "renew, DPoP-bound (a fresh proof each)",
    "validate_dpop": "validate, DPoP proof forwarded",
    "introspect": "introspect (RFC 7662)",
    "calls": "count a call (POST /v1/token/calls, max_calls)",
    "resume": "resume (challenge+resume)",
    "empty": "floor: empty Starlette GET",
    "propagation": "revocation propagation across workers",
}
TARGETS = {
    ("validate", 2): ">= 4,000/s, p99 < 20 ms",
    ("register", 2): ">= 800/s, p99 < 50 ms",
}

FULL = {
    "duration": 8.0,
    "counts": {
        "empty": 150_000,
        "validate": 80_000,
        "protected": 60_000,
        "register": 12_000,
        "renew": 12_000,
        "delegate": 20_000,
        "revoke": 20_000,
        "release": 6_000,
        "launch": 20_000,
        "heartbeat": 20_000,
        "handshake": 5_000,
        "renew_dpop": 12_000,
        "validate_dpop": 40_000,
        "introspect": 60_000,
        "calls": 20_000,
        "resume": 12_000,
        "propagation": 40,
    },
    # 40 writer threads: the server's thread pool, i.e. the most blocking operations that
    # can be waiting on one commit at once. Coroutines (the server's registration path)
    # are not bounded by the pool: 40 in flight, and 1,000 (a loaded server's worth).
    "audit_append": {"threads": 40, "count": 300_000, "duration": 8.0},
    "audit_append_async": [
        {"callers": 40, "count": 300_000, "duration": 8.0},
        {"callers": 1000, "count": 300_000, "duration": 8.0},
    ],
    "audit_verify": {"events": 1_000_000},
    "audit_proof": {"leaves": 10_000_000, "proofs": 2000},
    "memory": {"agents": 100_000, "tokens": 100_000, "revoked": 100_000},
    "floor": {"n": 3000, "rows": 30_000, "batch": 64},
    "offline": {"n": 3000, "rounds": 7},
    "chain": {"n": 1000, "rounds": 9},
}
QUICK = {
    "duration": 1.0,
    "counts": {k: (3 if k == "propagation" else 30) for k in FULL["counts"]},
    "audit_append": {"threads": 4, "count": 200, "duration": 1.0},
    "audit_append_async": [{"callers": 8, "count": 200, "duration": 1.0}],
    "audit_verify": {"events": 2000},
    "audit_proof": {"leaves": 5000, "proofs": 50},
    "memory": {"agents": 300, "tokens": 300, "revoked": 300},
    "floor": {"n": 200, "rows": 640, "batch": 64},
    "offline": {"n": 300, "rounds": 3, "steady_cache": 300},
    "chain": {"n": 100, "rounds": 3},
}


def _python(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(  # noqa: S603 - our own interpreter and modules
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loadgen(port: int, scenario: str, plan: dict[str, Any], connections: int) -> dict[str, Any]:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "scenario": scenario,
        "connections": connections,
        "count": plan["counts"][scenario],
        "duration": plan["duration"],
        "secret": ADMIN_SECRET,
    }
    return _python(["-m", "bench.loadgen", json.dumps(spec)])


def inproc(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _python(["-m", "bench.inproc", kind, json.dumps(spec)])


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _floor_rps(op: str, empty_rps: float, floor: dict[str, float], workers: int) -> float:
    n_http, n_verify, n_sign = COMPOSITION[op]
    crypto = n_verify / floor["nacl_verify_per_s"] + n_sign / floor["nacl_sign_per_s"]
    per_op = n_http / empty_rps + crypto / min(workers, CORES)
    return 1 / per_op


def run_config(
    workers: int,
    loop: str,
    scenarios: list[str],
    plan: dict[str, Any],
    connections: int,
    floor: dict[str, float],
    databases: Databases,
    *,
    uncached: bool = False,
) -> list[dict[str, Any]]:
    """Measure the empty floor and ``scenarios`` against one broker configuration (and
    validation with the token cache off too, when ``uncached``)."""
    rows = []
    db = databases.kind
    tag = f"{loop}, {workers}w"
    with EmptyServer(workers=workers, loop=loop) as empty_server:
        _log(f"empty floor [{tag}]")
        empty = loadgen(empty_server.port, "empty", plan, connections)
    rows.append(
        {
            "operation": f"{LABELS['empty']} [{tag}, {NO_DB}]",
            "key": "empty",
            **_cfg(workers, loop),
            "database": None,
            **empty,
        }
    )
    if db != "sqlite":
        _log(f"preparing the {db} database [{tag}]")
    with Broker(workers=workers, loop=loop, database_url=databases.new_url()) as broker:
        for name in scenarios:
            _log(f"{name} [{tag}, {db}]")
            result = loadgen(broker.port, name, plan, connections)
            row = {
                "operation": f"{LABELS[name]} [{tag}, {db}]",
                "key": name,
                **_cfg(workers, loop),
                "database": db,
                **result,
            }
            if name in COMPOSITION:
                row["floor_rps"] = round(_floor_rps(name, empty["rps"], floor, workers), 1)
                row["ratio"] = round(result["rps"] / row["floor_rps"], 3)
            if name == "propagation":
                row["rps"] = None
            row["target"] = TARGETS.get((name, workers), "")
            rows.append(row)
        rss = sum(_rss(pid) for pid in broker.worker_pids())
        rows[-1]["server_rss_mb_total"] = round(rss / 1024, 1)
    if uncached and "validate" in scenarios:
        rows.append(_uncached_validation(workers, loop, plan, connections, floor, databases, empty))
    return rows


def _uncached_validation(
    workers: int,
    loop: str,
    plan: dict[str, Any],
    connections: int,
    floor: dict[str, float],
    databases: Databases,
    empty: dict[str, Any],
) -> dict[str, Any]:
    """Validation with the token cache off (decision 122): every use verifies the token's
    signature, as a validation of tokens the worker has not seen before does."""
    tag, db = f"{loop}, {workers}w", databases.kind
    settings = {"TASKLEASE_TOKEN_CACHE_SIZE": "0"}
    with Broker(
        workers=workers, loop=loop, database_url=databases.new_url(), settings=settings
    ) as broker:
        _log(f"validate, token cache off [{tag}, {db}]")
        result = loadgen(broker.port, "validate", plan, connections)
    floor_rps = round(_floor_rps("validate_uncached", empty["rps"], floor, workers), 1)
    return {
        "operation": f"{LABELS['validate_uncached']} [{tag}, {db}]",
        "key": "validate_uncached",
        **_cfg(workers, loop),
        "database": db,
        **result,
        "floor_rps": floor_rps,
        "ratio": round(result["rps"] / floor_rps, 3),
        "target": "",
    }


def _rss(pid: int) -> int:
    from bench.servers import rss_kib

    try:
        return rss_kib(pid)
    except OSError:
        return 0


def _cfg(workers: int, loop: str) -> dict[str, Any]:
    return {"workers": workers, "loop": loop}


def _woken_propagation_row(count: int) -> dict[str, Any]:
    """Revocation propagation between two SQLite workers with one validator on each, not
    saturated (``bench.propagation``): the wake-up itself, which the saturated row above
    hides behind validate's own latency at full load."""
    from bench.propagation import measure_sqlite

    label = "revocation propagation, one validator per worker [asyncio, 2w, sqlite]"
    _log(label)
    result = measure_sqlite(count, wake=True)
    commit, call = result["from_commit"], result["from_call"]
    return {
        "operation": label,
        "key": "propagation_woken",
        **_cfg(2, "asyncio"),
        "database": "sqlite",
        "p50_ms": commit["p50_ms"],
        "p99_ms": commit["p99_ms"],
        "n": count,
        "errors": 0,
        "from_call": call,
        "note": f"from the revoke's answer; from the call p50 {call['p50_ms']} ms, "
        f"p99 {call['p99_ms']} ms",
        "target": "p99 < 5 ms",
    }


def _inproc_rows(
    parts: set[str], plan: dict[str, Any], floor: dict[str, float]
) -> list[dict[str, Any]]:
    """The in-process parts: audit append/verify and memory on SQLite, offline verify."""
    rows: list[dict[str, Any]] = []
    if "audit" in parts:
        _log("audit append (group commit, in-process)")
        audit = inproc("audit_append", plan["audit_append"])
        rows.append(
            {
                "operation": f"audit append, durable ({audit['threads']} threads, "
                f"mean batch {audit['mean_batch']}) [sqlite]",
                "key": "audit_append",
                "database": "sqlite",
                **audit,
                "floor_rps": round(floor["sqlite_chained_rows_per_s"], 1),
                "ratio": round(audit["rps"] / floor["sqlite_chained_rows_per_s"], 3),
                "target": ">= 20,000/s",
            }
        )
        for spec in plan["audit_append_async"]:
            _log(f"audit append (group commit, {spec['callers']} coroutines)")
            audit = inproc("audit_append", spec)
            rows.append(
                {
                    "operation": f"audit append, durable ({audit['callers']} coroutines, "
                    f"mean batch {audit['mean_batch']}) [sqlite]",
                    "key": f"audit_append_async_{audit['callers']}",
                    "database": "sqlite",
                    **audit,
                    "floor_rps": round(floor["sqlite_chained_rows_per_s"], 1),
                    "ratio": round(audit["rps"] / floor["sqlite_chained_rows_per_s"], 3),
                    "target": ">= 20,000/s",
                }
            )
    _log("offline verification (tasklease.verify)")
    rows.append(_offline_verify_row(floor, plan["offline"]))
    if "chain" in parts:
        _log("offline attenuation: derivation and 5-hop chain verification")
        rows += chain_rows(inproc("offline_chain", plan["chain"]))
    if "verify" in parts:
        _log(f"audit verify over {plan['audit_verify']['events']:,} events")
        verify = inproc("audit_verify", plan["audit_verify"])
        rows.append(
            {
                "operation": f"tasklease audit verify, {verify['events']:,} events [sqlite]",
                "key": "audit_verify",
                "database": "sqlite",
                "rps": verify["events_per_s"],
                "n": verify["events"],
                "errors": 0 if verify["ok"] else 1,
                "note": f"{verify['verify_s']:.2f} s",
                "target": "< 30 s for 1,000,000",
                **{k: v for k, v in verify.items() if k not in ("events_per_s",)},
            }
        )
    if "proof" in parts:
        leaves = plan["audit_proof"]["leaves"]
        _log(f"audit log proofs at {leaves:,} leaves")
        proof = inproc("audit_proof", plan["audit_proof"])
        rows.append(
            {
                "operation": f"audit inclusion proof, server side, {leaves:,} leaves [sqlite]",
                "key": "audit_proof",
                "database": "sqlite",
                "rps": proof["inclusion_rps"],
                "n": proof["proofs"],
                "errors": 0 if proof["verified"] else 1,
                "p50_ms": proof["inclusion_p50_ms"],
                "p99_ms": proof["inclusion_p99_ms"],
                "note": f"consistency p50 {proof['consistency_p50_ms']} ms, p99 "
                f"{proof['consistency_p99_ms']} ms; tree built in {proof['build_s']} s, "
                f"{proof['db_mb']} MB",
                "target": "< 1 ms",
                **proof,
            }
        )
    if "memory" in parts:
        m = plan["memory"]
        _log(f"memory: {m['agents']:,} agents, {m['tokens']:,} tokens, {m['revoked']:,} revoked")
        mem = inproc("memory", m)
        rows.append(
            {
                "operation": f"memory: {mem['agents']:,} agents / {mem['tokens']:,} live tokens "
                f"/ {mem['revoked']:,} revoked [sqlite]",
                "key": "memory",
                "database": "sqlite",
                "note": f"RSS {mem['rss_mb']} MB (empty broker {mem['rss_empty_mb']} MB); "
                f"revocation index {mem['revocation_index_before_prune']:,} -> "
                f"{mem['revocation_index_after_prune']:,} after pruning",
                "target": "< 250 MB; index near empty",
                **mem,
            }
        )
    return rows


def _offline_verify_row(floor: dict[str, float], spec: dict[str, Any]) -> dict[str, Any]:
    """The verifier's first-seen rate against raw PyNaCl verify measured in the same run.

    ``floor_rps``/``ratio`` compare with PyNaCl verifying the very same signing inputs in
    the same process (interleaved rounds); the one-core floor of this run is kept beside.
    """
    result = inproc("offline_verify", spec)
    raw, first, cached = (
        result["nacl_verify_per_s"],
        result["first_seen_per_s"],
        result["cached_per_s"],
    )
    return {
        "operation": f"offline verification (tasklease.verify), first-seen tokens [{NO_DB}]",
        "key": "offline",
        "database": None,
        "rps": first,
        "n": result["n"],
        "errors": 0,
        "floor_rps": raw,
        "ratio": result["first_seen_ratio"],
        "note": f"steady state (cache of {result['steady_cache']:,} full): "
        f"{result['first_seen_steady_ratio']:.2f} x; "
        f"cached {cached:,.0f}/s ({result['cached_ratio']:.1f} x raw verify); "
        f"{result['token_bytes']}-byte tokens; one-core floor verify "
        f"{floor['nacl_verify_per_s']:,.0f}/s",
        "target": ">= 0.8 x PyNaCl verify (first-seen); cached far above",
        **result,
    }


def _database_arg(value: str) -> str:
    if value in ("sqlite", "postgresql") or value.startswith(("postgresql://", "postgres://")):
        return value
    raise argparse.ArgumentTypeError("expected sqlite, postgresql or a postgresql:// URL")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--workers", type=int, default=2, help="broker workers (default 2)")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument("--duration", type=float, help="seconds per scenario (upper bound)")
    parser.add_argument(
        "--database",
        type=_database_arg,
        default="sqlite",
        metavar="{sqlite,postgresql,postgresql://...}",
        help="the broker's database (default sqlite). postgresql: a throwaway cluster in a "
        "temp dir (initdb/pg_ctl, see scripts/ensure-postgres.sh; fsync on) with a fresh "
        "database per broker configuration. A postgresql:// URL: that existing database, "
        "migrated and written to by every configuration (use a scratch database). With "
        "PostgreSQL only the http and sweep parts run: the in-process parts (audit, "
        "verify, memory, offline verification) measure SQLite or no database and are "
        "skipped; run them without --database",
    )
    parser.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure validate and register with 1/2 workers x asyncio/uvloop "
        "(default: on, off with --quick)",
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of the http part's scenarios: register, renew, "
        "validate, protected, delegate, revoke, release, propagation (default all)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated subset: http,sweep,audit,verify,proof,memory,chain (default all; "
        "with PostgreSQL only http,sweep run)",
    )
    args = parser.parse_args(argv)
    plan = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.duration:
        plan["duration"] = args.duration
    sweep = (not args.quick) if args.sweep is None else args.sweep
    parts = set((args.only or "http,sweep,audit,verify,proof,memory,chain").split(","))
    if not sweep:
        parts.discard("sweep")
    databases = Databases(args.database)
    in_process = databases.kind == "sqlite"
    if not in_process:
        skipped = [*sorted(parts.intersection(IN_PROCESS)), "offline verification"]
        parts.difference_update(IN_PROCESS)
        _log(
            f"{databases.kind}: skipping the in-process parts ({', '.join(skipped)}): they "
            "measure SQLite or no database; run them without --database"
        )
    started = time.time()
    _log(f"floors ({'quick' if args.quick else 'full'} mode, {CORES} cores)")
    floor = inproc("floor", plan["floor"])
    rows: list[dict[str, Any]] = []
    main_scenarios = [
        "register",
        "renew",
        "validate",
        "protected",
        "delegate",
        "revoke",
        "release",
        "launch",
        "heartbeat",
        "handshake",
        "renew_dpop",
        "validate_dpop",
        "introspect",
        "calls",
        "resume",
    ]
    if args.workers > 1:
        main_scenarios.append("propagation")
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = set(wanted) - set(main_scenarios)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        main_scenarios = [name for name in main_scenarios if name in wanted]
    server: dict[str, Any] = {}
    with databases:
        if databases.kind != "sqlite":
            server = databases.describe()
            _log(f"{databases.kind}: {server}")
        if "http" in parts:
            rows += run_config(
                args.workers,
                args.loop,
                main_scenarios,
                plan,
                args.connections,
                floor,
                databases,
                uncached=True,
            )
            woken = "propagation" in main_scenarios and args.workers == 2
            if woken and databases.kind == "sqlite" and not args.quick:
                rows.append(_woken_propagation_row(200))
        if in_process:
            rows += _inproc_rows(parts, plan, floor)
        if "sweep" in parts:
            for workers, loop in ((1, "asyncio"), (1, "uvloop"), (2, "asyncio"), (2, "uvloop")):
                if workers == args.workers and loop == args.loop and "http" in parts:
                    continue
                rows += run_config(
                    workers,
                    loop,
                    ["validate", "register"],
                    plan,
                    args.connections,
                    floor,
                    databases,
                )
    document = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "cores": CORES,
        "python": sys.version.split()[0],
        "connections": args.connections,
        "duration_per_scenario_s": plan["duration"],
        "workers": args.workers,
        "loop": args.loop,
        "database": databases.kind,
        **({"database_server": server} if server else {}),
        "floor": {k: round(v, 1) for k, v in floor.items()},
        "rows": rows,
        "wall_s": round(time.time() - started, 1),
    }
    print(format_table(rows))
    sqlite_floor = (
        f"; SQLite chained rows (batch {plan['floor']['batch']}, FULL) "
        f"{floor['sqlite_chained_rows_per_s']:,.0f}/s"
        if in_process
        else ""
    )
    print(
        f"\nfloor (one core): PyNaCl sign {floor['nacl_sign_per_s']:,.0f}/s, verify "
        f"{floor['nacl_verify_per_s']:,.0f}/s, SHA-256 {floor['sha256_per_s']:,.0f}/s"
        f"{sqlite_floor}. Floor of an operation = its HTTP "
        f"requests at the empty-Starlette rate + its Ed25519 work spread over the workers. "
        f"{args.connections} connections, <= {plan['duration']} s per scenario; "
        f"database {databases.kind}."
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.json or REPO / "bench" / "results" / f"{stamp}.json"
    write_json(path, document)
    print(f"JSON: {path}")
