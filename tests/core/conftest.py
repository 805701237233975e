"""Fixtures for the core's unit tests: a Broker on a MemoryStore with a ManualClock.

Nothing here sleeps or patches time. argon2 is slow on purpose, so the admin secret is
hashed once per session and most tests take admin and app *claims* minted straight from
the broker's keyring (exactly what ``admin_auth`` would mint) instead of paying for a
password check; the few tests about the secrets themselves call the real methods.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.store import Store
from tasklease.core.tokens import ADMIN_SCOPES, APP_SCOPES, KIND_ADMIN, KIND_APP, Claims, mint
from tasklease.rules.messages import heartbeat_signing_input
from tasklease.storage import MemoryStore, open_store

ADMIN_SECRET = "correct horse battery staple admin secret"
NONCE_SECRET = b"x" * 32
CTX = RequestContext(request_id="req-test", remote="127.0.0.1", path="/v1/test")
START = 1_800_000_000.0


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def plain_claims(**kw: Any) -> Claims:
    """An agent token's claims, undelegated, issued at 100 and ending at 200, with ``kw``
    in place of any of them: for the revocation index, which reads claims only."""
    base: dict[str, Any] = {
        "kind": "at+jwt",
        "iss": "tasklease",
        "sub": "s",
        "aud": ("tasklease",),
        "exp": 200,
        "nbf": 100,
        "iat": 100,
        "jti": "j",
        "scope": (),
        "task_id": "t",
        "orch_id": "o",
        "client_id": "c",
        "oiat": 100,
        "rnc": 0,
        "delegation_chain": (),
        "chain_hash": "",
        "raw": {},
    }
    base.update(kw)
    return Claims(**base)


def declare_done(broker: Broker, ctx: RequestContext, agent: Agent, claims: Any) -> None:
    """``agent`` declares itself done with the token of ``claims`` (a signed heartbeat,
    ``done``): its session is released. The clock then moves on a second."""
    now, proof = int(broker.clock.now()), "p" * 20
    message = heartbeat_signing_input(agent.sub, claims.jti, now, proof, True)
    session = broker.heartbeat(
        claims,
        timestamp=now,
        jti=proof,
        signature=b64(agent.key.sign(message).signature),
        done=True,
        ctx=ctx,
    )
    assert session.state == "released"
    broker.clock.advance(1)


@dataclass
class Agent:
    """A registered agent: its first token, its key and the arguments that registered it."""

    issued: IssuedToken
    key: SigningKey

    @property
    def token(self) -> str:
        return self.issued.token

    @property
    def claims(self) -> Any:
        return self.issued.claims

    @property
    def sub(self) -> str:
        return str(self.issued.claims.sub)


class Kit:
    """Helpers shared by the core tests (handed out by the ``kit`` fixture)."""

    ctx = CTX
    admin_secret = ADMIN_SECRET

    @staticmethod
    def admin(broker: Broker) -> IssuedToken:
        """An admin token, minted as ``Broker.admin_auth`` mints it (without argon2)."""
        cfg = broker.config
        token, claims = mint(
            broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(broker.clock.now()),
            ttl=min(cfg.admin_token_ttl, cfg.max_ttl),
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return IssuedToken(token, claims)

    @staticmethod
    def app(broker: Broker, app_id: str = "app-demo-abc123") -> IssuedToken:
        """An app token, minted as ``Broker.app_auth`` mints it (without argon2)."""
        cfg = broker.config
        token, claims = mint(
            broker.keyring,
            kind=KIND_APP,
            iss=cfg.issuer,
            sub=f"app:{app_id}",
            aud=cfg.audience,
            iat=int(broker.clock.now()),
            ttl=min(cfg.app_token_ttl, cfg.max_ttl),
            scope=APP_SCOPES,
            client_id="de-0123456789ab",
        )
        return IssuedToken(token, claims)

    @staticmethod
    def launch(
        broker: Broker,
        scope: Sequence[str] = ("read:data:*",),
        *,
        max_ttl: int | None = None,
        single_use: bool | None = None,
        ttl: int | None = None,
        agent_key: str | None = None,
    ) -> str:
        """A launch token created by the admin with ``scope`` as its ceiling (bound to
        ``agent_key``, standard base64 of a raw Ed25519 public key, when given)."""
        token, _ = broker.create_launch_token(
            Kit.admin(broker).claims,
            agent_name="test-agent",
            allowed_scope=list(scope),
            max_ttl=max_ttl,
            single_use=single_use,
            ttl=ttl,
            ctx=CTX,
            agent_key=agent_key,
        )
        return token

    @staticmethod
    def register_args(
        broker: Broker,
        launch_token: str,
        scope: Sequence[str] = ("read:data:*",),
        *,
        orch_id: str = "orch-1",
        task_id: str = "task-1",
        key: SigningKey | None = None,
        nonce: str | None = None,
    ) -> tuple[dict[str, Any], SigningKey]:
        """Keyword arguments for ``Broker.register`` with a fresh nonce, correctly signed."""
        key = key or SigningKey.generate()
        if nonce is None:
            nonce, _ = broker.challenge()
        signature = key.sign(bytes.fromhex(nonce)).signature
        args: dict[str, Any] = {
            "launch_token": launch_token,
            "nonce": nonce,
            "public_key": b64(bytes(key.verify_key)),
            "signature": b64(signature),
            "orch_id": orch_id,
            "task_id": task_id,
            "requested_scope": list(scope),
            "ctx": CTX,
        }
        return args, key

    @staticmethod
    def register(
        broker: Broker,
        launch_token: str | None = None,
        scope: Sequence[str] = ("read:data:*",),
        *,
        orch_id: str = "orch-1",
        task_id: str = "task-1",
        dpop: bool = False,
    ) -> Agent:
        """Register an agent end to end: challenge, sign the nonce bytes, register;
        ``dpop``: with a DPoP proof by the agent's key, which its tokens are then bound to."""
        if launch_token is None:
            launch_token = Kit.launch(broker, scope)
        args, key = Kit.register_args(broker, launch_token, scope, orch_id=orch_id, task_id=task_id)
        if dpop:
            args["ctx"] = Kit.dpop_ctx(key, broker.clock.now(), "POST", REGISTER_URL)
        return Agent(broker.register(**args), key)

    @staticmethod
    def dpop_ctx(
        key: SigningKey, now: float, method: str, url: str, token: str | None = None
    ) -> RequestContext:
        """The request context of a call with an RFC 9449 proof by ``key`` for ``method``
        ``url`` (and ``token``'s ``ath``), dated ``now``."""
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(bytes(key.verify_key))}
        header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}
        claims: dict[str, Any] = {
            "jti": secrets.token_hex(12),
            "htm": method,
            "htu": url,
            "iat": int(now),
        }
        if token is not None:
            claims["ath"] = _b64url(hashlib.sha256(token.encode("ascii")).digest())
        text = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        proof = f"{text}.{_b64url(key.sign(text.encode('ascii')).signature)}"
        return replace(CTX, dpop=proof, method=method, url=url)

    @staticmethod
    def bearer(token: str) -> str:
        return f"Bearer {token}"


REGISTER_URL = "https://broker.example/v1/register"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def admin_secret_hash() -> str:
    return hash_secret(ADMIN_SECRET)


BrokerFactory = Callable[..., Broker]


@pytest.fixture(scope="session")
def make_broker(admin_secret_hash: str) -> BrokerFactory:
    """Build a Broker; keyword arguments other than store/clock/keyring go to Config."""

    def factory(
        *,
        store: Store | None = None,
        clock: ManualClock | None = None,
        keyring: KeyRing | None = None,
        **config: Any,
    ) -> Broker:
        return Broker(
            Config(admin_secret_hash=admin_secret_hash, **config),
            store if store is not None else MemoryStore(),
            keyring or KeyRing.generate(),
            clock=clock or ManualClock(START),
            nonce_secret=NONCE_SECRET,
        )

    return factory


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store() -> Store:
    return open_store("memory://")


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def broker(
    make_broker: BrokerFactory, store: Store, clock: ManualClock, keyring: KeyRing
) -> Broker:
    return make_broker(store=store, clock=clock, keyring=keyring)
