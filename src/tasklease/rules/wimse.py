"""WIMSE workload credentials: the Workload Identity Token and the Workload Proof Token.

draft-ietf-wimse-workload-creds-02 section 4.1 and draft-ietf-wimse-wpt-02 section 2.

* The **WIT** (``typ: wit+jwt``) is the broker's statement that a workload (``sub``, the
  agent's SPIFFE ID) holds a key (``cnf.jwk``, with its ``alg``). The broker signs it with
  its token key (header ``alg``, ``typ``, ``kid``, as every token of ours); it is sent in
  the ``Workload-Identity-Token`` header and is never a bearer token.
* The **WPT** (``typ: wpt+jwt``) is signed by the workload with that key for one HTTP
  request, sent in the ``Workload-Proof-Token`` header: ``aud`` is the request's target
  URI (without query and fragment), ``exp`` a short time ahead, ``jti`` unique, ``wth``
  the hash of the WIT, and ``ath``/``tth``/``oth`` the hashes of the access token,
  transaction token and other tokens the request carries (each mandatory when that token
  is sent). Its ``alg`` must be the WIT's ``cnf.jwk.alg``.

:func:`verify_wit` and :func:`verify_wpt` apply the recipient's checks in the drafts'
order; every failure raises :class:`WorkloadProofError`, whose ``reason`` is for logs
only. Hashes are base64url SHA-256 of the token's ASCII text. Pure functions (time comes in
as ``now``); the WPT's ``jti`` is remembered in a :class:`~tasklease.rules.binding.ProofLedger`
until its ``exp``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from tasklease.rules import jws
from tasklease.rules._codec import json_object
from tasklease.rules.binding import BindingError, ProofLedger, normalize_htu, remember_proof
from tasklease.rules.claims import is_expired

__all__ = [
    "WIT_HEADER",
    "WIT_TYPE",
    "WPT_HEADER",
    "WPT_MAX_TTL",
    "WPT_TYPE",
    "WorkloadIdentity",
    "WorkloadProofError",
    "make_wpt",
    "token_hash",
    "verify_wit",
    "verify_wpt",
    "wit_claims",
]

WIT_TYPE = "wit+jwt"
WPT_TYPE = "wpt+jwt"
WIT_HEADER = "Workload-Identity-Token"
WPT_HEADER = "Workload-Proof-Token"
WPT_MAX_TTL = 300
"""The longest a WPT may live: "WPT lifetimes MUST be short" (minutes or seconds); one
that expires later than this is refused as "unreasonably far in the future"."""

_ALG = jws.ALGORITHM  # EdDSA: the only key type agents register (Ed25519)
_WPT_HEADER_PARAMS = frozenset(("alg", "typ", "kid"))
_MAX_JTI_CHARS = 256


class WorkloadProofError(Exception):
    """A WIT or WPT failed a check; ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_hash(token: str) -> str:
    """base64url(SHA-256(ASCII ``token``)): ``wth``, ``ath``, ``tth`` and ``oth`` values."""
    return jws.b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """A verified WIT: the workload ``sub`` and the Ed25519 key (raw) it must prove."""

    sub: str
    iss: str
    exp: int
    jti: str
    public_key: bytes
    claims: Mapping[str, Any]


def wit_claims(
    *, issuer: str, subject: str, public_key: bytes, iat: int, exp: int, jti: str
) -> dict[str, Any]:
    """The claims of a WIT for ``subject`` holding the Ed25519 ``public_key``.

    ``cnf.jwk`` is the public OKP key with its ``alg`` (workload-creds section 4.1: the
    proof MUST be made with that algorithm).
    """
    return {
        "iss": issuer,
        "sub": subject,
        "iat": iat,
        "exp": exp,
        "jti": jti,
        "cnf": {
            "jwk": {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": jws.b64url_encode(public_key),
                "alg": _ALG,
            }
        },
    }


