"""In-process measurements, each run as its own process: ``python -m bench.inproc KIND JSON``.

- ``floor``         raw PyNaCl sign and verify, SHA-256 (one core), and the raw SQLite floor
                    for chained audit rows (hash + executemany + one fsync per batch).
- ``audit_append``  the broker's group committer (``core.audit.AuditLog``) on the SQLite
                    store, driven by N threads (``record``) or N coroutines in one event
                    loop (``arecord``); every call returns only once durable.
- ``audit_verify``  writes ``events`` chained events (format v2) and their Merkle tree with
                    the store's ``append_audit`` in big batches, then times ``tasklease
                    audit verify --database`` on them (chain walk and tree rebuilt).
- ``audit_proof``   inclusion and consistency proofs from a tree of ``leaves`` leaves
                    (``bench.auditlog``).
- ``offline_verify`` the resource-server verifier (``tasklease.verify.Verifier``, JWKS served
                    in memory, no feed): first-seen and cached verification rates of
                    broker-shaped tokens, against raw PyNaCl verify of the same signing
                    inputs, interleaved round by round in this one process; first-seen
                    twice: with a cache that only grows, and in steady state (a cache of
                    the default size already full, so every new token evicts one).
- ``offline_chain`` offline attenuation (``bench.offline_chain``): deriving one block, and
                    verifying a 5-hop chain against a single token verified the same way.
- ``memory``        a Broker (ManualClock, SQLite) holding registered agents, validated live
                    tokens and revoked token ids; RSS; then time passes and pruning runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nacl.signing

from bench.auditlog import audit_proof
from bench.offline_chain import offline_chain
from bench.report import summarize


def _rate(fn: Any, n: int, rounds: int = 5) -> float:
    """Best-of-``rounds`` operations per second of ``fn`` called ``n`` times."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def floor(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec.get("n", 3000)
    key = nacl.signing.SigningKey.generate()
    vkey = key.verify_key
    msg = os.urandom(300)
    signed = key.sign(msg)
    sig = signed.signature
    out = {
        "nacl_sign_per_s": _rate(lambda: key.sign(msg), n),
        "nacl_verify_per_s": _rate(lambda: vkey.verify(msg, sig), n),
        "sha256_per_s": _rate(lambda: hashlib.sha256(msg).digest(), n * 20),
    }
    out["sqlite_chained_rows_per_s"] = _sqlite_floor(spec.get("rows", 20000), spec.get("batch", 64))
    return out


def _sqlite_floor(rows: int, batch: int) -> float:
    """Chained ~300-byte rows, ``batch`` per transaction, WAL + synchronous=FULL."""
    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-floor-"))
    try:
        conn = sqlite3.connect(folder / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body TEXT, prev TEXT, hash TEXT)")
        prev = "0" * 64
        detail = "x" * 200
        started = time.perf_counter()
        seq = 0
        while seq < rows:
            params = []
            for _ in range(batch):
                seq += 1
                body = json.dumps([seq, "2026-01-01T00:00:00Z", "token_issued", detail])
                digest = hashlib.sha256((prev + body).encode()).hexdigest()
                params.append((seq, body, prev, digest))
                prev = digest
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", params)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
        return seq / elapsed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def audit_append(spec: dict[str, Any]) -> dict[str, Any]:
    """Durable audit appends through the group committer: ``threads`` threads calling
    ``AuditLog.record``, or (``"callers"`` in the spec) that many coroutines in one event
    loop awaiting ``AuditLog.arecord``, the path the server's handlers take."""
    from tasklease.core.audit import AuditLog
    from tasklease.core.auditformat import AuditEntry
    from tasklease.core.clock import SystemClock
    from tasklease.storage import SQLiteStore

    count, duration = spec["count"], spec["duration"]
    callers = spec.get("callers")
    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-audit-"))
    batches: list[int] = []
    try:
        store = SQLiteStore(folder / "audit.db")
        log = AuditLog(store, SystemClock(), on_batch=lambda size, _s: batches.append(size))
        latencies: list[float] = []
        lock = threading.Lock()
        issued = [0]
        deadline = time.perf_counter() + duration

        def entry(k: int, i: int) -> AuditEntry:
            return AuditEntry(
                "token_issued",
                agent_id=f"spiffe://tasklease.local/agent/bench/t{k}/{i:08x}",
                task_id=f"t{k}",
                orch_id="bench",
                detail=f"Token issued, jti={i:032x}, ttl=300",
            )

        def worker(k: int) -> None:
            mine: list[float] = []
            clock = time.perf_counter
            while clock() < deadline:
                with lock:
                    if issued[0] >= count:
                        break
                    issued[0] += 1
                    i = issued[0]
                event = entry(k, i)
                t0 = clock()
                log.record(event)
                mine.append(clock() - t0)
            with lock:
                latencies.extend(mine)

        async def caller(k: int) -> None:
            clock = time.perf_counter
            while clock() < deadline and issued[0] < count:
                issued[0] += 1
                event = entry(k, issued[0])
                t0 = clock()
                await log.arecord(event)
                latencies.append(clock() - t0)

        async def coroutines(n: int) -> None:
            await asyncio.gather(*(caller(k) for k in range(n)))

        started = time.perf_counter()
        if callers:
            asyncio.run(coroutines(callers))
        else:
            pool = [threading.Thread(target=worker, args=(k,)) for k in range(spec["threads"])]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        elapsed = time.perf_counter() - started
        log.close()
        head, _ = store.audit_head()
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = summarize(latencies, elapsed)
    result.update(
        threads=0 if callers else spec["threads"],
        callers=callers or 0,
        stored=head,
        errors=len(latencies) - head,
        mean_batch=round(sum(batches) / len(batches), 1) if batches else 0,
    )
    return result


