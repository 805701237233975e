"""A broker served over loopback HTTP in this process (memory store, manual clock), with
the registration ceremony over the wire and the audit trail of a refusal."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx
from core_support import ISSUER, START, make_broker
from issuers import Served
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.http.app import create_app


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class Deployment:
    broker: Broker
    served: Served
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def clock(self) -> ManualClock:
        clock = self.broker.clock
        assert isinstance(clock, ManualClock)
        return clock

    def now(self) -> float:
        return self.broker.clock.now()

    def admin_headers(self) -> dict[str, str]:
        token, _ = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=self.broker.config.issuer,
            sub="admin",
            aud=self.broker.config.audience,
            iat=int(self.now()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return {"Authorization": f"Bearer {token}"}

    def add_attestor(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post("/v1/admin/attestors", json=body, headers=self.admin_headers())
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def register(
        self,
        scope: list[str],
        attestation: dict[str, Any] | None,
        *,
        launch_token: str | None = None,
        declared: dict[str, str] | None = None,
        task: str = "task-1",
    ) -> httpx.Response:
        key = SigningKey.generate()
        nonce = self.client.get("/v1/challenge").json()["nonce"]
        body: dict[str, Any] = {
            "nonce": nonce,
            "public_key": b64(bytes(key.verify_key)),
            "signature": b64(key.sign(bytes.fromhex(nonce)).signature),
            "orch_id": "orch-1",
            "task_id": task,
            "requested_scope": scope,
        }
        if launch_token is not None:
            body["launch_token"] = launch_token
        if attestation is not None:
            body["attestation"] = attestation
        if declared is not None:
            body["declared"] = declared
        return self.client.post("/v1/register", json=body)

    def denial(self, answer: httpx.Response, status: int = 401) -> str:
        """The one audit event of a refusal (its detail), found by the problem's denial id."""
        assert answer.status_code == status, answer.text
        problem = answer.json()
        denial_id = problem["denial_id"]
        events, _ = self.broker.audit_events(AuditQuery(limit=1000))
        found = [e.detail for e in events if denial_id in e.detail]
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> None:
        self.client.close()
        self.served.stop()


def deploy(*, clock: bool = True, **config: Any) -> Deployment:
    broker = make_broker(**config) if clock else _system_broker(**config)
    served = Served(create_app(broker, background=False))
    return Deployment(broker, served, httpx.Client(base_url=served.url, timeout=15))


def _system_broker(**config: Any) -> Broker:
    from tasklease.core.config import Config
    from tasklease.core.keys import KeyRing
    from tasklease.storage import MemoryStore

    return Broker(
        Config(trust_domain="broker.example", issuer=ISSUER, **config),
        MemoryStore(),
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )


__all__ = ["ISSUER", "START", "Deployment", "deploy"]
