"""An in-process fleet of offline peers (``tasklease.client.OfflinePeerAuth``) for the
client's peer tests: tokens checked from memory, one injected clock per agent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from tasklease.client import OfflinePeerAuth, PeerAuthenticationFailed
from tasklease.rules import jws

TD = "spiffe://tasklease.local/agent/orch/task"
CHANNEL = "https://peer.example:8443/peer"
START = 1_800_000_000.0
WINDOW = 30


@dataclass(frozen=True)
class Token:
    sub: str
    key: nacl.signing.SigningKey
    scope: tuple[str, ...] = ("read:data:*",)
    exp: int = int(START) + 600

    @property
    def claims(self) -> dict[str, Any]:
        x = jws.b64url_encode(bytes(self.key.verify_key))
        return {"sub": self.sub, "agent_jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Fleet:
    """Agents by name; each one's token is ``token-<name>``."""

    tokens: dict[str, Token] = field(default_factory=dict)

    def check(self, token: str) -> Token:
        found = self.tokens.get(token)
        if found is None:
            raise PeerAuthenticationFailed("unknown token")
        return found

    def peer(self, name: str, clock: Clock, **options: Any) -> OfflinePeerAuth:
        key = nacl.signing.SigningKey.generate()
        self.tokens[f"token-{name}"] = Token(f"{TD}/{name}", key)
        return OfflinePeerAuth(
            f"{TD}/{name}", lambda: f"token-{name}", key, self.check, window=WINDOW,
            clock=clock, show_bearer_token=True, **options,
        )  # fmt: skip
