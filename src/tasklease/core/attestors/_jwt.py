"""Third-party JWTs (RFC 7519) verified strictly: the evidence of workload attestors.

Hazmat for :mod:`tasklease.core.attestors`: parse, then verify, then validate the claims,
as separate steps (RFC 8725):

* compact JWS only, ASCII, at most :data:`MAX_EVIDENCE_BYTES`; canonical unpadded
  base64url; the header and payload are JSON objects without duplicate names;
* the header holds ``alg`` and ``kid`` (required: the key is chosen by it, never tried in
  turn) and only the other names the caller allows (``typ``; ``x5t`` for issuers that add
  it); ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit``... are refused, never followed;
* ``alg`` must be in the caller's allow-list (never ``none``, never ``HS*``: there is no
  shared secret) *and* fit the key the ``kid`` names: RSA keys (2048 bits or more) verify
  ``RS*``/``PS*``, an EC key of curve P-256/P-384/P-521 only ``ES256``/``ES384``/
  ``ES512``; a JWK's own ``alg``, when it has one, must be the header's. A token signed
  with an RSA key's bytes as an HMAC secret, or claiming another curve, fails here;
* a JWK of type ``oct``, with private members, or whose ``use`` is not a signature use, is
  never a key;
* ``exp`` is required and the token is dead at it (no leeway); ``nbf`` and ``iat`` may be
  ``skew`` seconds in the future (``rules.claims``); ``iss`` must equal the configured
  issuer; ``aud`` (a string or an array) must contain the broker's audience.

Every refusal raises :class:`~tasklease.core.attestors.AttestationRefused` with a precise
reason for the audit log; callers show one generic failure outward.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tasklease.core.attestors.base import AttestationRefused, Keys
from tasklease.core.auditformat import clipped
from tasklease.rules.claims import finite_number
from tasklease.rules.jws import JWSError, b64url_decode

__all__ = [
    "ALGORITHMS",
    "MAX_EVIDENCE_BYTES",
    "JwtEvidence",
    "VerifyKey",
    "check_claims",
    "evidence_hash",
    "key_from_jwk",
    "keys_from_jwks",
    "parse_jwks",
    "unverified_claims",
    "verify_jwt",
    "verify_with_refresh",
]

MAX_EVIDENCE_BYTES = 16384
MAX_JWKS_BYTES = 262144
MAX_JWKS_KEYS = 64
_MIN_RSA_BITS = 2048

# alg -> (key type, hash, RSA padding or EC curve name)
_RSA_PKCS1 = "pkcs1"
_RSA_PSS = "pss"
ALGORITHMS: Mapping[str, tuple[str, type[hashes.HashAlgorithm], str]] = {
    "RS256": ("RSA", hashes.SHA256, _RSA_PKCS1),
    "RS384": ("RSA", hashes.SHA384, _RSA_PKCS1),
    "RS512": ("RSA", hashes.SHA512, _RSA_PKCS1),
    "PS256": ("RSA", hashes.SHA256, _RSA_PSS),
    "PS384": ("RSA", hashes.SHA384, _RSA_PSS),
    "PS512": ("RSA", hashes.SHA512, _RSA_PSS),
    "ES256": ("EC", hashes.SHA256, "P-256"),
    "ES384": ("EC", hashes.SHA384, "P-384"),
    "ES512": ("EC", hashes.SHA512, "P-521"),
}
_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_PRIVATE_MEMBERS = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
_SIGNATURE_USES = frozenset(("sig", "jwt-svid"))


class _DuplicateName(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _DuplicateName(name)
        out[name] = value
    return out


def _no_constant(_text: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateName:
        raise AttestationRefused(f"{what} repeats a member name", "evidence") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AttestationRefused(f"{what} is not JSON", "evidence") from None
    if type(value) is not dict:
        raise AttestationRefused(f"{what} is not a JSON object", "evidence")
    return value


def _b64(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except JWSError:
        raise AttestationRefused(f"{what} is not canonical base64url", "evidence") from None


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One public key of an issuer: its ``kid``, type, the algorithms it may verify."""

    kid: str
    kty: str
    algorithms: frozenset[str]
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _int_member(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if type(value) is not str or not value:
        raise ValueError(f"{name} missing")
    raw = b64url_decode(value)
    if not raw:
        raise ValueError(f"{name} empty")
    return int.from_bytes(raw, "big")


def key_from_jwk(jwk: Mapping[str, Any]) -> VerifyKey | None:
    """The verification key a public JWK (RFC 7517) stands for; None for a JWK that is
    not one: another type (``oct``, ``OKP``), private members, a use other than a
    signature's, an operation list without ``verify``, no ``kid``, a weak or malformed
    key. Never raises."""
    try:
        return _key_from_jwk(jwk)
    except (ValueError, TypeError, JWSError):
        return None


def _key_from_jwk(jwk: Mapping[str, Any]) -> VerifyKey | None:
    kty, kid = jwk.get("kty"), jwk.get("kid")
    if type(kid) is not str or not 0 < len(kid) <= 256 or _PRIVATE_MEMBERS & set(jwk):
        return None
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use not in _SIGNATURE_USES:
        return None
    if ops is not None and (type(ops) is not list or "verify" not in ops):
        return None
    declared = jwk.get("alg")
    if declared is not None and declared not in ALGORITHMS:
        return None
    if kty == "RSA":
        n, e = _int_member(jwk, "n"), _int_member(jwk, "e")
        if n.bit_length() < _MIN_RSA_BITS or e < 3 or e % 2 == 0:
            return None
        rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
        algs = frozenset(a for a, spec in ALGORITHMS.items() if spec[0] == "RSA")
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = rsa_key
    elif kty == "EC":
        crv = jwk.get("crv")
        if type(crv) is not str or crv not in _CURVES:
            return None
        curve, size = _CURVES[crv]
        x, y = b64url_decode(str(jwk.get("x", ""))), b64url_decode(str(jwk.get("y", "")))
        if len(x) != size or len(y) != size:
            return None
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        key = numbers.public_key()  # raises ValueError for a point not on the curve
        algs = frozenset(a for a, spec in ALGORITHMS.items() if spec[2] == crv)
    else:
        return None
    if declared is not None:
        if declared not in algs:
            return None
        algs = frozenset((declared,))
    return VerifyKey(kid, kty, algs, key)


def parse_jwks(data: bytes | str) -> tuple[Mapping[str, Any], ...]:
    """The ``keys`` of a JWK Set document (RFC 7517 section 5), as JSON objects.

    Raises:
        AttestationRefused: not a JSON object with a ``keys`` array of objects, too large,
            or more than :data:`MAX_JWKS_KEYS` keys.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_JWKS_BYTES:
        raise AttestationRefused("JWK Set too large", "keys")
    try:
        document = _json_object(raw, "JWK Set")
    except AttestationRefused as exc:
        raise AttestationRefused(exc.reason, "keys") from None
    entries = document.get("keys")
    if type(entries) is not list or len(entries) > MAX_JWKS_KEYS:
        raise AttestationRefused("JWK Set has no keys array, or too many keys", "keys")
    if any(type(entry) is not dict for entry in entries):
        raise AttestationRefused("JWK Set holds a key that is not an object", "keys")
    return tuple(entries)


def keys_from_jwks(jwks: Sequence[Mapping[str, Any]]) -> dict[str, VerifyKey]:
    """The usable keys of a JWK Set's entries, by ``kid`` (the first of a repeated ``kid``
    is kept, later ones dropped: a set cannot name two keys one way)."""
    keys: dict[str, VerifyKey] = {}
    repeated: set[str] = set()
    for jwk in jwks:
        key = key_from_jwk(jwk)
        if key is None:
            continue
        if key.kid in keys:
            repeated.add(key.kid)
            continue
        keys[key.kid] = key
    for kid in repeated:
        del keys[kid]  # ambiguous: neither is trusted
    return keys


@dataclass(frozen=True, slots=True)
class JwtEvidence:
    """A verified JWT: its header and claims, the SHA-256 of the token (hex: its name in
    the audit log), and the SHA-256 of what its issuer signed (``header.payload``)."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    digest: str
    signed: str = ""

    @property
    def replay_key(self) -> str:
        """Its name in the replay cache: the ``jti`` its issuer gave it (with that
        issuer), else the hash of what the issuer signed. Not the whole token: an ECDSA
        signature has a second valid encoding (``s`` or ``n - s``), so the same evidence
        would come twice under two names. Not the attestor: one piece of evidence
        registers once, whichever attestor trusting its issuer is named."""
        jti, iss = self.claims.get("jti"), self.claims.get("iss")
        if isinstance(jti, str) and jti:
            unique = f"jti\0{iss if isinstance(iss, str) else ''}\0{jti}"
        else:
            unique = f"signed\0{self.signed}"
        return hashlib.sha256(f"jwt\0{unique}".encode()).hexdigest()