def audit_verify(spec: dict[str, Any]) -> dict[str, Any]:
    from tasklease.core.auditformat import GENESIS_HASH, event_hash
    from tasklease.core.audittree import append_leaves
    from tasklease.core.clock import format_rfc3339
    from tasklease.core.store import AuditEvent
    from tasklease.rules.auditchain import event_leaf
    from tasklease.storage import SQLiteStore

    total, batch = spec["events"], spec.get("batch", 50_000)
    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-verify-"))
    try:
        path = folder / "verify.db"
        store = SQLiteStore(path)
        started = time.perf_counter()
        prev, seq = GENESIS_HASH, 0
        tree = None
        base = time.time()
        while seq < total:
            rows = []
            timestamp = format_rfc3339(base + seq / 1000)
            for _ in range(min(batch, total - seq)):
                seq += 1
                ev = AuditEvent(
                    seq=seq,
                    timestamp=timestamp,
                    event_type="token_issued",
                    agent_id=f"spiffe://tasklease.local/agent/bench/t{seq % 97}/{seq:08x}",
                    task_id=f"t{seq % 97}",
                    orch_id="bench",
                    detail=f"Token issued, jti={seq:032x}, ttl=300",
                    resource="",
                    outcome="success",
                    deleg_depth=0,
                    deleg_chain_hash="",
                    request_id=f"{seq:016x}",
                    prev_hash=prev,
                    hash="",
                    app_id=f"app-{seq % 7}",
                    principal_ref=f"{seq % 13:016x}",
                    version=2,
                )
                digest = event_hash(prev, seq, timestamp, ev)
                rows.append(dataclasses.replace(ev, hash=digest))
                prev = digest
            tree, tiles = append_leaves(tree, [event_leaf(e.hash) for e in rows])
            with store.write() as tx:
                tx.append_audit(rows)
                tx.append_audit_tree(tree, tiles)
        generated = time.perf_counter() - started
        store.close()
        t0 = time.perf_counter()
        proc = subprocess.run(  # noqa: S603 - our own interpreter and modules
            [
                sys.executable,
                "-c",
                "from tasklease.cli.main import main; main()",
                "audit",
                "verify",
                "--database",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        verify_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ok = proc.returncode == 0 and "intact" in proc.stdout and "Merkle tree" in proc.stdout
    return {
        "events": total,
        "generate_s": round(generated, 2),
        "verify_s": round(verify_s, 3),
        "events_per_s": round(total / verify_s, 1),
        "ok": ok,
        "output": (proc.stdout + proc.stderr).strip()[-300:],
    }


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory(spec: dict[str, Any]) -> dict[str, Any]:
    from tasklease.core.broker import Broker
    from tasklease.core.clock import ManualClock
    from tasklease.core.config import Config
    from tasklease.core.keys import load_or_create_keyring
    from tasklease.core.store import AgentRecord, RevocationRecord
    from tasklease.core.tokens import KIND_AGENT, mint
    from tasklease.http.app import create_app
    from tasklease.keystore.plaintext import PlaintextKeyProvider
    from tasklease.storage import SQLiteStore

    agents, tokens, revoked = spec["agents"], spec["tokens"], spec["revoked"]
    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-memory-"))
    try:
        cfg = Config(data_dir=str(folder), database=str(folder / "m.db"), key_dir=str(folder / "k"))
        clock = ManualClock(time.time())
        store = SQLiteStore(cfg.database)
        keyring = load_or_create_keyring(Path(cfg.key_dir), PlaintextKeyProvider())
        broker = Broker(cfg, store, keyring, clock=clock)
        create_app(broker, background=False)  # the HTTP layer's modules count too
        gc.collect()
        rss_empty = _rss_kib()
        now = clock.now()
        key = bytes(nacl.signing.SigningKey.generate().verify_key)
        started = time.perf_counter()
        # Agents as registration stores them (one row each), in large transactions.
        for lo in range(0, agents, 10_000):
            with store.write() as tx:
                for i in range(lo, min(agents, lo + 10_000)):
                    tx.insert_agent(
                        AgentRecord(
                            agent_id=f"spiffe://tasklease.local/agent/bench/t{i}/{i:016x}",
                            public_key=key,
                            orch_id="bench",
                            task_id=f"t{i}",
                            scope=("read:data:*",),
                            app_id="",
                            client_id="admin",
                            registered_at=now,
                        )
                    )
        # Live tokens: minted and validated once each through the broker (it keeps no
        # per-token state; any cache it grew would show here). The bench keeps only jtis.
        jtis: list[str] = []
        for i in range(tokens):
            token, claims = mint(
                keyring,
                kind=KIND_AGENT,
                iss=cfg.issuer,
                sub=f"spiffe://tasklease.local/agent/bench/t{i % agents}/{i:016x}",
                aud=cfg.audience,
                iat=int(now),
                ttl=cfg.default_ttl,
                scope=("read:data:*",),
                client_id="admin",
                task_id=f"t{i}",
                orch_id="bench",
            )
            broker.validate(token)
            if i < revoked:
                jtis.append(claims.jti)
        # Revoked token ids: written to the store in batches, then picked up the way a
        # worker picks up another worker's revocations.
        expiry = int(now) + cfg.default_ttl + cfg.clock_skew + 1
        for lo in range(0, len(jtis), 10_000):
            with store.write() as tx:
                for jti in jtis[lo : lo + 10_000]:
                    tx.insert_revocation(RevocationRecord("token", jti, int(now), expiry))
        del jtis
        broker.refresh_revocations()
        build_s = time.perf_counter() - started
        gc.collect()
        rss_loaded = _rss_kib()
        index_before = len(broker.revocations)
        clock.advance(cfg.max_ttl + cfg.clock_skew + 2)
        t0 = time.perf_counter()
        pruned = broker.prune()
        prune_s = time.perf_counter() - t0
        gc.collect()
        result = {
            "agents": agents,
            "tokens": tokens,
            "revoked": revoked,
            "build_s": round(build_s, 2),
            "rss_empty_mb": round(rss_empty / 1024, 1),
            "rss_mb": round(rss_loaded / 1024, 1),
            "revocation_index_before_prune": index_before,
            "pruned": pruned,
            "revocation_index_after_prune": len(broker.revocations),
            "prune_s": round(prune_s, 3),
            "rss_after_prune_mb": round(_rss_kib() / 1024, 1),
        }
        store.close()
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def offline_verify(spec: dict[str, Any]) -> dict[str, Any]:
    """First-seen and cached ``Verifier.verify`` rates vs raw ``VerifyKey.verify``.

    Tokens are minted by the broker's own ``core.tokens.mint`` (claims of a registered
    agent: SPIFFE subject, three audiences, task and orchestration ids, ``agent_jwk``), each
    distinct, so every first-seen verification parses, verifies, checks claims and fills
    the cache. Raw PyNaCl verifies the very same signing inputs. Best of ``rounds``,
    interleaved so both see the same machine state.
    """
    import httpx

    from tasklease.core.keys import KeyRing
    from tasklease.core.tokens import KIND_AGENT, mint
    from tasklease.verify import Verifier

    n, rounds = spec.get("n", 3000), spec.get("rounds", 5)
    ring = KeyRing.generate()
    jwks = ring.jwks()
    verifier = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        feed=False,
        cache_size=n * rounds + 1,
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=jwks)),
    )
    verifier.start()
    now = int(time.time())
    agent_key = bytes(nacl.signing.SigningKey.generate().verify_key)

    def token(i: int) -> str:
        text, _ = mint(
            ring,
            kind=KIND_AGENT,
            iss="tasklease",
            sub=f"spiffe://tasklease.local/agent/bench-orch/task-{i:06d}/{os.urandom(8).hex()}",
            aud=("svc-a", "svc-b", "https://tools.example/mcp"),
            iat=now,
            ttl=600,
            scope=("read:data:*", "write:data:42"),
            client_id="admin",
            task_id=f"task-{i:06d}",
            orch_id="bench-orch",
            principal="admin",
            agent_key=agent_key,
        )
        return text

    batches = [[token(r * n + i) for i in range(n)] for r in range(rounds)]
    # Steady state: a second verifier whose cache (default size unless the spec says)
    # is already full of other tokens, so each first-seen token also evicts one.
    steady_size = spec.get("steady_cache", 10_000)
    steady = Verifier(
        "https://broker.invalid",
        audience="svc-a",
        feed=False,
        cache_size=steady_size,
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=jwks)),
    )
    steady.start()
    for i in range(steady_size):
        steady.verify(token(10_000_000 + i))
    vkey = ring.verify_key(ring.active_kid)
    if vkey is None:
        raise RuntimeError("the key ring has no active verify key")
    from tasklease.rules import jws as _jws

    def split(tok: str) -> tuple[bytes, bytes]:
        head, _, sig = tok.rpartition(".")
        return head.encode("ascii"), _jws.b64url_decode(sig)

    raw_inputs = [[split(t) for t in batch] for batch in batches]
    best_raw = best_first = best_cached = best_steady = float("inf")
    hot = batches[0][0]
    verifier.verify(hot)
    for r in range(rounds):
        inputs = raw_inputs[r]
        t0 = time.perf_counter()
        for message, signature in inputs:
            vkey.verify(message, signature)
        best_raw = min(best_raw, time.perf_counter() - t0)
        batch = batches[r]
        t0 = time.perf_counter()
        for tok in batch:
            verifier.verify(tok)
        best_first = min(best_first, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for tok in batch:
            steady.verify(tok)
        best_steady = min(best_steady, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n):
            verifier.verify(hot)
        best_cached = min(best_cached, time.perf_counter() - t0)
    stats = verifier.stats()
    verifier.close()
    steady.close()
    raw, first, cached = n / best_raw, n / best_first, n / best_cached
    first_steady = n / best_steady
    return {
        "n": n,
        "rounds": rounds,
        "token_bytes": len(hot),
        "nacl_verify_per_s": round(raw, 1),
        "first_seen_per_s": round(first, 1),
        "cached_per_s": round(cached, 1),
        "first_seen_ratio": round(first / raw, 3),
        "first_seen_steady_per_s": round(first_steady, 1),
        "first_seen_steady_ratio": round(first_steady / raw, 3),
        "steady_cache": steady_size,
        "cached_ratio": round(cached / raw, 3),
        "cached_tokens": stats["cached_tokens"],
    }


def main() -> None:
    kind, spec = sys.argv[1], json.loads(sys.argv[2])
    fn = {
        "floor": floor,
        "audit_append": audit_append,
        "audit_verify": audit_verify,
        "memory": memory,
        "offline_verify": offline_verify,
        "audit_proof": audit_proof,
        "offline_chain": offline_chain,
    }[kind]
    sys.stdout.write(json.dumps(fn(spec)) + "\n")


if __name__ == "__main__":
    main()
