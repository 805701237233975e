"""Offline chains at a resource server: verified by the shared rules, read as a token.

A chain (``tla1~...``, :mod:`tasklease.rules.attenuation`) is verified by
:func:`tasklease.rules.chainverify.verify_chain`, the very function the broker applies,
with this verifier's keys, issuer, audience, clock, limits and revocation index; the
result is handed to the application as a :class:`VerifiedToken` whose holder, scope,
grants, audience, ``exp`` and ``jti`` are the last block's (``offline`` keeps the whole
chain), so routes, scope and grant requirements need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import nacl.signing

from tasklease.rules.attenuation import ChainError
from tasklease.rules.chainverify import RevocationProbe, VerifiedChain, recheck, verify_chain
from tasklease.rules.issuance import Limits
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import InvalidToken

__all__ = ["recheck_offline_chain", "token_of_chain", "verify_offline_chain"]


# Claims of the root that say nothing about the last holder: the root holder's key, its
# actor chain as the broker signed it, its renewal thread, its binding, its grants.
def verify_offline_chain(
    text: str,
    *,
    resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
    issuer: str,
    audience: str,
    now: float,
    limits: Limits,
    max_lifetime: int,
    skew: float,
    revoked: Callable[[RevocationProbe], str | None],
) -> VerifiedChain:
    """Every check of the chain but the presenter's proof, which the caller makes once it
    knows the revocation state is fresh enough (then the proof is spent).

    Raises:
        InvalidToken: any refused check (the precise reason in ``.reason``).
    """
    try:
        return verify_chain(
            text,
            resolve_key=resolve_key,
            issuer=issuer,
            audiences=(audience,),
            now=now,
            limits=limits,
            max_lifetime=max_lifetime,
            presented=None,
            dpop=None,
            revoked=revoked,
            skew=skew,
        )
    except ChainError as exc:
        if exc.reason == "root: unknown kid":
            # As for a token: the caller may fetch the keys once and try again.
            raise InvalidToken("unknown kid") from None
        raise InvalidToken(f"offline chain: {exc.reason}") from None


def recheck_offline_chain(
    chain: VerifiedChain,
    *,
    now: float,
    skew: float,
    revoked: Callable[[RevocationProbe], str | None],
) -> None:
    """A remembered chain at a new use: every element alive and none revoked.

    Raises:
        InvalidToken: expired, not yet valid or revoked.
    """
    try:
        recheck(chain, now=now, skew=skew, revoked=revoked)
    except ChainError as exc:
        raise InvalidToken(f"offline chain: {exc.reason}") from None


def token_of_chain(chain: VerifiedChain) -> VerifiedToken:
    """The chain as the token its last holder presents: the root's claims with the last
    block's holder, ``jti``, times, scope, grants, audience, lineage and ``cnf`` (its key's
    thumbprint), ``offline`` naming the root's ``jti`` and every holder; its
    ``delegation_chain`` every holder that handed the authority on, oldest first."""
    root: Mapping[str, Any] = chain.root_claims
    claims = chain.leaf_payload()
    delegators = chain.delegators
    actors = (chain.holder, *(d.agent for d in reversed(delegators[1:])))
    return VerifiedToken(
        sub=chain.holder,
        client_id=str(root.get("client_id", "")),
        scope=tuple(chain.scope),
        aud=tuple(chain.audience),
        iss=str(root.get("iss", "")),
        exp=chain.exp,
        nbf=chain.iat,
        iat=chain.iat,
        jti=chain.jti,
        task_id=chain.task_id,
        orch_id=str(root.get("orch_id", "")),
        delegation_chain=delegators,
        chain_hash="",
        claims=claims,
        principal=chain.principal,
        actors=actors,
        lineage=tuple(chain.lineage),
        offline=chain,
    )
