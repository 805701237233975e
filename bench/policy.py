"""What issuance policy costs registration, in process: ``python -m bench.policy``.

One broker (SQLite in a temporary directory, or the memory store), one multi-use launch
token, and ``Broker.register`` timed call by call (challenge and signing outside the
timing) in three modes, interleaved round by round so that drift of the machine falls on
all three alike:

- ``off``       the policy engine replaced by one that allows everything without Cedar
                (what registration cost before policies; the invariants still run);
- ``default``   the built-in default policy (Cedar, compiled once);
- ``operator``  the default and 24 operator policies on attested facts, amounts, scopes
                and principals (none of which forbids the request measured).

Each mode registers with plain scopes (what the agentwrit SDK sends) and, in the
``+grants`` rows, with one structured grant as well. Prints p50/p99 per mode and the p99
growth over ``off`` (docs/performance-history.md, "Issuance policy").
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.signing

from bench.report import summarize

OPERATOR_POLICIES = "\n".join(
    [
        f'@id("payments-cap-{i}")\n'
        "forbid (principal, action, resource)\n"
        "when { resource has max_amount && "
        f'resource.max_amount.greaterThan(decimal("{10_000 + i}.0")) }};'
        for i in range(8)
    ]
    + [
        f'@id("prod-only-{i}")\n'
        'forbid (principal is Agent, action == Action::"delegate", resource)\n'
        f'when {{ resource.actions.contains("wire-{i}") }}\n'
        'unless { principal.hasTag("cluster") && principal.getTag("cluster") == "prod" };'
        for i in range(8)
    ]
    + [
        f'@id("humans-{i}")\n'
        'forbid (principal, action == Action::"register", resource)\n'
        f'when {{ context.human == "user:blocked-{i}@example.com" }};'
        for i in range(4)
    ]
    + [
        f'@id("scopes-{i}")\n'
        "forbid (principal, action, resource)\n"
        f'when {{ resource.scope_kinds.contains("admin:root{i}") }};'
        for i in range(4)
    ]
)

GRANT = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "limits": {"max_amount": "500", "currency": "EUR", "allowed_values": {"payee": ["P"]}},
}


class _AllowAll:
    """The ``off`` mode: every decision allows, nothing is evaluated."""

    def decide(self, request: Any) -> Any:
        from tasklease.core.policy import Decision

        return Decision(True, ("off",))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from tasklease.core.broker import Broker
    from tasklease.core.config import Config
    from tasklease.core.kernel import RequestContext
    from tasklease.core.keys import KeyRing
    from tasklease.core.policy import DEFAULT_POLICY, PolicyEngine, compile_policies
    from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
    from tasklease.storage import open_store

    folder = Path(tempfile.mkdtemp(prefix="tasklease-bench-policy-"))
    try:
        store = open_store(
            "memory://" if spec["store"] == "memory" else str(folder / "policy.db"),
            migrate=True,
        )
        broker = Broker(Config(max_ttl=3600), store, KeyRing.generate(), nonce_secret=b"b" * 32)
        ctx = RequestContext(request_id="bench", remote="127.0.0.1", path="/v1/register")
        _, admin = mint(
            broker.keyring, kind=KIND_ADMIN, iss="tasklease", sub="admin", aud=("tasklease",),
            iat=int(time.time()), ttl=3000, scope=ADMIN_SCOPES, client_id="admin",
        )  # fmt: skip
        engines: dict[str, Any] = {"off": _AllowAll()}
        engines["default"] = PolicyEngine()
        operator = PolicyEngine()
        operator.use(
            compile_policies(
                [("default.cedar", DEFAULT_POLICY), ("operator.cedar", OPERATOR_POLICIES)],
                "bench",
            )
        )
        engines["operator"] = operator
        modes = [(name, grants) for name in engines for grants in (False, True)]
        latencies: dict[str, list[float]] = {_label(n, g): [] for n, g in modes}
        per_round = spec["per_round"]
        launch, _ = broker.create_launch_token(
            admin, agent_name="bench", allowed_scope=["read:data:*"], max_ttl=None,
            single_use=False, ttl=3600, ctx=ctx, max_uses=10_000,
            authorization_details=[GRANT],
        )  # fmt: skip
        made = 0
        for _ in range(spec["rounds"]):
            for name, grants in modes:
                broker.kernel.policy = engines[name]
                if made + per_round > 9_900:
                    launch, _ = broker.create_launch_token(
                        admin, agent_name="bench", allowed_scope=["read:data:*"], max_ttl=None,
                        single_use=False, ttl=3600, ctx=ctx, max_uses=10_000,
                        authorization_details=[GRANT],
                    )  # fmt: skip
                    made = 0
                for _ in range(per_round):
                    key = nacl.signing.SigningKey.generate()
                    nonce, _ = broker.challenge()
                    args = {
                        "launch_token": launch,
                        "nonce": nonce,
                        "public_key": base64.b64encode(bytes(key.verify_key)).decode(),
                        "signature": base64.b64encode(
                            key.sign(bytes.fromhex(nonce)).signature
                        ).decode(),
                        "orch_id": "bench",
                        "task_id": f"t{made}",
                        "requested_scope": ["read:data:1"],
                        "ctx": ctx,
                    }
                    if grants:
                        args["authorization_details"] = [GRANT]
                    started = time.perf_counter()
                    broker.register(**args)
                    latencies[_label(name, grants)].append(time.perf_counter() - started)
                    made += 1
        broker.audit.close()
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out: dict[str, Any] = {"store": spec["store"]}
    for label, values in latencies.items():
        out[label] = summarize(values, sum(values))
    for grants in (False, True):
        off = out[_label("off", grants)]["p99_ms"]
        for name in ("default", "operator"):
            row = out[_label(name, grants)]
            row["p99_growth_ms"] = round(row["p99_ms"] - off, 3)
            row["p50_growth_ms"] = round(row["p50_ms"] - out[_label("off", grants)]["p50_ms"], 3)
    return out


def _label(name: str, grants: bool) -> str:
    return f"{name}+grants" if grants else name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run({"store": args.store, "rounds": args.rounds, "per_round": args.per_round})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"registration, {args.store} store, {args.rounds} x {args.per_round} per mode")
    print(f"{'mode':<18}{'p50 ms':>10}{'p99 ms':>10}{'p99 +ms':>10}{'n':>8}")
    for label, row in result.items():
        if isinstance(row, dict):
            growth = row.get("p99_growth_ms")
            shown = "-" if growth is None else f"{growth:+.3f}"
            print(
                f"{label:<18}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{shown:>10}{row['n']:>8}"
            )


if __name__ == "__main__":
    main()
