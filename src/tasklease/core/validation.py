"""Zero-trust validation: every presented token, every request, every check.

Order (parse, then verify, then validate claims): size cap → header allow-list (``alg``
must be ``EdDSA``, known ``kid``, expected ``typ``) → signature → claim types → the claim
rules of :mod:`tasklease.rules.claims` (``iss`` → ``aud`` → ``cnf`` shape → ``exp`` with
no leeway, ``nbf``/``iat`` with the configured skew → lifetime ≤ ``max_ttl`` → ``max_exp``
→ delegation depth and chain hash → ``act``) → revocation (in memory, no I/O).

One precise reason is kept inward (:attr:`TokenRejected.reason`, for the audit log and
debug logs); outward every failure looks the same.
"""

from __future__ import annotations

from collections.abc import Container

from tasklease.core.clock import Clock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.revocation import RevocationIndex
from tasklease.core.tokens import Claims, ClaimsError, claims_from_payload
from tasklease.rules import jws
from tasklease.rules.claims import ClaimRejected
from tasklease.rules.claims import check_claims as _check_claim_rules

__all__ = ["TokenRejected", "Validator"]


class TokenRejected(Exception):
    """A token failed validation. ``reason`` is internal; never show it to the caller."""

    def __init__(
        self, reason: str, category: str, *, dpop_proof: bool = False, dpop_nonce: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category
        # The failure was the request's DPoP proof, not the token (RFC 9449 section 7.1);
        # dpop_nonce: it lacked a current server nonce, and this is a fresh one.
        self.dpop_proof = dpop_proof
        self.dpop_nonce = dpop_nonce


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
            decoded = jws.decode(
                token,
                resolve_key=self._keyring.verify_key,
                allowed_typs=kinds,
                max_bytes=cfg.max_token_bytes,
            )
        except jws.JWSError as exc:
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
        The broker allows no leeway on ``exp``.
        """
        cfg = self._config
        if audience is not None:
            audiences: tuple[str, ...] | None = (audience,)
        else:
            audiences = None if any_audience else cfg.audience
        try:
            _check_claim_rules(
                claims,
                claims.raw,
                issuer=cfg.issuer,
                audiences=audiences,
                now=self._clock.now(),
                skew=cfg.clock_skew,
                max_lifetime=cfg.max_ttl,
                max_depth=cfg.max_delegation_depth,
            )
        except ClaimRejected as exc:
            raise TokenRejected(exc.reason, exc.category) from None
        level = self._revocations.match(claims)
        if level is not None:
            raise TokenRejected(f"token has been revoked (level {level})", "revoked")
        return claims