def verify_wit(
    wit: str,
    *,
    resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
    issuer: str,
    now: float,
) -> WorkloadIdentity:
    """The identity a WIT states, after the recipient's checks.

    The broker's signature (its JWKS, explicit ``typ: wit+jwt``, RFC 8725 section 3.11),
    ``iss``, ``exp`` (dead at ``exp``), ``sub``, and ``cnf.jwk``: an Ed25519 OKP key with
    ``alg`` ``EdDSA``, public members only.

    Raises:
        WorkloadProofError: any check failed.
    """
    try:
        _, _, claims = jws.decode_parts(wit, resolve_key, (WIT_TYPE,))
    except jws.JWSError as exc:
        raise WorkloadProofError(f"WIT refused: {exc.reason}") from None
    if claims.get("iss") != issuer:
        raise WorkloadProofError("WIT issuer mismatch")
    exp, sub, jti = claims.get("exp"), claims.get("sub"), claims.get("jti", "")
    if type(exp) is not int or is_expired(exp, now):
        raise WorkloadProofError("WIT expired or without exp")
    if type(sub) is not str or not sub:
        raise WorkloadProofError("WIT without sub")
    if type(jti) is not str:
        raise WorkloadProofError("WIT jti is not a string")
    cnf = claims.get("cnf")
    jwk = cnf.get("jwk") if type(cnf) is dict else None
    if (
        type(jwk) is not dict
        or set(jwk) != {"kty", "crv", "x", "alg"}
        or jwk["kty"] != "OKP"
        or jwk["crv"] != "Ed25519"
        or jwk["alg"] != _ALG
        or type(jwk["x"]) is not str
    ):
        raise WorkloadProofError("WIT cnf.jwk is not an Ed25519 key for EdDSA")
    try:
        public_key = jws.b64url_decode(jwk["x"])
    except jws.JWSError:
        raise WorkloadProofError("WIT cnf.jwk x is not base64url") from None
    if len(public_key) != 32:
        raise WorkloadProofError("WIT cnf.jwk x length")
    return WorkloadIdentity(sub, claims["iss"], exp, jti, public_key, claims)


def make_wpt(
    key: nacl.signing.SigningKey,
    *,
    wit: str,
    target_uri: str,
    now: float,
    ttl: int = 30,
    access_token: str | None = None,
    txn_token: str | None = None,
    other_tokens: Mapping[str, str] | None = None,
    jti: str | None = None,
) -> str:
    """A WPT for one request to ``target_uri``, signed with the workload's key.

    Header ``{"alg": "EdDSA", "typ": "wpt+jwt"}``; claims ``aud`` (the target URI without
    query and fragment), ``exp`` (``ttl`` seconds on), ``jti`` (128 random bits),
    ``wth`` and, for each token the request also carries, ``ath`` (the access token),
    ``tth`` (a transaction token) or ``oth`` (other tokens by their lowercase header name).

    Raises:
        ValueError: ``ttl`` outside 1 to :data:`WPT_MAX_TTL`, or ``target_uri`` is not an
            absolute http(s) URI.
    """
    if not 1 <= ttl <= WPT_MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {WPT_MAX_TTL} seconds")
    audience = normalize_htu(target_uri)
    if audience is None:
        raise ValueError("target_uri must be an absolute http(s) URI")
    claims: dict[str, Any] = {
        "aud": audience,
        "exp": int(now) + ttl,
        "jti": jti or jws.b64url_encode(secrets.token_bytes(16)),
        "wth": token_hash(wit),
    }
    if access_token is not None:
        claims["ath"] = token_hash(access_token)
    if txn_token is not None:
        claims["tth"] = token_hash(txn_token)
    if other_tokens:
        claims["oth"] = {name.lower(): token_hash(v.strip()) for name, v in other_tokens.items()}
    header = json.dumps({"alg": _ALG, "typ": WPT_TYPE}, separators=(",", ":")).encode()
    body = json.dumps(claims, separators=(",", ":")).encode()
    signing_input = jws.b64url_encode(header) + "." + jws.b64url_encode(body)
    signature = jws.sign_detached(signing_input.encode("ascii"), key)
    return signing_input + "." + jws.b64url_encode(signature)