def evidence_hash(evidence: str) -> str:
    """SHA-256 (hex) of evidence as presented: how it is named in audit and replay rows."""
    return hashlib.sha256(evidence.encode("utf-8", "replace")).hexdigest()


def unverified_claims(token: str) -> Mapping[str, Any]:
    """The payload of a compact JWS, unverified: only to choose which attestor verifies
    it (by its ``iss``), never to decide anything. Raises :class:`AttestationRefused`."""
    parts = _split(token)
    return _json_object(_b64(parts[1], "payload"), "payload")


def _split(token: object) -> list[str]:
    if type(token) is not str or not token:
        raise AttestationRefused("evidence is not a string", "evidence")
    if len(token) > MAX_EVIDENCE_BYTES:
        raise AttestationRefused("evidence larger than allowed", "evidence")
    # A compact JWS is ASCII (base64url and dots): its signing input is encoded as such,
    # and its size is counted in characters, which are then bytes.
    if not token.isascii():
        raise AttestationRefused("evidence is not ASCII", "evidence")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise AttestationRefused("evidence is not a compact JWS", "evidence")
    return parts


def verify_jwt(
    token: str,
    keys: Mapping[str, VerifyKey],
    *,
    algorithms: Collection[str],
    header_names: Collection[str] = ("alg", "kid", "typ"),
    typs: Collection[str] = ("JWT",),
) -> JwtEvidence:
    """Parse ``token`` and verify its signature with the key its ``kid`` names.

    ``algorithms``: the attestor's allow-list (a subset of :data:`ALGORITHMS`);
    ``header_names``: every header name allowed; ``typs``: the accepted ``typ`` values,
    compared case-insensitively (RFC 7515 section 4.1.9), when the header has one.
    Claims are not checked: :func:`check_claims` does that next.
    """
    parts = _split(token)
    header = _json_object(_b64(parts[0], "header"), "header")
    if set(header) - set(header_names):
        extra = sorted(set(header) - set(header_names))[0]
        raise AttestationRefused(f"header parameter {clipped(extra, 32)!r} not allowed", "evidence")
    alg, kid = header.get("alg"), header.get("kid")
    if type(alg) is not str or alg not in algorithms or alg not in ALGORITHMS:
        shown = clipped(alg, 16) if type(alg) is str else "?"
        raise AttestationRefused(f"algorithm {shown!r} not allowed", "algorithm")
    typ = header.get("typ")
    if typ is not None and (type(typ) is not str or typ.lower() not in {t.lower() for t in typs}):
        raise AttestationRefused("typ not allowed", "evidence")
    if type(kid) is not str or not kid:
        raise AttestationRefused("header has no kid", "key")
    key = keys.get(kid)
    if key is None:
        raise AttestationRefused(f"kid {clipped(kid, 64)!r} not among the issuer's keys", "key")
    if alg not in key.algorithms:
        raise AttestationRefused(
            f"algorithm {alg} does not fit key {clipped(kid, 64)!r}", "algorithm"
        )
    signature = _b64(parts[2], "signature")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    _kty, digest, mode = ALGORITHMS[alg]
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            if len(signature) != (key.key.key_size + 7) // 8:
                raise InvalidSignature
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if mode == _RSA_PKCS1
                else padding.PSS(mgf=padding.MGF1(digest()), salt_length=digest().digest_size)
            )
            key.key.verify(signature, signed, pad, digest())
        else:
            size = _CURVES[mode][1]
            if len(signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest()))
    except InvalidSignature:
        raise AttestationRefused("signature does not verify", "signature") from None
    claims = _json_object(_b64(parts[1], "payload"), "payload")
    return JwtEvidence(header, claims, evidence_hash(token), hashlib.sha256(signed).hexdigest())


