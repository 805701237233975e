"""SPIFFE trust bundles: a JWK Set with ``spiffe_sequence`` and ``spiffe_refresh_hint``.

The format of SPIFFE_Trust_Domain_and_Bundle.md section 4, as brokers publish their
verification keys to each other (docs/federation.md). A bundle does not name its trust
domain: the caller says which domain it expects, and the result carries that pair, so
the keys of two domains are never merged.

Parsing is strict where the format is strict and lenient where it says to skip:

* at most :data:`MAX_BUNDLE_BYTES` of UTF-8 JSON, one object, no duplicate member names
  at any depth (``json.loads`` would keep the last one silently);
* ``keys`` is required (an empty array is a valid bundle that trusts nothing);
  ``spiffe_sequence`` is optional, a 64-bit unsigned integer; ``spiffe_refresh_hint`` is
  optional, a non-negative integer number of seconds;
* each JWK is an object with a string ``kty``; a JWK with an unknown ``kty``, or a
  missing or unknown ``use``, is skipped (section 4.2); a ``jwt-svid`` JWK must have a
  ``kid``, unique in the bundle;
* the keys this package can use are ``jwt-svid`` OKP Ed25519 keys (our tokens are EdDSA,
  RFC 8037); other ``jwt-svid`` keys (EC, RSA) and every ``x509-svid`` key are valid but
  not kept. An Ed25519 JWK carrying private material (``d``) fails the whole bundle.

Standard library only (through :mod:`tasklease.rules.jws`): the verifier and the SDK
use it without the server's dependencies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tasklease.rules import jws
from tasklease.rules._codec import JWSError, json_object_strict

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_KEYS",
    "USE_JWT_SVID",
    "USE_X509_SVID",
    "BundleError",
    "TrustBundle",
    "jwt_svid_jwks",
    "parse_bundle",
    "serialize_bundle",
    "valid_trust_domain",
]

# A bundle is a few keys; a peer serving more than this is broken or hostile.
MAX_BUNDLE_BYTES = 65536
MAX_BUNDLE_KEYS = 64
USE_JWT_SVID = "jwt-svid"
USE_X509_SVID = "x509-svid"
_KNOWN_USES = frozenset((USE_JWT_SVID, USE_X509_SVID))
# The key types registered for JWK (RFC 7518 section 6.1, RFC 8037 section 2). A bundle
# holds public keys: ``oct`` (a shared secret) is nothing a bundle may carry, so skipped.
_KNOWN_KTYS = frozenset(("EC", "RSA", "OKP"))
_UINT64_MAX = 2**64 - 1
# The SPIFFE ID specification's trust domain name: lowercase letters, digits, '.', '-',
# '_' (SPIFFE-ID.md section 2.1). Also in core.spiffe, which the rules do not import.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
# What a compact JWS header's ``kid`` may be here (rules.jws): an Ed25519 key under any
# other ``kid`` could never be named by a token we verify, so it is not kept.
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class BundleError(ValueError):
    """A trust bundle was refused; ``reason`` says why (for logs, never for callers)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def valid_trust_domain(name: object) -> bool:
    """Whether ``name`` is a SPIFFE trust domain name (SPIFFE-ID.md section 2.1)."""
    return isinstance(name, str) and _TRUST_DOMAIN.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """One trust domain's bundle: its sequence, its refresh hint and its usable keys.

    ``keys`` maps each ``jwt-svid`` key's ``kid`` to its raw 32-byte Ed25519 public key.
    ``sequence`` and ``refresh_hint`` are None when the bundle does not carry them.
    ``skipped`` counts the JWKs that were valid but not kept (other key types or uses,
    unknown ones): a number for operators, not part of the bundle's identity.

    Raises:
        BundleError: an invalid trust domain, sequence, hint or key.
    """

    trust_domain: str
    sequence: int | None
    refresh_hint: int | None
    keys: Mapping[str, bytes]
    skipped: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not valid_trust_domain(self.trust_domain):
            raise BundleError("invalid trust domain name")
        if self.sequence is not None and not _is_uint(self.sequence, _UINT64_MAX):
            raise BundleError("spiffe_sequence must be a 64-bit unsigned integer")
        if self.refresh_hint is not None and not _is_uint(self.refresh_hint, _UINT64_MAX):
            raise BundleError("spiffe_refresh_hint must be a non-negative integer")
        if len(self.keys) > MAX_BUNDLE_KEYS:
            raise BundleError(f"more than {MAX_BUNDLE_KEYS} keys")
        keys: dict[str, bytes] = {}
        for kid, key in self.keys.items():
            if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
                raise BundleError("a key id must be 1-128 characters of A-Z a-z 0-9 - _")
            if not isinstance(key, bytes) or len(key) != 32:
                raise BundleError("an Ed25519 public key is 32 bytes")
            keys[kid] = key
        # A read-only copy: the bundle is a value, shared between threads.
        object.__setattr__(self, "keys", MappingProxyType(keys))


def _is_uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


