"""The attestor plug-in interface: what an attestor takes, what it proves, how it refuses.

An attestor verifies one kind of workload evidence with keys already in hand: it does no
I/O. Where keys come from a network (an issuer's JWKS, found through its OIDC discovery
document) the broker's adapter fetches and caches them (``tasklease.attestation``) and
hands them over through :class:`Keys`; keys given by configuration (a JWKS, a SPIFFE
bundle) are read here.

Each attestor type is a module of this package exposing an object with :class:`Attestor`'s
shape: ``k8s_sat`` (Kubernetes projected service-account tokens), ``jwt_svid`` (SPIFFE
JWT-SVIDs), ``oidc`` (any OIDC workload token: GitHub Actions, GitLab CI, cloud workload
identity). ``launch_token`` is today's registration secret, verified by the registration
service against the store; it is listed for completeness and configured by no operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from tasklease.core.tlsanchor import UnusableAnchor, anchor_context
from tasklease.rules.attest import FACT_NAME, MAX_FACT_CHARS, MAX_FACTS

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_STALE",
    "DEFAULT_REFRESH",
    "MAX_SETTINGS_CHARS",
    "AttestationRefused",
    "Attested",
    "Attestor",
    "ClaimRule",
    "JwksSource",
    "Keys",
    "SettingsError",
    "VerifyContext",
    "claim_rules",
    "fact_names",
    "https_url",
    "jwks_source",
    "seconds",
    "string_facts",
    "text",
]

# An issuer's keys are fetched anew every DEFAULT_REFRESH seconds (and when evidence
# names an unknown kid, at most once per MIN_REFRESH); while the issuer is unreachable the
# last good keys are used until DEFAULT_MAX_STALE seconds after they were fetched, then
# every registration through it is refused (fail closed).
DEFAULT_REFRESH = 300
DEFAULT_MAX_STALE = 3600
# Evidence issued longer ago than this is refused (its replay row would outlive it).
DEFAULT_MAX_AGE = 86400
MAX_SETTINGS_CHARS = 65536
_MAX_SECONDS = 30 * 86400


class AttestationRefused(Exception):
    """Evidence was refused. ``reason`` is precise, for the audit log only; ``category``
    names the kind for metrics and tests: ``evidence`` (malformed), ``algorithm``,
    ``key`` (no such key), ``signature``, ``issuer``, ``audience``, ``expired``,
    ``not_yet_valid``, ``claims`` (a required claim missing or a claim rule missed),
    ``keys`` (the issuer's keys are unusable), ``unavailable`` (the keys could not be
    fetched and the cached ones are too old), ``replay``, ``policy``, ``not_configured``.
    """

    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class SettingsError(ValueError):
    """An attestor's configuration is malformed; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Attested:
    """What an attestor proved: who vouched (``issuer``), for whom (``subject``), and the
    facts it carried (flat ``name -> string``, ``rules.attest``). ``valid_until`` is when
    the evidence stops being valid (its replay row may be pruned then); ``replay_key`` names
    the evidence for the replay cache (a hash: never the evidence itself); ``digest``
    names it in the audit log (a prefix of its SHA-256)."""

    type: str
    attestor: str
    issuer: str
    subject: str
    facts: Mapping[str, str]
    valid_until: float
    replay_key: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class JwksSource:
    """Where an issuer's signing keys come from, in the order tried: a JWK Set given by
    configuration (``jwks``, pinned: never fetched), a ``jwks_uri`` given by configuration
    (pinned location), or the issuer's OIDC discovery document
    (``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must be ours exactly).
    ``ca_pem`` anchors the TLS of both fetches ("" for the system's trust store).
    ``federation`` names a federated trust domain whose last good SPIFFE bundle holds the
    keys (``core.federation``; JWT-SVIDs only)."""

    issuer: str
    jwks: str = ""
    jwks_uri: str = ""
    ca_pem: str = ""
    refresh: int = DEFAULT_REFRESH
    max_stale: int = DEFAULT_MAX_STALE
    federation: str = ""

    @property
    def fetched(self) -> bool:
        """Whether the keys come over the network (through the broker's fetcher)."""
        return not self.jwks and not self.federation


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """What verification needs besides the evidence: the attestor's name, the audience the
    evidence must name (the broker's issuer), the time and the skew on ``nbf``/``iat``."""

    attestor: str
    audience: str
    now: float
    skew: float


# keys(refresh) -> {kid: key}; refresh=True asks for a fetch now (an unknown kid: the
# issuer may have rotated), which the fetcher may decline if it fetched very recently.
Keys = Callable[[bool], Mapping[str, Any]]


class Attestor(Protocol):
    """One attestor type."""

    @property
    def type(self) -> str:
        """Its name: ``k8s_sat``, ``jwt_svid``, ``oidc``."""
        ...

    def settings(self, raw: Mapping[str, Any]) -> Any:
        """The operator's configuration (a JSON object), checked; raises SettingsError."""
        ...

    def issuer_of(self, settings: Any) -> str:
        """What evidence for this attestor names as its issuer (to choose the attestor of
        a type that evidence is for, read unverified from it)."""
        ...

    def source(self, settings: Any) -> JwksSource | None:
        """Where its keys are fetched from; None when they come with the configuration."""
        ...

    def verify(self, evidence: str, settings: Any, keys: Keys, ctx: VerifyContext) -> Attested:
        """Verify ``evidence``; raises :class:`AttestationRefused`."""
        ...


