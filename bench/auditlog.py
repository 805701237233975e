"""The transparent audit log's proofs, measured in process: ``python -m bench.inproc
audit_proof JSON``.

Builds a tree of ``leaves`` leaves straight into a SQLite store's tiles (the leaves are
hashes of their index: no events, which would take the audit-append rate to write), then
times what ``GET /v1/audit/proof/inclusion`` and ``.../consistency`` do on the server,
without HTTP: read the tree row, read the tiles the proof needs, fold them, and the root
at the asked size. A sample of the proofs is verified against the tree's root.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import summarize


def audit_proof(spec: dict[str, Any]) -> dict[str, Any]:
    from tasklease.core.audittree import append_leaves, consistency_proof, inclusion_proof, root_at
    from tasklease.rules.merkle import verify_consistency, verify_inclusion
    from tasklease.storage import SQLiteStore

    total, proofs = spec["leaves"], spec["proofs"]
    chunk = spec.get("chunk", 250_000)
    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-proof-"))

    def leaf(i: int) -> bytes:
        return hashlib.sha256(i.to_bytes(8, "big")).digest()

    try:
        store = SQLiteStore(folder / "proof.db")
        started = time.perf_counter()
        tree = None
        done = 0
        while done < total:
            batch = [leaf(i) for i in range(done, min(total, done + chunk))]
            tree, tiles = append_leaves(tree, batch)
            with store.write() as tx:
                tx.append_audit_tree(tree, tiles)
            done += len(batch)
        build_s = time.perf_counter() - started
        if tree is None:
            raise RuntimeError("no leaves")
        rng = random.Random(18)  # noqa: S311 - which leaves to prove, not a secret
        clock = time.perf_counter
        inclusion: list[float] = []
        checked = 0
        for k in range(proofs):
            index = rng.randrange(total)
            t0 = clock()
            current = store.audit_tree()
            proof = inclusion_proof(store, current, index, total)
            root = root_at(store, current, total)
            inclusion.append(clock() - t0)
            if k < 50:
                verify_inclusion(leaf(index), index, total, proof, root)
                checked += 1
        consistency: list[float] = []
        for k in range(proofs):
            first = rng.randrange(1, total)
            t0 = clock()
            current = store.audit_tree()
            proof = consistency_proof(store, current, first, total)
            consistency.append(clock() - t0)
            if k < 20:
                old = root_at(store, current, first)
                verify_consistency(first, total, proof, old, tree.root)
        size = (folder / "proof.db").stat().st_size + (folder / "proof.db-wal").stat().st_size
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    inc, cons = summarize(inclusion, sum(inclusion)), summarize(consistency, sum(consistency))
    return {
        "leaves": total,
        "build_s": round(build_s, 1),
        "db_mb": round(size / 1e6, 1),
        "proofs": proofs,
        "verified": checked,
        "inclusion_rps": inc["rps"],
        "inclusion_p50_ms": inc["p50_ms"],
        "inclusion_p99_ms": inc["p99_ms"],
        "consistency_p50_ms": cons["p50_ms"],
        "consistency_p99_ms": cons["p99_ms"],
    }
