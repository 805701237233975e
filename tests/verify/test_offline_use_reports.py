"""A verifier reports the offline chains it accepted to the broker's audit log: counted per
chain and minute, sent with its app token once the minute is over, recorded once however
often sent (a real broker process, real HTTP)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import nacl.signing
from cryptography.hazmat.primitives import serialization
from e2e_support import RunningBroker
from verify_support import app_credentials, dpop_proof, poll

from tasklease.rules.chainverify import derive
from tasklease.verify import Verifier
from tasklease.verify._usereports import UseReporter

URL = "https://svc-a.example/data"


class _Clock:
    """The wall clock, moved on by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def _chain(broker: RunningBroker) -> tuple[str, nacl.signing.SigningKey, str]:
    """A chain of one block from a new agent's token, its holder's key and identity."""
    agent = broker.register(["read:data:*"], dpop=True)
    seed = agent.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    key = nacl.signing.SigningKey.generate()
    holder = f"{agent.agent_id}/user"
    chain = derive(
        agent.access_token,
        nacl.signing.SigningKey(seed),
        delegate=holder,
        delegate_key=bytes(key.verify_key),
        now=int(time.time()),
        ttl=300,
    )
    return chain, key, holder


def _uses(broker: RunningBroker, leaf_holder: str) -> list[dict[str, Any]]:
    answer = broker.get(
        "/v1/audit/events",
        params={"event_type": "offline_use_reported", "agent_id": leaf_holder, "limit": 50},
        headers=broker.admin_headers(),
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def test_a_verifier_reports_each_minute_of_uses_once(broker: RunningBroker) -> None:
    chain, key, holder = _chain(broker)
    clock = _Clock()
    verifier = Verifier(
        broker.url, audience="svc-a", credentials=app_credentials(broker), clock=clock
    )
    with verifier:
        for _ in range(3):
            proof = dpop_proof(key, htm="GET", htu=URL, token=chain)
            token = verifier.verify(chain, scheme="DPoP", dpop_proof=proof, htm="GET", htu=URL)
            assert token.sub == holder
        assert verifier.stats()["offline_uses_pending"] == 0  # the minute is not over
        clock.offset = 61  # the minute is over: the next keepalive reports it
        poll(lambda: bool(_uses(broker, holder)), timeout=10, interval=0.2)
    (event,) = _uses(broker, holder)
    assert event["detail"].startswith("reported late | occurred_at=")
    assert "count=3" in event["detail"] and "received_at=" in event["detail"]


def test_uses_wait_for_the_broker_and_a_minute_sent_twice_is_recorded_once(
    broker: RunningBroker,
) -> None:
    chain, _, holder = _chain(broker)
    credentials = app_credentials(broker)

    def app_token() -> str:
        answer = broker.post(
            "/v1/app/auth",
            json={"client_id": credentials.client_id, "client_secret": credentials.client_secret},
        )
        return str(answer.json()["access_token"])

    used_at = time.time()
    # The broker unreachable: the uses wait.
    with httpx.Client(base_url="http://127.0.0.1:9") as nowhere:
        away = UseReporter(nowhere, app_token, lambda: None)
        away.used(chain, used_at)
        assert away.flush(used_at, everything=True) == 0 and away.pending == 1
    # Reachable: the same minute sent twice (an answer lost on the way) is one event.
    with httpx.Client(base_url=broker.url) as client:
        for _ in range(2):
            back = UseReporter(client, app_token, lambda: None)
            back.used(chain, used_at)
            back.used(chain, used_at)
            assert back.flush(used_at, everything=True) == 1 and back.pending == 0
    (event,) = _uses(broker, holder)
    assert f"verifier={credentials.client_id} count=2" in event["detail"]