def parse_bundle(data: bytes | str, trust_domain: str) -> TrustBundle:
    """Parse the bundle ``data`` published for ``trust_domain``.

    Raises:
        BundleError: ``data`` is not a valid SPIFFE bundle (the reason says what).
    """
    if not valid_trust_domain(trust_domain):
        raise BundleError("invalid trust domain name")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        document = json_object_strict(raw, "bundle")
    except JWSError as exc:
        raise BundleError(exc.reason) from None
    sequence = _optional_uint(document, "spiffe_sequence", _UINT64_MAX)
    refresh_hint = _optional_uint(document, "spiffe_refresh_hint", _UINT64_MAX)
    entries = document.get("keys")
    if type(entries) is not list:
        raise BundleError("keys must be an array")
    if len(entries) > MAX_BUNDLE_KEYS:
        raise BundleError(f"more than {MAX_BUNDLE_KEYS} keys")
    keys: dict[str, bytes] = {}
    kids: set[str] = set()
    skipped = 0
    for index, entry in enumerate(entries):
        key = _jwk(entry, index, kids)
        if key is None:
            skipped += 1
        else:
            keys[key[0]] = key[1]
    return TrustBundle(trust_domain, sequence, refresh_hint, keys, skipped)


def _optional_uint(document: dict[str, Any], name: str, maximum: int) -> int | None:
    if name not in document:
        return None
    value = document[name]
    if not _is_uint(value, maximum):
        raise BundleError(f"{name} must be an integer from 0 to {maximum}")
    return int(value)


def _jwk(entry: object, index: int, kids: set[str]) -> tuple[str, bytes] | None:
    """The ``(kid, key)`` of a usable JWK, None for one to skip; raises when invalid."""
    if type(entry) is not dict:
        raise BundleError(f"keys[{index}] is not an object")
    kty, use = entry.get("kty"), entry.get("use")
    if type(kty) is not str:
        raise BundleError(f"keys[{index}] has no kty")
    if use is not None and type(use) is not str:
        raise BundleError(f"keys[{index}].use is not a string")
    if kty not in _KNOWN_KTYS or use not in _KNOWN_USES:
        return None  # section 4.2: skip an unknown kty, and a missing or unknown use
    if use == USE_X509_SVID:
        return None  # an X.509 CA: valid in a bundle, nothing this package verifies with
    kid = entry.get("kid")
    if type(kid) is not str or not kid:
        raise BundleError(f"keys[{index}]: a jwt-svid key needs a kid")
    if kid in kids:
        raise BundleError(f"keys[{index}]: kid appears twice")
    kids.add(kid)
    if kty != "OKP" or entry.get("crv") != "Ed25519":
        return None  # EC or RSA (JWT-SVID's own algorithms), or another OKP curve
    if "d" in entry:
        raise BundleError(f"keys[{index}] carries a private key")
    alg = entry.get("alg", jws.ALGORITHM)
    x = entry.get("x")
    if type(x) is not str:
        raise BundleError(f"keys[{index}]: an OKP key needs x")
    try:
        public_key = jws.b64url_decode(x)
    except JWSError:
        raise BundleError(f"keys[{index}].x is not base64url") from None
    if len(public_key) != 32:
        raise BundleError(f"keys[{index}].x is not a 32-byte Ed25519 key")
    if alg != jws.ALGORITHM or _KID.fullmatch(kid) is None:
        return None  # the key is declared for another algorithm, or no token can name it
    return kid, public_key


def jwt_svid_jwks(data: bytes | str, trust_domain: str) -> tuple[Mapping[str, Any], ...]:
    """Every ``jwt-svid`` JWK of the bundle ``data``, of any key type, as JSON objects.

    For verifiers of JWT-SVIDs minted by a SPIFFE implementation, whose keys are EC or RSA
    (JWT-SVID.md section 3: RS, ES and PS algorithms), which :class:`TrustBundle` does not
    keep. The bundle is first checked as :func:`parse_bundle` checks it (size, duplicate
    names, ``kid`` required and unique); turning a JWK into a key, and refusing one with
    private members, is the caller's.

    Raises:
        BundleError: ``data`` is not a valid SPIFFE bundle.
    """
    parse_bundle(data, trust_domain)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        document = json_object_strict(raw, "bundle")
    except JWSError as exc:  # pragma: no cover - parse_bundle read the same bytes
        raise BundleError(exc.reason) from None
    return tuple(
        MappingProxyType(dict(entry))
        for entry in document["keys"]
        if type(entry) is dict
        and entry.get("use") == USE_JWT_SVID
        and entry.get("kty") in _KNOWN_KTYS
    )


def serialize_bundle(bundle: TrustBundle) -> bytes:
    """The bundle as compact UTF-8 JSON: ``keys`` (each ``jwt-svid``, OKP Ed25519, with
    ``kid`` and ``alg`` EdDSA), then ``spiffe_refresh_hint`` and ``spiffe_sequence`` when
    set. :func:`parse_bundle` of the result gives back an equal bundle."""
    document: dict[str, Any] = {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": jws.b64url_encode(key),
                "kid": kid,
                "use": USE_JWT_SVID,
                "alg": jws.ALGORITHM,
            }
            for kid, key in bundle.keys.items()
        ]
    }
    if bundle.refresh_hint is not None:
        document["spiffe_refresh_hint"] = bundle.refresh_hint
    if bundle.sequence is not None:
        document["spiffe_sequence"] = bundle.sequence
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
