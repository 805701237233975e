"""Zero-trust validation: every presented token, every request, every check.

Order (parse, then verify, then validate claims): size cap → header allow-list (``alg``
must be ``EdDSA``, known ``kid``, expected ``typ``) → signature → claim types → the claim
rules of :mod:`tasklease.rules.claims` (``iss`` → ``aud`` → ``cnf`` shape → ``exp`` with
no leeway, ``nbf``/``iat`` with the configured skew → lifetime ≤ ``max_ttl`` → ``max_exp``
→ delegation depth and chain hash → ``act``) → revocation (in memory, no I/O).

The header and signature steps are the only ones a token's exact text settles once for
all: a token that passed them (or that this process just signed, :meth:`Validator.signed`)
is remembered by the SHA-256 of its text, and at a later use only its ``typ``, its
``kid`` (still in the ring), its length and every claim rule are checked again. Tokens
with a critical scope, in their ``scope`` claim or as a ``scope`` grant, are never
remembered (docs/decisions.md 122).

One precise reason is kept inward (:attr:`TokenRejected.reason`, for the audit log and
debug logs); outward every failure looks the same.
"""

from __future__ import annotations

from collections.abc import Container
from hashlib import sha256
from typing import Any, NamedTuple

from tasklease.core.clock import Clock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.lru import LRUCache
from tasklease.core.metrics import Metrics
from tasklease.core.readahead import count
from tasklease.core.revocation import RevocationIndex
from tasklease.core.tokens import Claims, ClaimsError, claims_from_payload
from tasklease.rules import jws
from tasklease.rules.claims import ClaimRejected
from tasklease.rules.claims import check_claims as _check_claim_rules
from tasklease.rules.grants import holds_critical_scope

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


class _Known(NamedTuple):
    """A token whose header and signature are settled: its ``kid``, and either its claims
    (verified here) or its payload's bytes (signed here, parsed at its first use)."""

    kid: str
    typ: str
    claims: Claims | None
    payload: bytes


class Validator:
    def __init__(
        self,
        config: Config,
        keyring: KeyRing,
        clock: Clock,
        revocations: RevocationIndex,
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._keyring = keyring
        self._clock = clock
        self._revocations = revocations
        self._known: LRUCache[bytes, _Known] = LRUCache(config.token_cache_size)
        self._hits = metrics.token_cache.labels("hit")
        self._misses = metrics.token_cache.labels("miss")

    def signed(self, token: str, kid: str, typ: str, payload: bytes) -> None:
        """Remember a token this process has just signed under ``kid`` (``payload``, the
        JSON it signed): its first use here need not verify what was never out of hand."""
        cfg = self._config
        # A larger token is issued by reference, or refused if presented.
        if len(token) <= min(cfg.max_token_bytes, cfg.reference_token_threshold):
            self._known.put(_digest(token), _Known(kid, typ, None, payload))

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
        # A token too large is refused by decode_parts, before any hashing or cryptography.
        digest = _digest(token) if len(token) <= cfg.max_token_bytes else b""
        claims = self._settled(digest, kinds) if digest else None
        if claims is not None:
            count(self._hits.inc)  # once per request, however often a first half runs
        else:
            count(self._misses.inc)
            try:
                typ, kid, payload = jws.decode_parts(
                    token, self._keyring.verify_key, kinds, cfg.max_token_bytes
                )
            except jws.JWSError as exc:
                raise TokenRejected(exc.reason, "signature") from None
            claims = self._claims(typ, payload)
            self._remember(digest, kid, claims)
        return self.check_claims(claims, audience=audience, any_audience=any_audience)

    def _settled(self, digest: bytes, kinds: Container[str]) -> Claims | None:
        """The claims of a remembered token, or None: not remembered, of a ``typ`` this
        caller does not take, under a ``kid`` the ring no longer holds, or (read from what
        was signed) with a critical scope, which is then forgotten."""
        known = self._known.get(digest)
        if known is None or known.typ not in kinds or self._keyring.verify_key(known.kid) is None:
            return None
        if known.claims is not None:
            return known.claims
        claims = self._parse(known.typ, known.payload)
        if holds_critical_scope(claims.scope, claims.details, self._config.critical_scopes):
            self._known.discard(digest)
            return None
        self._known.put(digest, _Known(known.kid, known.typ, claims, b""))
        return claims

    def _parse(self, typ: str, payload: bytes) -> Claims:
        try:
            parsed = jws.payload_object(payload)
        except jws.JWSError as exc:
            raise TokenRejected(exc.reason, "signature") from None
        return self._claims(typ, parsed)

    @staticmethod
    def _claims(typ: str, payload: dict[str, Any]) -> Claims:
        try:
            return claims_from_payload(typ, payload)
        except ClaimsError as exc:
            raise TokenRejected(str(exc), "claims") from None

    def _remember(self, digest: bytes, kid: str, claims: Claims) -> None:
        """Keep a token's settled header and signature, unless it holds a critical scope
        (high assurance: every use verified from scratch)."""
        if not holds_critical_scope(claims.scope, claims.details, self._config.critical_scopes):
            self._known.put(digest, _Known(kid, claims.kind, claims, b""))

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


def _digest(token: str) -> bytes:
    return sha256(token.encode("utf-8", "surrogatepass")).digest()
