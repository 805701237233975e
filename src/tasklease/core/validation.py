"""Zero-trust validation: every presented token, every request, every check.

Order (parse, then verify, then validate claims): size cap → header allow-list (``alg``
must be ``EdDSA``, known ``kid``, expected ``typ``) → signature → claim types → ``iss`` →
``aud`` → ``exp``/``nbf``/``iat`` with the configured skew → lifetime ≤ ``max_ttl`` →
delegation depth and chain hash → revocation (in memory, no I/O).

One precise reason is kept inward (:attr:`TokenRejected.reason`, for the audit log and
debug logs); outward every failure looks the same.
"""

from __future__ import annotations

import hmac
from collections.abc import Container

from tasklease.core import _jws
from tasklease.core.clock import Clock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.revocation import RevocationIndex
from tasklease.core.tokens import (
    Claims,
    ClaimsError,
    act_actors,
    chain_hash,
    claims_from_payload,
)

__all__ = ["TokenRejected", "Validator"]

_CNF_MEMBERS = frozenset(("x5t#S256", "jkt"))


def _well_formed_cnf(cnf: object) -> bool:
    """``cnf`` is a non-empty object of known string members (RFC 8705, RFC 9449).

    An unknown confirmation method must be refused, not ignored: ignoring it would turn a
    token bound in a way we cannot check into a bearer token.
    """
    return (
        isinstance(cnf, dict)
        and bool(cnf)
        and all(k in _CNF_MEMBERS and isinstance(v, str) and v for k, v in cnf.items())
    )


def _check_act(claims: Claims, max_depth: int) -> None:
    """The RFC 8693 ``act`` chain must be exactly the one the chain and principal imply.

    A delegated token with a principal must carry ``act``: its actors, outermost first,
    are the holder, the delegators from the last to the root, then the principal, so its
    depth is the delegation depth + 2 and can never disagree with ``delegation_chain``.
    A token without a principal or without delegation must carry no ``act``.
    """
    act = claims.raw.get("act")
    if not claims.delegation_chain or not claims.principal:
        if act is not None:
            raise TokenRejected("act claim on a token that is not delegated", "delegation")
        return
    actors = act_actors(act, max_depth + 2)
    if actors is None:
        raise TokenRejected("act claim malformed or deeper than the limit", "delegation")
    expected = [claims.sub, *(r.agent for r in reversed(claims.delegation_chain))]
    if actors != [*expected, claims.principal]:
        raise TokenRejected("act chain disagrees with the delegation chain", "delegation")


class TokenRejected(Exception):
    """A token failed validation. ``reason`` is internal; never show it to the caller."""

    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class Validator:
    def __init__(
        self, config: Config, keyring: KeyRing, clock: Clock, revocations: RevocationIndex
    ) -> None:
        self._config = config
        self._keyring = keyring
        self._clock = clock
        self._revocations = revocations

    def validate(
        self,
        token: str,
        kinds: Container[str],
        *,
        audience: str | None = None,
        any_audience: bool = False,
    ) -> Claims:
        """Return the verified claims of ``token`` or raise :class:`TokenRejected`.

        ``kinds`` are the header ``typ`` values this caller accepts. ``audience``, when
        given, must be in the token's ``aud`` (RFC 8707: a token minted for one resource
        fails every other's check); otherwise one of the broker's configured audiences
        must be, unless ``any_audience`` (the broker's own token-management endpoints,
        see docs/decisions.md "Audience-bound tokens at the broker's own endpoints").
        """
        cfg = self._config
        if not isinstance(token, str) or not token:
            raise TokenRejected("no token", "format")
        try:
            decoded = _jws.decode(
                token,
                resolve_key=self._keyring.verify_key,
                allowed_typs=kinds,
                max_bytes=cfg.max_token_bytes,
            )
        except _jws.JWSError as exc:
            raise TokenRejected(exc.reason, "signature") from None
        try:
            claims = claims_from_payload(decoded.typ, decoded.claims)
        except ClaimsError as exc:
            raise TokenRejected(str(exc), "claims") from None
        return self.check_claims(claims, audience=audience, any_audience=any_audience)

    def check_claims(
        self, claims: Claims, *, audience: str | None = None, any_audience: bool = False
    ) -> Claims:
        """Every check after the signature: for JWTs and for by-reference tokens' claims.

        Raises :class:`TokenRejected`; ``audience`` and ``any_audience`` as :meth:`validate`.
        """
        cfg = self._config
        if not hmac.compare_digest(claims.iss.encode(), cfg.issuer.encode()):
            raise TokenRejected("issuer mismatch", "issuer")
        if audience is not None:
            if audience not in claims.aud:
                raise TokenRejected(f"audience mismatch: expected {audience}", "audience")
        elif not any_audience and not any(a in claims.aud for a in cfg.audience):
            raise TokenRejected("audience mismatch", "audience")
        if not claims.aud:
            raise TokenRejected("empty audience", "audience")
        cnf = claims.raw.get("cnf")
        if cnf is not None and not _well_formed_cnf(cnf):
            raise TokenRejected("cnf claim malformed", "claims")
        now = self._clock.now()
        skew = cfg.clock_skew
        if now > claims.exp + skew:
            raise TokenRejected("token expired", "expired")
        if now + skew < claims.nbf:
            raise TokenRejected("token not yet valid", "not_yet_valid")
        if now + skew < claims.iat:
            raise TokenRejected("token issued in the future", "not_yet_valid")
        if claims.exp <= claims.iat or claims.exp - claims.iat > cfg.max_ttl:
            raise TokenRejected("token lifetime outside the allowed range", "claims")
        if claims.delegation_chain:
            if len(claims.delegation_chain) > cfg.max_delegation_depth:
                raise TokenRejected("delegation chain longer than the depth limit", "delegation")
            if not hmac.compare_digest(claims.chain_hash, chain_hash(claims.delegation_chain)):
                raise TokenRejected("delegation chain hash mismatch", "delegation")
        elif claims.chain_hash:
            raise TokenRejected("chain_hash without a delegation chain", "delegation")
        if "act" in claims.raw or claims.principal:
            _check_act(claims, cfg.max_delegation_depth)
        level = self._revocations.match(claims)
        if level is not None:
            raise TokenRejected(f"token has been revoked (level {level})", "revoked")
        return claims
