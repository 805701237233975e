"""One poisoned request among many good ones, at the same moment, on a real broker.

Seen under faults: on PostgreSQL a NUL in one request (a launch token's ``agent_name``)
failed every other write committed in the same batch with 503, and a NUL in an app's
``client_id`` (``POST /v1/app/auth``, unauthenticated) or in an audit query answered 503
"storage error"; on SQLite the same requests answered 200. Now every backend refuses the
poisoned request alone, with 400, and the good ones around it succeed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pgcluster
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker
from pg_e2e import migrate, start_replica, verify_chain

pytestmark = pytest.mark.slow

ROUNDS = 3  # each round: 12 good requests and 4 poisoned ones, released together


def _sqlite(data_dir: Path) -> RunningBroker:
    return launch_broker(data_dir, SHARED_ENV)


def _postgres(data_dir: Path) -> RunningBroker:
    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    url = cluster.new_database("poison")
    migrate(url, data_dir)
    running = start_replica(url, data_dir)
    running.database_url = url  # type: ignore[attr-defined]
    return running


@pytest.fixture(params=["sqlite", "postgres"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningBroker]:
    start = {"sqlite": _sqlite, "postgres": _postgres}[request.param]
    running = start(tmp_path / "broker")
    yield running
    stop_broker(running)


Call = Callable[[httpx.Client], httpx.Response]


def _calls(broker: RunningBroker) -> tuple[list[Call], list[Call]]:
    """(good, poisoned) requests of one round, prepared so that each is one round trip."""
    admin = broker.admin_headers()
    app = broker.create_app(["read:data:*"])
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    launch = {"agent_name": "worker", "allowed_scope": ["read:data:*"]}
    bodies = [
        broker.register_body(broker.launch_token(["read:data:*"]), ["read:data:*"])[0]
        for _ in range(4)
    ]

    def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Call:
        return lambda c: c.post(path, json=body, headers=headers)

    good = [post("/v1/admin/launch-tokens", launch, admin) for _ in range(6)]
    good += [post("/v1/register", body) for body in bodies]
    good += [post("/v1/app/auth", creds) for _ in range(2)]
    poisoned: list[Call] = [
        post("/v1/admin/launch-tokens", {**launch, "agent_name": "work\x00er"}, admin),
        post("/v1/app/auth", {**creds, "client_id": creds["client_id"] + "\x00"}),
        lambda c: c.get("/v1/audit/events", params={"agent_id": "spiffe\x00"}, headers=admin),
        post("/v1/revoke", {"level": "task", "target": "task\x00x"}, admin),
    ]
    return good, poisoned


def test_a_poisoned_request_fails_alone(broker: RunningBroker, tmp_path: Path) -> None:
    for _ in range(ROUNDS):
        good, poisoned = _calls(broker)
        calls = good + poisoned
        barrier = threading.Barrier(len(calls))

        def run(call: Call) -> httpx.Response:
            with httpx.Client(base_url=broker.url, timeout=30) as client:
                client.get("/v1/health/live")  # connect before the race starts
                barrier.wait()
                return call(client)

        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(run, calls))
        good_answers, poisoned_answers = answers[: len(good)], answers[len(good) :]
        assert [a.status_code for a in good_answers if a.status_code >= 300] == [], [
            a.text for a in good_answers if a.status_code >= 300
        ]
        for answer in poisoned_answers:
            assert answer.status_code == 400, answer.text
            assert answer.json()["error_code"] == "invalid_request"
    assert broker.get("/v1/health").json()["status"] == "ok"
    url = getattr(broker, "database_url", None)
    if url is not None:
        done = verify_chain(url, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