# --- checking configuration ------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def text(raw: Mapping[str, Any], name: str, *, required: bool = False, limit: int = 2048) -> str:
    """The string setting ``name`` ("" when absent and not required)."""
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise SettingsError(f"{name} is required")
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise SettingsError(f"{name} must be a string of at most {limit} characters")
    return value


def seconds(raw: Mapping[str, Any], name: str, default: int) -> int:
    """A duration setting in seconds, from 1 to 30 days."""
    value = raw.get(name, default)
    if type(value) is not int or not 0 < value <= _MAX_SECONDS:
        raise SettingsError(f"{name} must be a number of seconds from 1 to {_MAX_SECONDS}")
    return value


def https_url(value: str, name: str) -> str:
    """``value`` if it is an ``https`` URL with a host, without userinfo or fragment."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise SettingsError(f"{name} is not a URL") from None
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or parts.fragment:
        raise SettingsError(f"{name} must be an https URL without userinfo or fragment")
    return value


def fact_names(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = raw.get(name, [])
    if not isinstance(value, list) or len(value) > 64:
        raise SettingsError(f"{name} must be a list of claim names")
    for item in value:
        if not isinstance(item, str) or _NAME.fullmatch(item) is None:
            raise SettingsError(f"{name} must be a list of claim names")
    return tuple(value)


def jwks_source(raw: Mapping[str, Any], issuer: str) -> JwksSource:
    """The key source settings shared by JWT attestors: ``jwks`` (a JWK Set's JSON text,
    pinned) or ``jwks_uri`` or neither (discovery from ``issuer``, which must then be an
    https URL); ``ca_pem``, ``jwks_refresh``, ``jwks_max_stale``."""
    jwks = text(raw, "jwks", limit=MAX_SETTINGS_CHARS)
    jwks_uri = text(raw, "jwks_uri")
    if jwks and jwks_uri:
        raise SettingsError("give jwks or jwks_uri, not both")
    if jwks_uri:
        https_url(jwks_uri, "jwks_uri")
    elif not jwks:
        https_url(issuer, "issuer (keys are discovered from it)")
    refresh = seconds(raw, "jwks_refresh", DEFAULT_REFRESH)
    max_stale = seconds(raw, "jwks_max_stale", DEFAULT_MAX_STALE)
    if max_stale < refresh:
        raise SettingsError("jwks_max_stale must be at least jwks_refresh")
    ca_pem = text(raw, "ca_pem", limit=MAX_SETTINGS_CHARS)
    if ca_pem:
        try:
            anchor_context(ca_pem)  # checked as the key fetcher will use it
        except UnusableAnchor as exc:
            raise SettingsError(f"ca_pem must be PEM CA certificates: {exc.reason}") from None
    return JwksSource(
        issuer=issuer,
        jwks=jwks,
        jwks_uri=jwks_uri,
        ca_pem=ca_pem,
        refresh=refresh,
        max_stale=max_stale,
    )


def string_facts(claims: Mapping[str, Any], names: tuple[str, ...] = ()) -> dict[str, str]:
    """The claims that can be facts (``rules.attest``): strings, integers and booleans of
    a fact's name and size, at most 32 (``names`` first when given, else every one but
    the registered claims), as strings."""
    skip = frozenset(("iss", "aud", "exp", "nbf", "iat", "jti", "sub"))
    order = names or tuple(sorted(claims))
    out: dict[str, str] = {}
    for name in order:
        if name in skip or FACT_NAME.fullmatch(name) is None or name not in claims:
            continue
        value = claims[name]
        if type(value) is bool:
            shown = "true" if value else "false"
        elif type(value) in (str, int):
            shown = str(value)
        else:
            continue
        if 0 < len(shown) <= MAX_FACT_CHARS and shown.isprintable():
            out[name] = shown
        if len(out) >= MAX_FACTS:
            break
    return out


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """One claim rule of an attestor's configuration: claim ``name`` must match
    ``pattern`` (equality or glob, ``rules.attest.fact_matches``)."""

    name: str
    pattern: str


def claim_rules(raw: Mapping[str, Any], name: str = "claims") -> tuple[ClaimRule, ...]:
    """``{"claim": "pattern", ...}``: every claim named must be present and match."""
    value = raw.get(name, {})
    if not isinstance(value, dict) or len(value) > 32:
        raise SettingsError(f"{name} must be an object of claim name to pattern")
    rules = []
    for claim, pattern in value.items():
        if not isinstance(claim, str) or _NAME.fullmatch(claim) is None:
            raise SettingsError(f"{name} has a malformed claim name")
        if not isinstance(pattern, str) or not 0 < len(pattern) <= 256:
            raise SettingsError(f"{name}.{claim} must be a pattern of 1 to 256 characters")
        rules.append(ClaimRule(claim, pattern))
    return tuple(rules)
