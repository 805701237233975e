"""Revocation from the broker to an offline verifier, over the revocation feed.

``python -m bench.feed [--count 200] [--workers 2] [--level token|agent]``

Starts ``tasklease serve`` on SQLite (``--workers`` processes, as ``make bench`` does) and,
in this process, a :class:`tasklease.verify.Verifier` following its revocation feed with an
app's credentials: the way a resource server checks agent tokens without calling the
broker. Registers ``count`` agents, then for each: the verifier accepts its token, the
token (or the agent) is revoked on the broker over HTTP, and the verifier is asked again
every 0.1 ms until it refuses. The feed is one stream held by one worker; the revocations
are sent on connections spread over the workers, so part of them are committed by a
worker other than the one streaming (they reach it by the wake-up datagram, decision 99).

Reports p50/p99/max of ``from answer`` (the revoke's answer, when the revocation is
durable, to the verifier's first refusal) and ``from call`` (from sending the revoke).
The last line of output is the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.http import Connection
from bench.loadgen import Keys, admin_token, new_launch_token, register, unverified_claims
from bench.report import percentile
from bench.servers import ADMIN_SECRET, Broker

# How often the verifier is asked again while the revocation travels (seconds): far below
# the figures measured, so the polling adds at most this much to each.
_POLL = 0.0001


async def _setup(port: int, count: int) -> tuple[list[Connection], str, list[str], Any]:
    conns = [await Connection.open("127.0.0.1", port) for _ in range(8)]
    admin = await admin_token(conns[0], ADMIN_SECRET)
    keys = Keys(8)
    tokens: list[str] = []
    agents: list[str] = []
    for i in range(count):
        conn = conns[i % len(conns)]
        key, pub = keys.get(i)
        status, resp = await register(
            conn, await new_launch_token(conn, admin), key, pub, f"feed{i}"
        )
        if status != 200:
            raise SystemExit(f"register: HTTP {status}")
        tokens.append(resp["access_token"])
        agents.append(resp["agent_id"])
    status, body = await conns[0].request(
        "POST",
        "/v1/admin/apps",
        json.dumps({"name": "bench-feed", "scopes": ["read:data:*"]}).encode(),
        f"Authorization: Bearer {admin}\r\n".encode(),
    )
    if status != 201:
        raise SystemExit(f"create app: HTTP {status} {body[:200]!r}")
    app = json.loads(body)
    return conns, admin, tokens, (agents, app["client_id"], app["client_secret"])


def _refused(verifier: Any, token: str) -> bool:
    from tasklease.verify import InvalidToken

    try:
        verifier.verify(token)
    except InvalidToken:
        return True
    return False


def measure(count: int, workers: int, level: str) -> dict[str, Any]:
    from tasklease.verify import AppCredentials, Verifier

    loop = asyncio.new_event_loop()
    with Broker(workers=workers, loop="asyncio") as broker:
        conns, admin, tokens, (agents, client_id, secret) = loop.run_until_complete(
            _setup(broker.port, count)
        )
        url = f"http://127.0.0.1:{broker.port}"
        from_answer: list[float] = []
        from_call: list[float] = []
        credentials = AppCredentials(client_id, secret)
        # Tokens registered without a resource carry the broker's own audience.
        with Verifier(url, audience="tasklease", credentials=credentials) as verifier:
            deadline = time.monotonic() + 30
            while not verifier.feed_live():
                if time.monotonic() > deadline:
                    raise SystemExit("the verifier's feed did not connect")
                time.sleep(0.01)
            for i, token in enumerate(tokens):
                if _refused(verifier, token):
                    raise SystemExit(f"token {i} refused before its revocation")
                target = str(unverified_claims(token)["jti"]) if level == "token" else agents[i]
                body = json.dumps({"level": level, "target": target}).encode()
                conn = conns[i % len(conns)]
                called = time.perf_counter()
                status, _ = loop.run_until_complete(
                    conn.request(
                        "POST", "/v1/revoke", body, f"Authorization: Bearer {admin}\r\n".encode()
                    )
                )
                answered = time.perf_counter()
                if status != 200:
                    raise SystemExit(f"revoke: HTTP {status}")
                limit = answered + 10
                while not _refused(verifier, token):
                    if time.perf_counter() > limit:
                        raise SystemExit(f"token {i} still accepted 10 s after its revocation")
                    time.sleep(_POLL)
                refused = time.perf_counter()
                from_answer.append(refused - answered)
                from_call.append(refused - called)
        for c in conns:
            c.close()
    loop.close()

    def ms(values: list[float], q: float) -> float:
        return round(percentile(sorted(values), q) * 1000, 3)

    return {
        "count": count,
        "workers": workers,
        "level": level,
        "from_answer_p50_ms": ms(from_answer, 50),
        "from_answer_p99_ms": ms(from_answer, 99),
        "from_answer_max_ms": round(max(from_answer) * 1000, 3),
        "from_call_p50_ms": ms(from_call, 50),
        "from_call_p99_ms": ms(from_call, 99),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--level", choices=("token", "agent"), default="token")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    result = measure(args.count, args.workers, args.level)
    print(
        f"revocation to an offline verifier over the feed ({args.workers} workers, "
        f"{args.count} {args.level} revocations): from the revoke's answer p50 "
        f"{result['from_answer_p50_ms']} ms, p99 {result['from_answer_p99_ms']} ms, max "
        f"{result['from_answer_max_ms']} ms; from the call p50 {result['from_call_p50_ms']} "
        f"ms, p99 {result['from_call_p99_ms']} ms",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
