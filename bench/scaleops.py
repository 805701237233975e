"""One size of the scaling benchmark, in a process of its own so that its RSS is its own:
``python -m bench.scaleops JSON`` over a database ``bench.scaleseed`` filled.

Times the broker's start-up on the seeded file (open and check the store, build the
``Broker``, which loads the revocation index, build the HTTP app, let the Merkle tree
catch up), the process's RSS, then the main operations called in process one by one
(``Broker`` methods, no HTTP; challenge, signing and picking arguments outside the
timing), and delegation trees of depth 1-5 and fan-out 1-100. Prints one JSON line.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing

from bench.report import summarize
from bench.scaleseed import agent_id

SCOPE = ["read:data:*"]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _timed(
    fn: Callable[[Any], Any], n: int, prepare: Callable[[int], Any] = lambda i: i
) -> dict[str, Any]:
    """``fn(prepare(i))`` for i < n, only ``fn`` timed."""
    latencies = []
    clock = time.perf_counter
    started = clock()
    for i in range(n):
        arg = prepare(i)
        t0 = clock()
        fn(arg)
        latencies.append(clock() - t0)
    _log(f"{getattr(fn, '__name__', fn)}: {n} in {clock() - started:.2f} s")
    return summarize(latencies, sum(latencies))


def _log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Harness:
    """A broker over the seeded database, an admin, and a supply of launch tokens."""

    def __init__(self, path: Path, key_dir: Path) -> None:
        from tasklease.core.broker import Broker
        from tasklease.core.config import Config
        from tasklease.core.kernel import RequestContext
        from tasklease.core.keys import load_or_create_keyring
        from tasklease.http.app import create_app
        from tasklease.keystore.plaintext import PlaintextKeyProvider
        from tasklease.storage import SQLiteStore

        self.startup: dict[str, float] = {}
        clock = time.perf_counter
        t0 = clock()
        self.store = SQLiteStore(path)
        t1 = clock()
        keyring = load_or_create_keyring(key_dir, PlaintextKeyProvider())
        t2 = clock()
        cfg = Config(data_dir=str(key_dir.parent), database=str(path), key_dir=str(key_dir))
        self.broker = broker = Broker(cfg, self.store, keyring, nonce_secret=b"s" * 32)
        t3 = clock()
        create_app(broker, background=False)
        t4 = clock()
        while broker.audit.catch_up_tree():
            pass
        t5 = clock()
        self.startup = {
            "open_store_s": t1 - t0,
            "keys_s": t2 - t1,
            "broker_s": t3 - t2,
            "app_s": t4 - t3,
            "tree_catch_up_s": t5 - t4,
            "total_s": t5 - t0,
        }
        self.ctx = RequestContext(request_id="scale", remote="127.0.0.1", path="/bench")
        self.admin = self._admin()
        self._launch = ""
        self._uses = 0
        self.registered = 0

    def _admin(self) -> Any:
        from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint

        _, claims = mint(
            self.broker.keyring, kind=KIND_ADMIN, iss="tasklease", sub="admin",
            aud=("tasklease",), iat=int(time.time()), ttl=3000, scope=ADMIN_SCOPES,
            client_id="admin",
        )  # fmt: skip
        return claims

    def launch(self) -> str:
        if self._uses <= 0:
            self._launch, _ = self.broker.create_launch_token(
                self.admin, agent_name="scale", allowed_scope=SCOPE, max_ttl=None,
                single_use=False, ttl=3600, ctx=self.ctx, max_uses=10_000,
            )  # fmt: skip
            self._uses = 10_000
        self._uses -= 1
        return self._launch

    def register_args(self) -> dict[str, Any]:
        """Everything one registration needs, prepared (challenge and signature)."""
        key = nacl.signing.SigningKey.generate()
        nonce, _ = self.broker.challenge()
        self.registered += 1
        return {
            "launch_token": self.launch(),
            "nonce": nonce,
            "public_key": base64.b64encode(bytes(key.verify_key)).decode(),
            "signature": base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
            "orch_id": "scale",
            "task_id": f"s{self.registered}",
            "requested_scope": ["read:data:1"],
            "ctx": self.ctx,
        }

    def register(self) -> Any:
        return self.broker.register(**self.register_args())


def operations(h: Harness, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """p50/p99 of each operation, called one at a time."""
    from tasklease.core.store import AuditQuery

    broker, n = h.broker, spec["ops"]
    rng = random.Random(22)  # noqa: S311 - which rows to touch, not a secret
    out: dict[str, dict[str, Any]] = {}
    issued: list[Any] = []
    out["register"] = _timed(
        lambda args: issued.append(broker.register(**args)), n, lambda i: h.register_args()
    )
    tokens = [t.token for t in issued]
    out["validate"] = _timed(lambda i: broker.validate(tokens[rng.randrange(len(tokens))]), n * 4)
    out["renew"] = _timed(lambda i: broker.renew(issued[i].claims, h.ctx), n)
    delegates = [h.register() for _ in range(n)]
    out["delegate"] = _timed(
        lambda i: broker.delegate(
            delegates[i].claims, delegate_to=issued[(i + 1) % n].claims.sub, scope=["read:data:1"],
            ttl=60, ctx=h.ctx,
        ),
        n,
    )  # fmt: skip
    out["revoke"] = _timed(
        lambda i: broker.revoke(
            h.admin, level="token", target=f"scale{rng.getrandbits(96):024x}", ctx=h.ctx
        ),
        n,
    )
    seeded = spec["agents"]
    out["audit_query"] = _timed(
        lambda i: broker.audit_events(
            AuditQuery(agent_id=agent_id(rng.randrange(seeded)), limit=50)
        ),
        n,
    )
    tree = broker.transparency.tree()
    size = tree.size if tree is not None else 0
    if size:

        def proof(i: int) -> None:
            broker.transparency.inclusion(rng.randrange(size), size)
            broker.transparency.root(size)

        out["audit_proof"] = _timed(proof, n)
    return out


def trees(h: Harness, spec: dict[str, Any]) -> dict[str, Any]:
    """Delegation chains of depth 1-5 (delegate and validate at each depth), and a token
    delegated to 1, 10 or 100 agents, then revoked: the revocation and its children's
    refusals."""
    from tasklease.core.validation import TokenRejected

    broker, reps = h.broker, spec["tree_reps"]
    depth_delegate: dict[int, list[float]] = {d: [] for d in range(1, 6)}
    depth_validate: dict[int, list[float]] = {d: [] for d in range(1, 6)}
    clock = time.perf_counter
    for _ in range(reps):
        chain = [h.register() for _ in range(6)]
        holder = chain[0]
        for d in range(1, 6):
            t0 = clock()
            holder = broker.delegate(
                holder.claims, delegate_to=chain[d].claims.sub, scope=["read:data:1"],
                ttl=60, ctx=h.ctx,
            )  # fmt: skip
            depth_delegate[d].append(clock() - t0)
            for _ in range(4):
                t0 = clock()
                broker.validate(holder.token)
                depth_validate[d].append(clock() - t0)
    out: dict[str, Any] = {
        "depth": {
            d: {
                "delegate": summarize(depth_delegate[d], sum(depth_delegate[d])),
                "validate": summarize(depth_validate[d], sum(depth_validate[d])),
            }
            for d in range(1, 6)
        },
        "fanout": {},
    }
    for fanout in spec["fanouts"]:
        revoke: list[float] = []
        refused: list[float] = []
        for _ in range(max(1, reps * 10 // fanout)):
            root = h.register()
            children = [
                broker.delegate(
                    root.claims,
                    delegate_to=h.register().claims.sub,
                    scope=["read:data:1"],
                    ttl=60,
                    ctx=h.ctx,
                )
                for _ in range(fanout)
            ]
            t0 = clock()
            broker.revoke(h.admin, level="token", target=root.claims.jti, ctx=h.ctx)
            revoke.append(clock() - t0)
            for child in children:
                t0 = clock()
                try:
                    broker.validate(child.token)
                except TokenRejected:
                    refused.append(clock() - t0)
                else:
                    raise RuntimeError("a child of a revoked token still validates")
        out["fanout"][fanout] = {
            "revoke_root": summarize(revoke, sum(revoke)),
            "child_refused": summarize(refused, sum(refused)),
        }
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    path = Path(spec["database"])
    gc.collect()
    rss_start = _rss_kib()
    h = Harness(path, Path(spec["key_dir"]))
    print(f"[scale] started: {h.startup}", file=sys.stderr, flush=True)
    gc.collect()
    rss_started = _rss_kib()
    index_entries = len(h.broker.revocations)
    ops = operations(h, spec)
    tree = trees(h, spec)
    gc.collect()
    rss_after = _rss_kib()
    h.broker.audit.close()
    h.store.close()
    return {
        "agents": spec["agents"],
        "events": spec["events"],
        "revocations": spec["revocations"],
        "startup": {k: round(v, 3) for k, v in h.startup.items()},
        "revocation_index_at_start": index_entries,
        "rss_before_broker_mb": round(rss_start / 1024, 1),
        "rss_started_mb": round(rss_started / 1024, 1),
        "rss_after_ops_mb": round(rss_after / 1024, 1),
        "ops": ops,
        "trees": tree,
    }


def main() -> None:
    # Everything the broker imports, imported before the first RSS reading.
    import tasklease.core.broker
    import tasklease.http.app
    import tasklease.storage  # noqa: F401

    spec = json.loads(sys.argv[1])
    sys.stdout.write(json.dumps(measure(spec)) + "\n")


if __name__ == "__main__":
    main()
