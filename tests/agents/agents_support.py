"""Support: an in-process Broker on a ManualClock, served by uvicorn on loopback.

Time is moved by hand (``env.clock.advance``); the liveness sweeper is the broker method
the server's background loop runs, called here directly, so nothing ever sleeps for a
heartbeat miss. Every request is real HTTP over a loopback socket.
"""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

START = 1_800_000_000.0
CTX = RequestContext(request_id="req-agents", remote="127.0.0.1", path="/v1/test")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class AgentHandle:
    agent_id: str
    token: str
    key: SigningKey

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


class Env:
    def __init__(self, broker: Broker, clock: ManualClock, url: str) -> None:
        self.broker = broker
        self.clock = clock
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def admin_claims(self) -> Any:
        cfg = self.broker.config
        _, claims = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(self.clock.now()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return claims

    def admin_token(self) -> str:
        cfg = self.broker.config
        token, _ = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(self.clock.now()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return token

    def launch(self, scope: Sequence[str], principal: str | None = None) -> str:
        token, _ = self.broker.create_launch_token(
            self.admin_claims(),
            agent_name="agent",
            allowed_scope=list(scope),
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=CTX,
            principal=principal,
        )
        return token

    def register(
        self,
        task: str,
        scope: Sequence[str] = ("read:data:*",),
        *,
        principal: str | None = None,
        key: SigningKey | None = None,
    ) -> AgentHandle:
        key = key or SigningKey.generate()
        nonce = self.http.get("/v1/challenge").json()["nonce"]
        body = {
            "launch_token": self.launch(scope, principal),
            "nonce": nonce,
            "public_key": b64(bytes(key.verify_key)),
            "signature": b64(key.sign(bytes.fromhex(nonce)).signature),
            "orch_id": "orch-1",
            "task_id": task,
            "requested_scope": list(scope),
        }
        answer = self.http.post("/v1/register", json=body)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        return AgentHandle(data["agent_id"], data["access_token"], key)

    def validate(self, token: str) -> dict[str, Any] | None:
        answer = self.http.post("/v1/token/validate", json={"token": token}).json()
        return answer["claims"] if answer["valid"] else None

    def audit(self, event_type: str, outcome: str | None = None) -> list[Any]:
        events, _ = self.broker.store.query_audit(
            AuditQuery(event_type=event_type, outcome=outcome, limit=1000)
        )
        return events

    def nonce_hex(self) -> str:
        return secrets.token_hex(16)


class _Served:
    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("broker did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def make_env(**config: Any) -> tuple[Env, _Served]:
    clock = ManualClock(START)
    broker = Broker(
        Config(**config),
        MemoryStore(),
        KeyRing.generate(),
        clock=clock,
        nonce_secret=b"n" * 32,
    )
    served = _Served(create_app(broker, background=False))
    return Env(broker, clock, served.url), served
