"""The authority model with offline derivations: agents attenuate their tokens offline
(``rules.chainverify.derive``, no broker call) between the model's other steps, and after
every step each chain is verified by the shared rule with the broker's keys, limits and
revocation index, exactly as a resource server would: a chain is accepted iff the token
it was derived from is valid by the model, its descendants have not been ended, and the
chain has not expired. So revoking,
releasing, ending a grant, removing an app, renewing and time all reach offline-derived
chains as they reach delegated tokens, and a derivation never grants more than its
token (``AuthorityMachine`` in test_authority_model.py holds the rest)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, precondition, rule
from nacl.signing import SigningKey

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from test_authority_model import SCOPES, AuthorityMachine, MToken  # noqa: E402

from tasklease.rules.attenuation import ChainError, decode  # noqa: E402
from tasklease.rules.chainverify import ChainRejected, derive, verify_chain  # noqa: E402
from tasklease.rules.issuance import IssuanceLimits  # noqa: E402
from tasklease.rules.scopes import is_subset  # noqa: E402

MAX_CHAINS = 16
EXAMPLES = int(os.environ.get("TASKLEASE_MODEL_EXAMPLES", "0"))
STEPS = int(os.environ.get("TASKLEASE_MODEL_STEPS", "0"))


@dataclass
class MChain:
    text: str
    parent: MToken
    exp: int
    iat: int
    scope: tuple[str, ...]


class OfflineAuthorityMachine(AuthorityMachine):
    bound = True  # a chain starts only from a token bound to its holder's key

    def __init__(self) -> None:
        super().__init__()
        self.chains: list[MChain] = []
        self.limits = IssuanceLimits.of(self.broker.config)

    @precondition(lambda self: bool(self.model.tokens) and len(self.chains) < MAX_CHAINS)
    @rule(
        index=st.integers(0, 10_000),
        scope=SCOPES,
        narrow=st.booleans(),
        ttl=st.sampled_from([1, 30, 90, 600, 3600]),
        rehop=st.booleans(),
    )
    def attenuate_offline(
        self, index: int, scope: list[str], narrow: bool, ttl: int, rehop: bool
    ) -> None:
        tok = self.pick(index, live=True)
        if tok is None:
            return
        if narrow:
            scope = list(tok.claims.scope[: 1 + index % len(tok.claims.scope)])
        now = int(self.now)
        delegate = SigningKey.generate()
        # Named under its delegator (docs/formats.md, ``sub``), and so each next hop.
        name = f"{tok.holder.agent_id}/offline-{len(self.chains)}"
        may = (
            is_subset(scope, tok.claims.scope)
            and len(tok.chain) < self.broker.config.max_delegation_depth
            and now < min(tok.claims.exp, tok.ceiling)
        )
        try:
            text = derive(
                tok.issued.token,
                tok.holder.key,
                delegate=name,
                delegate_key=bytes(delegate.verify_key),
                now=now,
                ttl=ttl,
                scope=scope,
                limits=self.limits,
            )
            if rehop and may:  # the delegate hands the whole of it on once more
                text = derive(
                    text,
                    delegate,
                    delegate=f"{name}/next",
                    delegate_key=bytes(SigningKey.generate().verify_key),
                    now=now,
                    ttl=ttl,
                    limits=self.limits,
                )
        except ChainError as exc:
            depth_left = len(tok.chain) + (2 if rehop else 1) <= self.limits.max_delegation_depth
            assert not may or not depth_left, f"derivation refused: {exc.reason}"
            return
        assert may, "derivation granted that the model forbids"
        blocks = decode(text).blocks
        exp = min(b.exp for b in blocks)
        assert exp <= tok.claims.exp and exp <= tok.ceiling
        self.chains.append(MChain(text, tok, exp, now, tuple(scope)))

    def _verify(self, chain: MChain) -> bool:
        cfg = self.broker.config
        try:
            verified = verify_chain(
                chain.text,
                resolve_key=self.broker.keyring.verify_key,
                issuer=cfg.issuer,
                audiences=None,
                now=self.now,
                limits=self.limits,
                max_lifetime=cfg.max_ttl,
                presented=None,
                dpop=None,
                revoked=self.broker.kernel.revocations.match,
                skew=cfg.clock_skew,
            )
        except ChainRejected:
            return False
        assert is_subset(verified.scope, chain.parent.claims.scope)
        assert verified.exp <= chain.parent.claims.exp
        return True

    @invariant()
    def verifier_and_model_agree_on_every_offline_chain(self) -> None:
        for chain in self.chains:
            accepted = self._verify(chain)
            # A chain is a descendant of its token: alive while the token is, and not
            # once the token's descendants have ended (a chain-level end of its jti or
            # grant), as a delegated token would not be.
            # And like a delegated token issued when the block was, it is ended by a
            # chain-level revocation of any holder before it made no earlier than that.
            parent = chain.parent
            handed_on = (*parent.chain, parent.holder.agent_id)
            cut = [self.model.chain_agent_revoked.get(a) for a in handed_on]
            expected = (
                self.model.valid(parent, self.now)
                and not self.model.ends_descendants(parent)
                and not any(hit is not None and chain.iat <= hit for hit in cut)
                and self.now < chain.exp
            )
            assert accepted == expected, (
                f"verifier says {accepted}, model says {expected} for a chain from "
                f"{chain.parent.claims.sub} jti={chain.parent.jti} exp={chain.exp} now={self.now}"
            )


_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
OfflineAuthorityMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 20, stateful_step_count=STEPS or 40, **_common
)
TestAuthorityModelOffline = OfflineAuthorityMachine.TestCase