def verify_wpt(
    wpt: str,
    *,
    identity: WorkloadIdentity,
    wit: str,
    target_uri: str,
    now: float,
    replay: ProofLedger,
    access_token: str | None = None,
    txn_token: str | None = None,
    other_tokens: Mapping[str, str] | None = None,
    audiences: Collection[str] = (),
) -> dict[str, Any]:
    """The claims of a WPT that proves ``identity`` for this request.

    In the order of draft-ietf-wimse-wpt-02 section 2 (the WIT is :func:`verify_wit`'s):
    one well-formed JWS; ``alg`` equal to the WIT's ``cnf.jwk.alg``; the signature by the
    WIT's key; ``typ`` ``wpt+jwt`` (as a media type); ``aud`` the request's target URI
    (query and fragment ignored; or one of ``audiences``, a deployment's aliases);
    ``exp`` present, not passed and at most :data:`WPT_MAX_TTL` ahead; ``wth`` the WIT's
    hash; ``ath``, ``tth`` and ``oth`` matching the tokens the request carries (each
    required when that token is sent, and a hash of a token that is not sent refused; an
    ``oth`` entry for a header not given is not understood, hence refused); then the
    ``jti`` is recorded in ``replay`` until ``exp`` (a second use is refused), counted
    against the WIT key's quota when ``replay`` keeps quotas
    (:class:`~tasklease.rules.binding.QuotaProofLedger`: one over it is refused).

    Raises:
        WorkloadProofError: any check failed.
    """
    try:
        header_seg, payload_seg, signature_seg = wpt.split(".")
        header = json_object(jws.b64url_decode(header_seg), "header")
    except (ValueError, AttributeError):
        raise WorkloadProofError("WPT is not one compact JWS") from None
    except jws.JWSError as exc:
        raise WorkloadProofError(f"WPT header refused: {exc.reason}") from None
    if not _WPT_HEADER_PARAMS.issuperset(header):
        raise WorkloadProofError("WPT header has parameters other than alg, typ and kid")
    if header.get("alg") != _ALG:
        raise WorkloadProofError("WPT alg differs from the WIT's cnf.jwk alg")
    try:
        signature = jws.b64url_decode(signature_seg)
        key = nacl.signing.VerifyKey(identity.public_key)
    except (jws.JWSError, nacl.exceptions.CryptoError, TypeError, ValueError):
        raise WorkloadProofError("WPT signature malformed") from None
    signing_input = f"{header_seg}.{payload_seg}".encode("ascii", "replace")
    if not jws.verify_detached(signing_input, signature, key):
        raise WorkloadProofError("WPT signature does not verify with the WIT's key")
    typ = header.get("typ")
    if type(typ) is not str or jws.media_type(typ) != WPT_TYPE:
        raise WorkloadProofError("WPT typ is not wpt+jwt")
    try:
        claims = json_object(jws.b64url_decode(payload_seg), "payload")
    except jws.JWSError as exc:
        raise WorkloadProofError(f"WPT payload refused: {exc.reason}") from None
    aud = claims.get("aud")
    wanted = normalize_htu(target_uri)
    if not (
        (wanted is not None and normalize_htu(aud) == wanted)
        or (type(aud) is str and aud in audiences)
    ):
        raise WorkloadProofError("WPT aud is not this request's target URI")
    exp = claims.get("exp")
    if type(exp) is not int or is_expired(exp, now):
        raise WorkloadProofError("WPT expired or without exp")
    if exp > now + WPT_MAX_TTL:  # compared, never subtracted: no float holds every int
        raise WorkloadProofError("WPT expires unreasonably far in the future")
    if claims.get("wth") != token_hash(wit):
        raise WorkloadProofError("WPT wth does not match the WIT")
    _bound(claims, "ath", access_token, "access token")
    _bound(claims, "tth", txn_token, "transaction token")
    oth = claims.get("oth")
    given = {name.lower(): value for name, value in (other_tokens or {}).items()}
    if oth is not None:
        if type(oth) is not dict or not oth:
            raise WorkloadProofError("WPT oth is not an object of token hashes")
        for name, digest in oth.items():
            if name not in given or digest != token_hash(given[name].strip()):
                raise WorkloadProofError(f"WPT oth entry not understood or not matching: {name}")
    elif given:
        raise WorkloadProofError("WPT lacks oth for the other tokens of the request")
    jti = claims.get("jti")
    if type(jti) is not str or not 1 <= len(jti) <= _MAX_JTI_CHARS:
        raise WorkloadProofError("WPT jti missing or malformed")
    replay_key = hashlib.sha256(f"wpt:{identity.sub}:{jti}".encode()).hexdigest()
    # Counted against the WIT key's quota in a ledger that keeps quotas, so that one
    # workload minting fresh WPTs cannot fill a capped ledger and lock its peers out.
    holder = jws.jwk_thumbprint(identity.public_key)
    try:
        first = remember_proof(replay, replay_key, float(exp), now, holder=holder)
    except BindingError as exc:  # the ledger refuses (full, or the key over quota): fail closed
        raise WorkloadProofError(exc.reason) from None
    if not first:
        raise WorkloadProofError("WPT replayed (jti already used)")
    return claims


def _bound(claims: Mapping[str, Any], name: str, token: str | None, what: str) -> None:
    """``name`` must hash ``token`` when the request carries one, and be absent if not."""
    value = claims.get(name)
    if token is None:
        if value is not None:
            raise WorkloadProofError(f"WPT {name} names a {what} the request does not carry")
    elif value != token_hash(token):
        raise WorkloadProofError(f"WPT {name} does not match the request's {what}")
