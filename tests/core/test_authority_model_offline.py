"""The authority model with offline derivations: agents attenuate what they hold without the
broker, and the broker must agree with the model on every offline level as on every token.

The machine is the kernel's (:mod:`test_authority_model`) with more rules: ``attenuate``
derives a block from a broker token or an offline chain for a registered agent, as the
SDK does (``rules.chainverify.derive``, with the broker's limits); ``forge`` appends a
block that widens (more scope, a later ``exp``, a delegate already in the chain), signed
by the right key, as a dishonest holder could; ``revoke_block`` revokes a block's ``jti``
at the ``token`` or ``chain`` level, a jti the broker never saw. The model knows each
block's parent and keeps the same history of ends as for tokens.

After every step, besides the kernel's invariants: every offline level is valid at the
broker (presented with its holder's DPoP proof) exactly when the model says it is: alive
only while its root token and every block before it are, within every block's ``exp``,
never past a revocation of an agent, task, app or block it descends from, and never when
any block widened. At each derivation: nothing outlives its parent, nothing widens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import invariant, precondition, rule
from nacl.signing import SigningKey

from tasklease.core.validation import TokenRejected
from tasklease.rules import attenuation, jws
from tasklease.rules.binding import Presentation
from tasklease.rules.chainverify import derive
from tasklease.rules.issuance import IssuanceLimits
from tasklease.rules.scopes import is_subset

from .test_authority_model import (
    EXAMPLES,
    SCOPES,
    STEPS,
    AuthorityMachine,
    MAgent,
    Model,
    MToken,
    _common,
)

URL = "https://rs.example/model"
MAX_OFFLINE = 12  # keeps the per-step check cheap


@dataclass
class MBlock:
    sub: str
    key: SigningKey
    jti: str
    iat: int
    exp: int
    scope: tuple[str, ...]
    ended: bool = False  # revoked at the token level


@dataclass
class MOffline:
    text: str
    root: MToken
    blocks: tuple[MBlock, ...]
    forged: bool = False  # some block widened: never valid, nor anything below

    @property
    def holder_key(self) -> SigningKey:
        return self.blocks[-1].key


def offline_valid(model: Model, off: MOffline, now: float) -> bool:
    """The model's word on an offline level, from its parts' histories."""
    root = off.root
    if off.forged or not model.valid(root, now) or model.ends_descendants(root):
        return False
    holders = [*root.chain, root.holder.agent_id]
    task_revoked = model.task_revoked.get(root.root.task)
    for index, block in enumerate(off.blocks):
        if block.ended or now >= block.exp:
            return False
        if any(earlier.jti in model.ended_jtis for earlier in off.blocks[:index]):
            return False
        if task_revoked is not None and block.iat <= task_revoked:
            return False
        delegate = model.agent(block.sub)
        if delegate.revoked_at is not None and block.iat <= delegate.revoked_at:
            return False
        for agent_id in holders:
            agent = model.agent(agent_id)
            if agent.revoked_at is not None and block.iat <= agent.revoked_at:
                return False
            hit = model.chain_agent_revoked.get(agent_id)
            if hit is not None and block.iat <= hit:
                return False
        holders.append(block.sub)
    return True


def _block_of(text: str) -> attenuation.Block:
    return attenuation.decode(text).blocks[-1]


def _proof(key: SigningKey, token: str, now: float) -> str:
    def part(value: Mapping[str, object]) -> str:
        return jws.b64url_encode(json.dumps(value, separators=(",", ":")).encode())

    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    claims = {
        "jti": secrets.token_hex(12),
        "htm": "GET",
        "htu": URL,
        "iat": int(now),
        "ath": jws.b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    signing_input = part(header) + "." + part(claims)
    return (
        signing_input
        + "."
        + jws.b64url_encode(jws.sign_detached(signing_input.encode("ascii"), key))
    )


class OfflineAuthorityMachine(AuthorityMachine):
    """The kernel's machine, with offline derivations, forgeries and block revocations."""

    def __init__(self) -> None:
        super().__init__()
        self.offline: list[MOffline] = []
        self.limits = IssuanceLimits.of(self.broker.config)

    def _offline_room(self) -> bool:
        return len(self.offline) < MAX_OFFLINE and bool(self.model.tokens)

    def _base(
        self, index: int, from_offline: bool, live: bool
    ) -> tuple[str, SigningKey, MToken, tuple[MBlock, ...], tuple[str, ...], int]:
        """What to derive from, mostly a live token or honest level (``live``), else any,
        dead ones too: its text, its holder's key, the root token, the blocks so far, the
        holder's scope and ``exp``."""
        now = self.now
        honest = [o for o in self.offline if not o.forged]
        if live:
            honest = [o for o in honest if offline_valid(self.model, o, now)] or honest
        if from_offline and honest:
            off = honest[index % len(honest)]
            last = off.blocks[-1]
            return off.text, last.key, off.root, off.blocks, last.scope, last.exp
        tok = self.pick(index, live)
        assert tok is not None  # the precondition: some token exists
        return tok.issued.token, tok.holder.key, tok, (), tok.claims.scope, tok.claims.exp

    def _delegate(self, to: int, holders: list[str], fresh: bool) -> MAgent:
        """Mostly a live agent outside the chain (``fresh``); else anyone, those in the
        chain included."""
        pool = [
            a
            for a in self.model.agents
            if a.agent_id not in holders and self.model.agent_alive(a, self.now)
        ]
        if not fresh or not pool:
            pool = self.model.agents
        return pool[to % len(pool)]

    @precondition(lambda self: self._offline_room() and bool(self.model.agents))
    @rule(
        index=st.integers(0, 10_000),
        to=st.integers(0, 10_000),
        from_offline=st.booleans(),
        scope=SCOPES,
        narrow=st.booleans(),
        fresh=st.booleans(),
        ttl=st.sampled_from([10, 60, 120, 600, 5000]),
    )
    def attenuate(
        self,
        index: int,
        to: int,
        from_offline: bool,
        scope: list[str],
        narrow: bool,
        fresh: bool,
        ttl: int,
    ) -> None:
        """A holder derives offline for a registered agent, as the SDK does."""
        text, key, root, blocks, held, parent_exp = self._base(index, from_offline, fresh)
        holders = [*root.chain, root.holder.agent_id, *(b.sub for b in blocks)]
        delegate = self._delegate(to, holders, fresh)
        asked = list(held[: 1 + index % len(held)]) if (narrow or fresh) and held else scope
        now = int(self.now)
        try:
            derived = derive(
                text,
                key,
                delegate=delegate.agent_id,
                delegate_key=bytes(delegate.key.verify_key),
                now=now,
                ttl=ttl,
                scope=asked,
                limits=self.limits,
            )
        except attenuation.ChainError:
            return  # refused early, as the SDK would: nothing to present
        block = _block_of(derived)
        granted = block.scope if block.scope is not None else held
        # Nothing widens, nothing outlives its parent, nobody is in the chain twice.
        assert is_subset(granted, held), (granted, held)
        assert block.exp <= parent_exp and block.exp <= root.claims.exp
        assert block.iat == now
        assert delegate.agent_id not in holders
        assert len(holders) <= self.broker.config.max_delegation_depth
        mblock = MBlock(
            delegate.agent_id, delegate.key, block.jti, block.iat, block.exp, tuple(granted)
        )
        self.offline.append(MOffline(derived, root, (*blocks, mblock)))

    @precondition(lambda self: self._offline_room() and bool(self.model.agents))
    @rule(
        index=st.integers(0, 10_000),
        to=st.integers(0, 10_000),
        from_offline=st.booleans(),
        how=st.sampled_from(["scope", "exp", "cycle"]),
    )
    def forge(self, index: int, to: int, from_offline: bool, how: str) -> None:
        """A dishonest holder signs a block that widens, with its own (right) key."""
        text, key, root, blocks, held, parent_exp = self._base(index, from_offline, True)
        now = int(self.now)
        holders = [*root.chain, root.holder.agent_id, *(b.sub for b in blocks)]
        delegate = self._delegate(to, holders, True)
        scope, exp = held, min(parent_exp, now + 30)
        if how == "scope":
            scope = (*held, "write:data:*")
        elif how == "exp":
            exp = parent_exp + 60
        else:
            delegate = self.model.agent(holders[to % len(holders)])
        payload = attenuation.block_payload(
            sub=delegate.agent_id,
            key=bytes(delegate.key.verify_key),
            exp=exp,
            iat=now,
            jti=secrets.token_hex(16),
            depth=len(root.chain) + len(blocks) + 1,
            scope=tuple(scope),
        )
        try:
            forged = attenuation.append_block(text, payload, key)
        except attenuation.ChainError:
            return  # too many blocks or bytes: not even a chain
        block = _block_of(forged)
        mblock = MBlock(delegate.agent_id, delegate.key, block.jti, now, exp, tuple(scope))
        self.offline.append(MOffline(forged, root, (*blocks, mblock), forged=True))

    @precondition(lambda self: bool(self.offline))
    @rule(index=st.integers(0, 10_000), chain_level=st.booleans())
    def revoke_block(self, index: int, chain_level: bool) -> None:
        """An operator revokes a block by its jti (never reported: by value)."""
        off = self.offline[index % len(self.offline)]
        block = off.blocks[index % len(off.blocks)]
        self._revoke("chain" if chain_level else "token", block.jti)
        self.model.ended_jtis.add(block.jti)
        if not chain_level:
            block.ended = True

    @invariant()
    def broker_and_model_agree_on_every_offline_level(self) -> None:
        now = self.now
        for off in self.offline:
            presented = Presentation(
                scheme="DPoP", dpop_proof=_proof(off.holder_key, off.text, now), htm="GET", htu=URL
            )
            try:
                self.broker.validate(off.text, presented=presented)
                broker_valid = True
            except TokenRejected as exc:
                broker_valid, reason = False, exc.reason
            else:
                reason = ""
            model_valid = offline_valid(self.model, off, now)
            assert broker_valid == model_valid, (
                f"broker says {broker_valid} ({reason}), model says {model_valid} for an "
                f"offline level of {len(off.blocks)} blocks, forged={off.forged}, now={now}"
            )


OfflineAuthorityMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 25, stateful_step_count=STEPS or 40, **_common
)
TestAuthorityModelOffline = OfflineAuthorityMachine.TestCase
