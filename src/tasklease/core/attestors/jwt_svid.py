"""``jwt_svid``: a SPIFFE JWT-SVID, verified against its trust domain's bundle.

JWT-SVID.md: JWS Compact; header ``alg`` one of RS/ES/PS 256/384/512 (``EdDSA`` and
anything else refused), ``kid`` (required here, as SPIRE's validator does: every
``jwt-svid`` key of a bundle has one), ``typ`` ``JWT`` or ``JOSE`` when present, and no
other header. ``sub`` is the SPIFFE ID, in the configured trust domain; ``aud`` must name
the broker; ``exp`` required (no leeway here). ``iss`` is not checked: a JWT-SVID's
authority is its trust domain's bundle.

Keys: the ``jwt-svid`` JWKs of a SPIFFE bundle (``rules.bundle``), given by configuration
(``bundle``, the bundle's JSON text) or the last good bundle of a federated trust domain
(``federation: true``; ``core.federation`` keeps it fresh and refuses one older than its
``max_bundle_age``). Bundles are never merged: only the configured domain's keys verify.

Settings: ``trust_domain`` (required), ``bundle`` or ``federation``, ``path`` (a glob the
SPIFFE ID's path must match; default any), ``max_age``.
Facts: ``spiffe_id``, ``trust_domain``, ``path``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.core.attestors._jwt import check_claims, verify_with_refresh
from tasklease.core.attestors.base import (
    DEFAULT_MAX_AGE,
    MAX_SETTINGS_CHARS,
    AttestationRefused,
    Attested,
    JwksSource,
    Keys,
    SettingsError,
    VerifyContext,
    seconds,
    text,
)
from tasklease.core.spiffe import is_spiffe_id, validate_trust_domain
from tasklease.rules.attest import fact_matches
from tasklease.rules.bundle import BundleError, jwt_svid_jwks

__all__ = ["ATTESTOR", "SvidSettings", "parse_spiffe_id"]

TYPE = "jwt_svid"
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")


def parse_spiffe_id(value: object) -> tuple[str, str] | None:
    """``(trust_domain, path)`` of a SPIFFE ID (SPIFFE-ID.md section 2), None if it is not
    one as :func:`tasklease.core.spiffe.is_spiffe_id` reads it (the one rule of what a
    SPIFFE ID is, which revocation targets follow too): a lowercase trust domain,
    non-empty segments of ``[A-Za-z0-9._-]`` other than ``.`` and ``..``, no trailing
    ``/``, query, fragment, port or userinfo, at most 2048 bytes."""
    if not isinstance(value, str) or not is_spiffe_id(value):
        return None
    domain, slash, path = value[len("spiffe://") :].partition("/")
    return domain, "/" + path if slash else ""


@dataclass(frozen=True, slots=True)
class SvidSettings:
    trust_domain: str
    source: JwksSource
    path: str
    max_age: int


class JwtSvidAttestor:
    """The ``jwt_svid`` attestor."""

    type = TYPE

    def settings(self, raw: Mapping[str, Any]) -> SvidSettings:
        domain = text(raw, "trust_domain", required=True, limit=255)
        try:
            validate_trust_domain(domain)
        except ValueError:  # validate_trust_domain's refusal
            raise SettingsError("trust_domain is not a SPIFFE trust domain name") from None
        bundle = text(raw, "bundle", limit=MAX_SETTINGS_CHARS)
        federation = raw.get("federation", False)
        if not isinstance(federation, bool) or federation == bool(bundle):
            raise SettingsError("give exactly one of bundle and federation: true")
        jwks = ""
        if bundle:
            try:
                entries = jwt_svid_jwks(bundle, domain)
            except BundleError as exc:
                raise SettingsError(f"bundle refused: {exc.reason}") from None
            jwks = json.dumps({"keys": [dict(e) for e in entries]}, separators=(",", ":"))
        issuer = f"spiffe://{domain}"
        return SvidSettings(
            trust_domain=domain,
            source=JwksSource(issuer=issuer, jwks=jwks, federation=domain if federation else ""),
            path=text(raw, "path", limit=256),
            max_age=seconds(raw, "max_age", DEFAULT_MAX_AGE),
        )

    def issuer_of(self, settings: SvidSettings) -> str:
        return f"spiffe://{settings.trust_domain}"

    def source(self, settings: SvidSettings) -> JwksSource:
        return settings.source

    def verify(
        self, evidence: str, settings: SvidSettings, keys: Keys, ctx: VerifyContext
    ) -> Attested:
        token = verify_with_refresh(evidence, keys, algorithms=ALGORITHMS, typs=("JWT", "JOSE"))
        claims = token.claims
        valid_until = check_claims(
            claims,
            issuer=None,
            audience=ctx.audience,
            now=ctx.now,
            skew=ctx.skew,
            max_age=settings.max_age,
        )
        spiffe_id = claims.get("sub")
        parsed = parse_spiffe_id(spiffe_id)
        if parsed is None or not isinstance(spiffe_id, str):
            raise AttestationRefused("sub is not a SPIFFE ID", "claims")
        domain, path = parsed
        if domain != settings.trust_domain:
            raise AttestationRefused("SPIFFE ID of another trust domain", "issuer")
        if settings.path and not fact_matches(settings.path, path):
            raise AttestationRefused("SPIFFE ID path outside the attestor's", "claims")
        facts = {"spiffe_id": spiffe_id, "trust_domain": domain}
        if path:
            facts["path"] = path
        return Attested(
            type=TYPE,
            attestor=ctx.attestor,
            issuer=f"spiffe://{domain}",
            subject=spiffe_id,
            facts=facts,
            valid_until=valid_until,
            replay_key=token.replay_key,
            digest=token.digest[:12],
        )


ATTESTOR = JwtSvidAttestor()
