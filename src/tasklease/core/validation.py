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
from tasklease.core.tokens import Claims, ClaimsError, chain_hash, claims_from_payload

__all__ = ["TokenRejected", "Validator"]


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

    def validate(self, token: str, kinds: Container[str], *, audience: str | None = None) -> Claims:
        """Return the verified claims of ``token`` or raise :class:`TokenRejected`.

        ``kinds`` are the header ``typ`` values this caller accepts. ``audience``, when
        given, must be in the token's ``aud``; otherwise one of the broker's configured
        audiences must be.
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
        if not hmac.compare_digest(claims.iss.encode(), cfg.issuer.encode()):
            raise TokenRejected("issuer mismatch", "issuer")
        if audience is not None:
            if audience not in claims.aud:
                raise TokenRejected(f"audience mismatch: expected {audience}", "audience")
        elif not any(a in claims.aud for a in cfg.audience):
            raise TokenRejected("audience mismatch", "audience")
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
        level = self._revocations.match(claims)
        if level is not None:
            raise TokenRejected(f"token has been revoked (level {level})", "revoked")
        return claims
