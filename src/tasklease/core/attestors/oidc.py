"""``oidc``: any OIDC workload token (GitHub Actions, GitLab CI, a cloud's workload identity).

The token is a JWT from a configured issuer, verified against the issuer's JWKS (pinned
by configuration, or discovered from ``{issuer}/.well-known/openid-configuration``,
cached and refreshed), audience-bound to the broker, and accepted only when every claim
rule of the attestor matches (``claims``: ``{"repository": "org/repo", "ref":
"refs/heads/*"}``; equality or glob). GitHub Actions (its OIDC reference): ``iss``
``https://token.actions.githubusercontent.com``; ``aud`` defaults to the owner's URL, so
the workflow must ask for the broker's (``core.getIDToken(audience)``); ``repository_id``
and ``repository_owner_id`` survive renames: bind to them.

Settings: ``issuer`` (required), ``claims`` (rules every token must match), ``subject``
(the claim that names the workload; default ``sub``), ``facts`` (the claims carried as
facts; default every string, number and boolean claim), ``algorithms`` (default
``RS256``, ``ES256``), ``jwks`` | ``jwks_uri`` | discovery, ``ca_pem``, ``jwks_refresh``,
``jwks_max_stale``, ``max_age``.
Facts: the token's claims as configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasklease.core.attestors._jwt import ALGORITHMS, check_claims, verify_with_refresh
from tasklease.core.attestors.base import (
    DEFAULT_MAX_AGE,
    AttestationRefused,
    Attested,
    ClaimRule,
    JwksSource,
    Keys,
    SettingsError,
    VerifyContext,
    claim_rules,
    fact_names,
    jwks_source,
    seconds,
    string_facts,
    text,
)
from tasklease.rules.attest import fact_matches

__all__ = ["ATTESTOR", "OidcSettings"]

TYPE = "oidc"
DEFAULT_ALGORITHMS = ("RS256", "ES256")
# GitHub Actions adds x5t (the key's certificate thumbprint) to its header; ignored.
_HEADER_NAMES = ("alg", "kid", "typ", "x5t")


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str
    rules: tuple[ClaimRule, ...]
    subject: str
    facts: tuple[str, ...]
    algorithms: tuple[str, ...]
    source: JwksSource
    max_age: int


def _claim_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (str, int):
        return str(value)
    return None


class OidcAttestor:
    """The ``oidc`` attestor."""

    type = TYPE

    def settings(self, raw: Mapping[str, Any]) -> OidcSettings:
        issuer = text(raw, "issuer", required=True)
        algorithms = raw.get("algorithms", list(DEFAULT_ALGORITHMS))
        if (
            not isinstance(algorithms, list)
            or not algorithms
            or any(type(a) is not str or a not in ALGORITHMS for a in algorithms)
        ):
            raise SettingsError(f"algorithms must be a list among {', '.join(ALGORITHMS)}")
        return OidcSettings(
            issuer=issuer,
            rules=claim_rules(raw),
            subject=text(raw, "subject", limit=64) or "sub",
            facts=fact_names(raw, "facts"),
            algorithms=tuple(algorithms),
            source=jwks_source(raw, issuer),
            max_age=seconds(raw, "max_age", DEFAULT_MAX_AGE),
        )

    def issuer_of(self, settings: OidcSettings) -> str:
        return settings.issuer

    def source(self, settings: OidcSettings) -> JwksSource:
        return settings.source

    def verify(
        self, evidence: str, settings: OidcSettings, keys: Keys, ctx: VerifyContext
    ) -> Attested:
        token = verify_with_refresh(
            evidence, keys, algorithms=settings.algorithms, header_names=_HEADER_NAMES
        )
        claims = token.claims
        valid_until = check_claims(
            claims,
            issuer=settings.issuer,
            audience=ctx.audience,
            now=ctx.now,
            skew=ctx.skew,
            max_age=settings.max_age,
        )
        subject = _claim_text(claims, settings.subject)
        if not subject:
            raise AttestationRefused(f"claim {settings.subject} missing", "claims")
        for rule in settings.rules:
            if not fact_matches(rule.pattern, _claim_text(claims, rule.name)):
                raise AttestationRefused(f"claim rule on {rule.name} not met", "claims")
        return Attested(
            type=TYPE,
            attestor=ctx.attestor,
            issuer=settings.issuer,
            subject=subject,
            facts=string_facts(claims, settings.facts),
            valid_until=valid_until,
            replay_key=token.replay_key,
            digest=token.digest[:12],
        )


ATTESTOR = OidcAttestor()