def _numeric(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value: Any = claims.get(name)
    if value is None and not required:
        return None
    number = finite_number(value)
    if number is None:
        raise AttestationRefused(f"claim {name} missing or not a number", "evidence")
    return number


def verify_with_refresh(
    token: str,
    keys: Keys,
    *,
    algorithms: Collection[str],
    header_names: Collection[str] = ("alg", "kid", "typ"),
    typs: Collection[str] = ("JWT",),
) -> JwtEvidence:
    """:func:`verify_jwt` with the issuer's keys; when the ``kid`` is unknown, once more
    with keys fetched anew (the issuer may have rotated; the fetcher limits how often)."""
    try:
        return verify_jwt(
            token, keys(False), algorithms=algorithms, header_names=header_names, typs=typs
        )
    except AttestationRefused as exc:
        if exc.category != "key":
            raise
    return verify_jwt(
        token, keys(True), algorithms=algorithms, header_names=header_names, typs=typs
    )


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str | None,
    audience: str,
    now: float,
    skew: float,
    max_age: float,
) -> float:
    """The registered claims of verified evidence; returns until when it is valid.

    ``exp`` required, dead at it; ``nbf``/``iat`` at most ``skew`` in the future; ``iss``
    equal to ``issuer`` (not checked when None: a JWT-SVID's issuer is its trust
    domain); ``aud`` containing ``audience``. Evidence issued more than
    ``max_age`` seconds ago, or (without ``iat``) valid for longer than that from now, is
    refused: a replay row lives only that long. The time returned is ``exp``, or sooner
    ``iat + max_age``.
    """
    iss = claims.get("iss")
    if issuer is not None and (
        type(iss) is not str or not hmac.compare_digest(iss.encode(), issuer.encode())
    ):
        raise AttestationRefused("issuer mismatch", "issuer")
    aud = claims.get("aud")
    audiences = [aud] if type(aud) is str else aud
    if (
        type(audiences) is not list
        or not audiences
        or any(type(a) is not str for a in audiences)
        or audience not in audiences
    ):
        raise AttestationRefused("audience mismatch", "audience")
    exp = _numeric(claims, "exp", True)
    nbf = _numeric(claims, "nbf", False)
    iat = _numeric(claims, "iat", False)
    if exp is None or now >= exp:
        raise AttestationRefused("evidence expired", "expired")
    if nbf is not None and now + skew < nbf:
        raise AttestationRefused("evidence not yet valid", "not_yet_valid")
    if iat is not None and now + skew < iat:
        raise AttestationRefused("evidence issued in the future", "not_yet_valid")
    if iat is not None:
        if now - iat > max_age:
            raise AttestationRefused("evidence older than the attestor's max_age", "expired")
        return min(exp, iat + max_age)
    if exp - now > max_age:
        raise AttestationRefused("evidence valid longer than the attestor's max_age", "expired")
    return exp
