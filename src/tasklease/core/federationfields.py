"""What the fields of a federated domain's declaration must be (``core.federation``):
trust domain, endpoint URLs, credentials file name, static bundle, CA certificates,
durations, scopes and the scope map. Each function returns the checked value or raises
:class:`~tasklease.core.errors.InvalidRequest`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from tasklease.core.auditformat import clipped
from tasklease.core.errors import InvalidRequest
from tasklease.core.spiffe import validate_trust_domain
from tasklease.core.tlsanchor import UnusableAnchor, anchor_context
from tasklease.rules import scopes as scope_rules
from tasklease.rules.bundle import BundleError, parse_bundle

__all__ = [
    "ca_pem",
    "endpoint",
    "file_name",
    "map_text",
    "scope_map",
    "scopes",
    "seconds",
    "static_bundle",
    "trust_domain",
]

_MAX_URL = 2048
_MAX_CA_PEM = 65536
_MAX_MAP = 256


def trust_domain(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("missing required field: trust_domain")
    try:
        return validate_trust_domain(value)
    except ValueError:
        raise InvalidRequest(
            "invalid trust_domain: use lowercase a-z, 0-9, '.', '-', '_' (at most 255)"
        ) from None


def endpoint(value: object, name: str = "bundle_endpoint_url") -> str:
    """An https URL without userinfo or fragment, or "" when not given."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > _MAX_URL or not value.isprintable():
        raise InvalidRequest(f"{name} must be an https URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidRequest(f"{name} must be an https URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidRequest(
            f"{name} must be an https URL",
            hint="SPIFFE Federation https_web: the bundle is served over TLS",
        )
    if "@" in parts.netloc:
        raise InvalidRequest(f"{name} must not carry userinfo")
    if parts.fragment or value.endswith("#"):
        raise InvalidRequest(f"{name} must not carry a fragment")
    if port == 0 or any(c.isspace() for c in value):
        raise InvalidRequest(f"{name} must be an https URL")
    return value


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def file_name(value: object, name: str) -> str:
    """A plain file name (no directory), or "" when not given (the file is not read here)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or _FILE_NAME.fullmatch(value) is None:
        raise InvalidRequest(
            f"{name} must be a file name (letters, digits, '.', '-', '_'), not a path",
            hint="the file lives in the broker's <data_dir>/federation/ directory",
        )
    return value


def static_bundle(value: object, domain: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("bundle must be the SPIFFE bundle's JSON text")
    try:
        parse_bundle(value, domain)
    except BundleError as exc:
        raise InvalidRequest(f"bundle refused: {exc.reason}") from None
    return value


def ca_pem(value: object) -> str:
    """PEM CA certificates, checked as every connection made with them will use them
    (``core.tlsanchor``), or "" when not given (the system's trust store)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > _MAX_CA_PEM:
        raise InvalidRequest("ca_pem must be PEM certificates")
    try:
        anchor_context(value)
    except UnusableAnchor as exc:
        raise InvalidRequest(
            f"ca_pem must be PEM certificates: {clipped(exc.reason, 200)}"
        ) from None
    return value


def seconds(value: object, name: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    if type(value) is not int or not 1 <= value <= maximum:
        raise InvalidRequest(f"{name} must be a whole number of seconds from 1 to {maximum}")
    return value


def scopes(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_MAP:
        raise InvalidRequest(f"{name} must be a list of scopes")
    scopes: list[str] = []
    for scope in value:
        if not isinstance(scope, str) or scope_rules.parse_scope(scope) is None:
            raise InvalidRequest(f"{name}: invalid scope {clipped(str(scope), 64)!r}")
        if scope not in scopes:
            scopes.append(scope)
    return tuple(scopes)


def scope_map(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_MAP:
        raise InvalidRequest("scope_map must be a list of [foreign_pattern, local_scope] pairs")
    pairs: list[tuple[str, str]] = []
    for pair in value:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(part, str) for part in pair)
        ):
            raise InvalidRequest("scope_map must be a list of [foreign_pattern, local_scope] pairs")
        foreign, local = pair
        if scope_rules.parse_scope(foreign) is None:
            raise InvalidRequest(
                f"scope_map: invalid foreign scope pattern {clipped(foreign, 64)!r}"
            )
        if scope_rules.parse_scope(local) is None:
            raise InvalidRequest(f"scope_map: invalid local scope {clipped(local, 64)!r}")
        pairs.append((foreign, local))
    return tuple(pairs)


def map_text(mapping: Sequence[tuple[str, str]]) -> str:
    return "[" + " ".join(f"{foreign}={local}" for foreign, local in mapping) + "]"
