"""The load generator: a separate process that drives one scenario against a server.

``python -m bench.loadgen '<json spec>'`` prints one JSON result on stdout. The spec names
the server (loopback only), the scenario, the number of connections and both bounds: at
most ``count`` measured operations and at most ``duration`` seconds. Setup (admin token,
launch tokens, agents) happens before the clock starts and is reported separately.

Latency is per *operation*: a full registration is ``GET /v1/challenge`` plus
``POST /v1/register`` on one connection. ``renew_dpop`` renews DPoP-bound tokens (RFC
9449): each agent registers with a proof, and each renewal carries a fresh one;
``validate_dpop`` validates them as a resource server does, a fresh proof forwarded each
time; ``launch`` creates launch tokens as an orchestrator does before it starts agents;
``heartbeat`` sends agents' signed heartbeats; ``handshake`` runs whole mutual
authentications (three requests each); ``introspect`` asks RFC 7662 introspection with an
operator's token; ``calls`` counts calls against agents' ``max_calls`` grants;
``resume`` resumes restarted agents (``GET /v1/challenge`` plus ``POST /v1/resume``
signed with the registered key), as a fleet does after its hosts restart.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nacl.signing

from bench.http import Connection
from bench.report import summarize

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
SCOPE = ["read:data:*"]
Op = Callable[[Connection, int], Awaitable[bool]]


class SetupError(Exception):
    pass


def _check(status: int, body: bytes, what: str, expect: int = 200) -> Any:
    if status != expect:
        raise SetupError(f"{what}: HTTP {status}: {body[:300]!r}")
    return _dec.decode(body) if body else None


def unverified_claims(token: str) -> dict[str, Any]:
    """A compact JWS's payload, read without checking anything: the load generator only
    needs to know what the broker put in a token it just issued (its ``jti``, a ticket's
    fields)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = _dec.decode(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _bearer(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


async def admin_token(conn: Connection, secret: str) -> str:
    status, body = await conn.request("POST", "/v1/admin/auth", _enc.encode({"secret": secret}))
    return str(_check(status, body, "admin auth")["access_token"])


async def new_launch_token(
    conn: Connection, admin: str, details: list[dict[str, Any]] | None = None
) -> str:
    """A launch token for :data:`SCOPE` (and ``details``: RFC 9396 grants)."""
    request: dict[str, Any] = {"agent_name": "bench", "allowed_scope": SCOPE, "max_ttl": 600}
    if details:
        request["authorization_details"] = details
    status, body = await conn.request(
        "POST", "/v1/admin/launch-tokens", _enc.encode({**request, "ttl": 600}), _bearer(admin)
    )
    return str(_check(status, body, "launch token", 201)["launch_token"])


async def register(
    conn: Connection,
    launch: str,
    key: nacl.signing.SigningKey,
    pub_b64: str,
    task: str,
    headers: Callable[[], bytes] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Challenge + register; returns (status, response). ``headers`` makes extra headers
    for the register request (a DPoP proof, made just before it is sent); ``details``
    are grants asked for besides :data:`SCOPE`."""
    status, body = await conn.request("GET", "/v1/challenge")
    if status != 200:
        return status, {}
    nonce = _dec.decode(body)["nonce"]
    signature = base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode()
    status, body = await conn.request(
        "POST",
        "/v1/register",
        _enc.encode(
            {
                "launch_token": launch,
                "nonce": nonce,
                "public_key": pub_b64,
                "signature": signature,
                "orch_id": "bench",
                "task_id": task,
                "requested_scope": SCOPE,
                **({"authorization_details": details} if details else {}),
            }
        ),
        headers() if headers is not None else b"",
    )
    return status, (_dec.decode(body) if status == 200 else {})


class Keys:
    """A small pool of agent keys (generating one per registration would bill the client)."""

    def __init__(self, n: int = 64) -> None:
        self.keys = [nacl.signing.SigningKey.generate() for _ in range(n)]
        self.pubs = [base64.b64encode(bytes(k.verify_key)).decode() for k in self.keys]

    def get(self, i: int) -> tuple[nacl.signing.SigningKey, str]:
        return self.keys[i % len(self.keys)], self.pubs[i % len(self.pubs)]


async def _parallel(conns: list[Connection], n: int, job: Callable[[Connection, int], Any]) -> list:
    """Run ``job(conn, i)`` for i in range(n) spread over the connections."""
    out: list[Any] = [None] * n
    counter = itertools.count()

    async def worker(conn: Connection) -> None:
        while (i := next(counter)) < n:
            out[i] = await job(conn, i)

    await asyncio.gather(*(worker(c) for c in conns))
    return out


async def register_agents(
    conns: list[Connection],
    admin: str,
    n: int,
    keys: Keys,
    prefix: str,
    headers: Callable[[int], bytes] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``n`` registered agents; ``headers(i)``: extra headers for agent i's register;
    ``details``: grants they hold besides :data:`SCOPE`."""

    async def job(conn: Connection, i: int) -> dict[str, Any]:
        launch = await new_launch_token(conn, admin, details)
        key, pub = keys.get(i)
        extra = (lambda: headers(i)) if headers is not None else None
        status, resp = await register(conn, launch, key, pub, f"{prefix}{i}", extra, details)
        if status != 200:
            raise SetupError(f"register: HTTP {status}")
        return resp

    return await _parallel(conns, n, job)


async def drive(
    conns: list[Connection], op: Op, count: int, duration: float, warmup: int = 0
) -> dict[str, Any]:
    """Run ``op`` on every connection until ``count`` ops or ``duration`` seconds."""
    if warmup:
        warm = itertools.count()

        async def warm_worker(conn: Connection) -> None:
            while next(warm) < warmup:
                await op(conn, -1)

        await asyncio.gather(*(warm_worker(c) for c in conns))
    latencies: list[float] = []
    errors = 0
    issued = itertools.count()
    window_started = time.monotonic()  # system-wide: bench.cpu samples on the same clock
    started = time.perf_counter()
    deadline = started + duration

    async def worker(conn: Connection) -> None:
        nonlocal errors
        clock = time.perf_counter
        while clock() < deadline:
            i = next(issued)
            if i >= count:
                return
            t0 = clock()
            ok = await op(conn, i)
            latencies.append(clock() - t0)
            if not ok:
                errors += 1

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    window = [window_started, time.monotonic()]
    return {**summarize(latencies, elapsed), "errors": errors, "window_monotonic": window}


# -- scenarios ---------------------------------------------------------------------------


async def scenario(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("the load generator only talks to loopback")
    name = spec["scenario"]
    n_conns = spec["connections"]
    count, duration = spec["count"], spec["duration"]
    conns = [await Connection.open(host, port) for _ in range(n_conns)]
    setup_started = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        if name == "empty":

            async def op(conn: Connection, _i: int) -> bool:
                status, _ = await conn.request("GET", "/empty")
                return status == 200

            warmup = min(500, count // 10)
        else:
            admin = await admin_token(conns[0], spec["secret"])
            keys = Keys()
            op, warmup = await _prepare(name, conns, admin, keys, spec, extra)
        setup = time.perf_counter() - setup_started
        if name == "propagation":
            result = await _propagation(conns, extra.pop("tokens"), admin, spec)
        else:
            result = await drive(conns, op, count, duration, warmup)
    finally:
        for c in conns:
            c.close()
    return {"scenario": name, "connections": n_conns, "setup_seconds": setup, **result, **extra}


async def _prepare(
    name: str,
    conns: list[Connection],
    admin: str,
    keys: Keys,
    spec: dict[str, Any],
    extra: dict[str, Any],
) -> tuple[Op, int]:
    count = spec["count"]
    tag = os.urandom(3).hex()
    if name == "register":
        launches = await _parallel(conns, count, lambda c, _i: new_launch_token(c, admin))

        async def op(conn: Connection, i: int) -> bool:
            key, pub = keys.get(i)
            status, _ = await register(conn, launches[i], key, pub, f"r{tag}{i}")
            return status == 200

        return op, 0

    if name == "launch":
        # An orchestrator's launch tokens, one per agent it is about to start.
        body = _enc.encode({"agent_name": "bench", "allowed_scope": SCOPE, "max_ttl": 600})
        auth = _bearer(admin)

        async def op(conn: Connection, _i: int) -> bool:
            status, _ = await conn.request("POST", "/v1/admin/launch-tokens", body, auth)
            return status == 201

        return op, min(100, count // 10)
    if name == "renew_dpop":
        return await _renew_dpop(conns, admin, keys, spec, tag), 0
    if name == "heartbeat":
        return await _heartbeats(conns, admin, keys, tag), min(100, count // 10)
    if name == "handshake":
        return await _handshakes(conns, admin, keys, tag), min(30, count // 10)
    if name == "calls":
        return await _calls(conns, admin, keys, tag), min(100, count // 10)
    if name == "resume":
        return await _resumptions(conns, admin, keys, spec, tag), min(100, count // 10)
    if name == "validate_dpop":
        return await _validate_dpop(conns, admin, keys, spec, tag), min(500, count // 10)

    if name in ("validate", "introspect", "renew", "delegate", "propagation", "release"):
        n_agents = len(conns) + (count // 10 + 1 if name == "renew" else 0)
        if name == "release":
            n_agents = count  # one token per release
        if name == "delegate":
            n_agents += 1  # the target holds no delegator's token: no self-delegation
        if name == "propagation":
            n_agents = count
        agents = await register_agents(conns, admin, n_agents, keys, f"a{tag}")
        tokens = [a["access_token"] for a in agents]
        if name == "propagation":
            extra["tokens"] = tokens
            return _noop, 0
        if name == "validate":
            bodies = [_enc.encode({"token": t}) for t in tokens]

            async def op(conn: Connection, i: int) -> bool:
                status, body = await conn.request(
                    "POST", "/v1/token/validate", bodies[i % len(bodies)]
                )
                return status == 200 and b'"valid":true' in body

            return op, min(500, count // 10)
        if name == "introspect":
            # A resource server introspecting (RFC 7662) with an operator's token.
            bodies = [_enc.encode({"token": t}) for t in tokens]
            caller = _bearer(admin)

            async def op(conn: Connection, i: int) -> bool:
                status, body = await conn.request(
                    "POST", "/v1/introspect", bodies[i % len(bodies)], caller
                )
                return status == 200 and b'"active":true' in body

            return op, min(500, count // 10)
        if name == "release":
            releases = [_bearer(t) for t in tokens]

            async def op(conn: Connection, i: int) -> bool:
                status, _ = await conn.request("POST", "/v1/token/release", b"", releases[i])
                return status == 204

            return op, 0
        if name == "renew":
            return _renewals(tokens, lambda _k, token: _bearer(token)), 0
        # delegate: every connection delegates from its own agent to one target agent.
        target = agents[-1]["agent_id"]
        body = _enc.encode({"delegate_to": target, "scope": ["read:data:x"], "ttl": 60})
        by_conn = {id(c): _bearer(tokens[k]) for k, c in enumerate(conns)}

        async def op(conn: Connection, _i: int) -> bool:
            status, _ = await conn.request("POST", "/v1/delegate", body, by_conn[id(conn)])
            return status == 200

        return op, min(100, count // 10)

    if name == "protected":
        status, body = await conns[0].request(
            "POST",
            "/v1/admin/apps",
            _enc.encode({"name": f"bench-{tag}", "scopes": SCOPE}),
            _bearer(admin),
        )
        app_id = _check(status, body, "create app", 201)["app_id"]
        path = f"/v1/admin/apps/{app_id}"
        auth = _bearer(admin)

        async def op(conn: Connection, _i: int) -> bool:
            status, _ = await conn.request("GET", path, b"", auth)
            return status == 200

        return op, min(500, count // 10)

    if name == "revoke":
        auth = _bearer(admin)

        async def op(conn: Connection, _i: int) -> bool:
            body = _enc.encode({"level": "token", "target": os.urandom(16).hex()})
            status, _ = await conn.request("POST", "/v1/revoke", body, auth)
            return status == 200

        return op, min(100, count // 10)
    raise SystemExit(f"unknown scenario {name!r}")


async def _dpop_agents(
    conns: list[Connection], admin: str, keys: Keys, spec: dict[str, Any], tag: str, n: int
) -> tuple[list[Any], list[str]]:
    """``n`` agents registered with a proof of one of 64 DPoP keys (their tokens bound to
    it): the keys, and the tokens (agent k's key is ``keys[k % 64]``)."""
    from tasklease.client._holder import DPoPKey

    origin = f"http://{spec['host']}:{spec['port']}"
    dpop_keys = [DPoPKey() for _ in range(64)]

    def register_proof(i: int) -> bytes:
        proof = dpop_keys[i % len(dpop_keys)].proof("POST", f"{origin}/v1/register")
        return f"DPoP: {proof}\r\n".encode()

    agents = await register_agents(conns, admin, n, keys, f"d{tag}", register_proof)
    return dpop_keys, [a["access_token"] for a in agents]


async def _renew_dpop(
    conns: list[Connection], admin: str, keys: Keys, spec: dict[str, Any], tag: str
) -> Op:
    """Renewals of DPoP-bound tokens: every renewal presents the token as ``DPoP`` with a
    fresh proof of its key for the request (``ath``: the token's hash)."""
    n_agents = len(conns) + spec["count"] // 10 + 1
    dpop_keys, tokens = await _dpop_agents(conns, admin, keys, spec, tag, n_agents)
    url = f"http://{spec['host']}:{spec['port']}/v1/token/renew"

    def bound(k: int, token: str) -> bytes:
        proof = dpop_keys[k % len(dpop_keys)].proof("POST", url, token)
        return f"Authorization: DPoP {token}\r\nDPoP: {proof}\r\n".encode()

    return _renewals(tokens, bound)


async def _validate_dpop(
    conns: list[Connection], admin: str, keys: Keys, spec: dict[str, Any], tag: str
) -> Op:
    """A resource server's validations of DPoP-bound tokens: each forwards the token with
    a fresh proof of its key made for the resource server's own request."""
    dpop_keys, tokens = await _dpop_agents(conns, admin, keys, spec, tag, len(conns))
    url = "https://resource.example/reports"

    async def op(conn: Connection, i: int) -> bool:
        k = i % len(tokens)
        proof = dpop_keys[k % len(dpop_keys)].proof("GET", url, tokens[k])
        body = {"token": tokens[k], "dpop": proof, "htm": "GET", "htu": url}
        status, answer = await conn.request("POST", "/v1/token/validate", _enc.encode(body))
        return status == 200 and b'"valid":true' in answer

    return op


async def _heartbeats(conns: list[Connection], admin: str, keys: Keys, tag: str) -> Op:
    """Agents' heartbeats: each signed by the agent's key over its agent, its token's
    ``jti``, the time and a fresh proof ``jti`` (``rules.messages``)."""
    from tasklease.rules.messages import heartbeat_signing_input

    agents = await register_agents(conns, admin, len(conns), keys, f"h{tag}")
    held = []
    for k, agent in enumerate(agents):
        token = agent["access_token"]
        jti = unverified_claims(token)["jti"]
        held.append((agent["agent_id"], jti, keys.get(k)[0], _bearer(token)))
    serial = itertools.count()

    async def op(conn: Connection, i: int) -> bool:
        agent_id, jti, key, auth = held[i % len(held)]
        ts, proof = int(time.time()), f"{tag}{next(serial):016d}"
        message = heartbeat_signing_input(agent_id, jti, ts, proof, False)
        signature = base64.b64encode(key.sign(message).signature).decode()
        body = _enc.encode({"timestamp": ts, "jti": proof, "signature": signature})
        status, _ = await conn.request("POST", "/v1/heartbeat", body, auth)
        return status == 200

    return op


async def _handshakes(conns: list[Connection], admin: str, keys: Keys, tag: str) -> Op:
    """Broker-mediated mutual authentication: one operation is a whole handshake, its
    three requests on one connection (initiate by A, respond by B, complete by A), each
    party signing the transcript with its registered key."""
    from tasklease.core.mutual import transcript

    agents = await register_agents(conns, admin, 2 * len(conns), keys, f"m{tag}")
    parties = [
        (a["agent_id"], keys.get(k)[0], _bearer(a["access_token"])) for k, a in enumerate(agents)
    ]
    na, nb = "a" * 32, "b" * 32

    def signed(who: nacl.signing.SigningKey, role: str, ticket: str, nonce_b: str) -> str:
        t = unverified_claims(ticket)
        message = transcript(role, t["hid"], t["ini"], t["rsp"], t["na"], nonce_b)
        return base64.b64encode(who.sign(message).signature).decode()

    async def op(conn: Connection, i: int) -> bool:
        k = 2 * (i % len(conns))
        (_, a_key, a_auth), (b_id, b_key, b_auth) = parties[k], parties[k + 1]
        body = _enc.encode({"responder_id": b_id, "initiator_nonce": na})
        status, raw = await conn.request("POST", "/v1/mutual/initiate", body, a_auth)
        if status != 200:
            return False
        offer = _dec.decode(raw)["offer"]
        proof = signed(b_key, "responder", offer, nb)
        body = _enc.encode({"offer": offer, "responder_nonce": nb, "signature": proof})
        status, raw = await conn.request("POST", "/v1/mutual/respond", body, b_auth)
        if status != 200:
            return False
        answer = _dec.decode(raw)["answer"]
        body = _enc.encode({"answer": answer, "signature": signed(a_key, "initiator", answer, nb)})
        status, _ = await conn.request("POST", "/v1/mutual/complete", body, a_auth)
        return status == 200

    return op


async def _calls(conns: list[Connection], admin: str, keys: Keys, tag: str) -> Op:
    """A resource server counting calls against agents' grants (``max_calls``)."""
    url = "https://resource.example/reports"
    grant = {
        "type": "resource_access",
        "actions": ["read"],
        "locations": [url],
        "limits": {"max_calls": 1_000_000_000},
    }
    agents = await register_agents(conns, admin, len(conns), keys, f"c{tag}", details=[grant])
    bodies = [
        _enc.encode(
            {
                "token": a["access_token"],
                "type": "resource_access",
                "action": "read",
                "location": url,
            }
        )
        for a in agents
    ]

    async def op(conn: Connection, i: int) -> bool:
        status, body = await conn.request("POST", "/v1/token/calls", bodies[i % len(bodies)])
        return status == 200 and b'"counted":true' in body

    return op


def _renewals(tokens: list[str], auth: Callable[[int, str], bytes]) -> Op:
    """Renewals that walk through the agents: each connection renews one agent's token
    until its max_renewals (10), then moves on. ``auth(k, token)``: the headers that
    present agent k's current token."""
    pool = iter(range(len(tokens)))
    current: dict[int, list[Any]] = {}

    async def op(conn: Connection, _i: int) -> bool:
        slot = current.get(id(conn))
        if slot is None or slot[1] >= 10:
            k = next(pool)
            slot = current[id(conn)] = [tokens[k], 0, k]
        status, body = await conn.request("POST", "/v1/token/renew", b"", auth(slot[2], slot[0]))
        if status != 200:
            slot[1] = 10
            return False
        slot[0] = _dec.decode(body)["access_token"]
        slot[1] += 1
        return True

    return op


async def _resumptions(
    conns: list[Connection], admin: str, keys: Keys, spec: dict[str, Any], tag: str
) -> Op:
    """Resumptions that walk through the agents as :func:`_renewals` does: a resumption
    counts against the lineage's max_renewals (10) like a renewal."""
    n = len(conns) + spec["count"] // 10 + 2
    agents = await register_agents(conns, admin, n, keys, f"m{tag}")
    pool = iter(range(n))
    current: dict[int, list[int]] = {}

    async def op(conn: Connection, _i: int) -> bool:
        slot = current.get(id(conn))
        if slot is None or slot[1] >= 10:
            slot = current[id(conn)] = [next(pool), 0]
        k = slot[0]
        status, body = await conn.request("GET", "/v1/challenge")
        if status != 200:
            return False
        nonce = _dec.decode(body)["nonce"]
        key, _ = keys.get(k)
        signature = base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode()
        request = {"agent_id": agents[k]["agent_id"], "nonce": nonce, "signature": signature}
        status, _ = await conn.request("POST", "/v1/resume", _enc.encode(request))
        slot[1] = slot[1] + 1 if status == 200 else 10
        return status == 200

    return op


async def _noop(_conn: Connection, _i: int) -> bool:
    return True


async def _propagation(
    conns: list[Connection], tokens: list[str], admin: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Revoke on one connection; time until every other connection's worker refuses it.

    Connections are spread over the workers by the kernel, so the slowest poller measures
    propagation to the last worker. Timed from the revoke response (the commit is durable
    by then) to the first refusal seen by the last connection.
    """
    revoker, pollers = conns[0], conns[1:]
    samples: list[float] = []
    timeouts = 0
    for token in tokens:
        body = _enc.encode({"token": token})
        status, resp = await revoker.request("POST", "/v1/token/validate", body)
        jti = _dec.decode(resp)["claims"]["jti"]
        status, resp = await revoker.request(
            "POST",
            "/v1/revoke",
            _enc.encode({"level": "token", "target": jti}),
            _bearer(admin),
        )
        if status != 200:
            raise SetupError(f"revoke: HTTP {status}")
        revoked = time.perf_counter()

        async def poll(conn: Connection, body: bytes = body, revoked: float = revoked) -> float:
            limit = revoked + 2.0
            while time.perf_counter() < limit:
                _, out = await conn.request("POST", "/v1/token/validate", body)
                if b'"valid":false' in out:
                    return time.perf_counter()
            return float("inf")

        seen = await asyncio.gather(*(poll(c) for c in pollers))
        last = max(seen)
        if last == float("inf"):
            timeouts += 1
        else:
            samples.append(last - revoked)
    elapsed = sum(samples) or 1e-9
    return {**summarize(samples, elapsed), "errors": timeouts}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("client_loop", "uvloop") == "uvloop":
        import uvloop

        uvloop.install()
    result = asyncio.run(scenario(spec))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
