"""Races over real sockets: a launch token registers exactly as many agents as it has uses."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from e2e_support import RunningBroker, assert_problem

WORKERS = 20
SCOPE = ["read:data:race"]


def test_single_use_launch_token_under_concurrent_registration(broker: RunningBroker) -> None:
    launch_token = broker.launch_token(SCOPE, ttl=120)
    # Every contender has its own key and its own fresh nonce, so only the launch token
    # is contended.
    bodies = [broker.register_body(launch_token, SCOPE)[0] for _ in range(WORKERS)]
    assert len({b["nonce"] for b in bodies}) == WORKERS
    barrier = threading.Barrier(WORKERS)

    def contend(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(base_url=broker.url, timeout=30.0) as client:
            client.get("/v1/health")  # open the connection before the race starts
            barrier.wait(timeout=30)
            return client.post("/v1/register", json=body)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        responses = list(pool.map(contend, bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (WORKERS - 1), statuses
    winner = next(r for r in responses if r.status_code == 200)
    assert broker.is_valid(winner.json()["access_token"])
    for resp in responses:
        if resp.status_code == 401:
            body = assert_problem(resp, 401, "unauthorized", instance="/v1/register")
            assert "already consumed" in body["detail"], body

    # Exactly one agent_registered event for the winner.
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "agent_registered", "agent_id": winner.json()["agent_id"]},
        headers=broker.admin_headers(),
    ).json()
    assert events["total"] == 1


def test_five_uses_twenty_concurrent_registrations_five_winners(broker: RunningBroker) -> None:
    created = broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "race", "allowed_scope": SCOPE, "single_use": False, "max_uses": 5},
        headers=broker.admin_headers(),
    )
    assert created.status_code == 201, created.text
    launch_token = created.json()["launch_token"]
    bodies = [broker.register_body(launch_token, SCOPE)[0] for _ in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)

    def contend(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(base_url=broker.url, timeout=30.0) as client:
            client.get("/v1/health")
            barrier.wait(timeout=30)
            return client.post("/v1/register", json=body)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        responses = list(pool.map(contend, bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [401] * (WORKERS - 5), statuses
    winners = {r.json()["agent_id"] for r in responses if r.status_code == 200}
    assert len(winners) == 5
    for resp in responses:
        if resp.status_code == 401:
            body = assert_problem(resp, 401, "unauthorized", instance="/v1/register")
            assert "already consumed" in body["detail"], body
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "agent_registered"},
        headers=broker.admin_headers(),
    ).json()["events"]
    assert winners <= {e["agent_id"] for e in events}
    assert sum(e["agent_id"] in winners for e in events) == 5


def test_concurrent_renewals_of_one_token_yield_one_successor(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:renew-race"])
    barrier = threading.Barrier(10)

    def renew(_: int) -> httpx.Response:
        with httpx.Client(base_url=broker.url, timeout=30.0) as client:
            client.get("/v1/health")
            barrier.wait(timeout=30)
            return client.post("/v1/token/renew", headers=agent.bearer)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(renew, range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 9, statuses
    assert not broker.is_valid(agent.access_token)


def test_one_nonce_raced_across_launch_tokens(broker: RunningBroker) -> None:
    """The same nonce sent with 20 different launch tokens: one wins, nothing else burns."""
    nonce = broker.nonce()
    tokens = [broker.launch_token(SCOPE, ttl=120) for _ in range(WORKERS)]
    bodies = [broker.register_body(lt, SCOPE, nonce=nonce)[0] for lt in tokens]
    barrier = threading.Barrier(WORKERS)

    def contend(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(base_url=broker.url, timeout=30.0) as client:
            client.get("/v1/health")
            barrier.wait(timeout=30)
            return client.post("/v1/register", json=body)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        responses = list(pool.map(contend, bodies))
    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [200] + [401] * (WORKERS - 1), statuses
    for resp in responses:
        if resp.status_code == 401:
            assert_problem(resp, 401, "unauthorized", detail="nonce: nonce already consumed")
    # The losers' launch tokens are intact.
    loser = tokens[statuses.index(401)]
    assert broker.register(SCOPE, launch_token=loser)


def test_refused_registrations_are_audited_with_their_denial_ids(broker: RunningBroker) -> None:
    """Refusals decided on the event loop are still audited before the answer leaves."""
    launch_token = broker.launch_token(SCOPE, ttl=120)
    good, _ = broker.register_body(launch_token, SCOPE)
    unknown = dict(broker.register_body(launch_token, SCOPE)[0], launch_token="b" * 64)
    forged = dict(good, signature=broker.register_body(launch_token, SCOPE)[0]["signature"])

    def post(body: dict[str, object]) -> httpx.Response:
        return broker.post("/v1/register", json=body)

    answers = [post(unknown), post(forged)]
    for resp in answers:
        assert_problem(resp, 401, "unauthorized", instance="/v1/register")
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "registration_failed"},
        headers=broker.admin_headers(),
    ).json()["events"]
    details = " ".join(e["detail"] for e in events)
    for resp in answers:
        assert f"denial={resp.json()['denial_id']}" in details
    # The forged proof spent its nonce; the launch token is intact for an honest agent.
    assert post(good).status_code == 401
    assert post(broker.register_body(launch_token, SCOPE)[0]).status_code == 200
