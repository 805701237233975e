"""Sender-constrained tokens at the resource server: RFC 8705 certificates and RFC 9449 DPoP.

The verifier's copy of ``tasklease.core.binding``, which cannot be imported here (it needs
``cryptography`` and ``msgspec`` through ``core.keys`` and ``core.tokens``). The rules are
the broker's, and ``tests/verify`` holds the two to the same answers:

* ``cnf.x5t#S256`` — base64url(SHA-256(DER of the client certificate)) must equal the
  certificate of the connection the token arrived on (RFC 8705 section 3);
* ``cnf.jkt`` — the request uses ``Authorization: DPoP`` and carries a fresh DPoP proof
  (``typ: dpop+jwt``, ``alg: EdDSA``, an Ed25519 ``jwk``; ``htm``, ``htu``, ``iat`` within
  the window, a never-seen ``jti``, ``ath`` of this token) signed by the key whose RFC 7638
  thumbprint is ``jkt`` (RFC 9449 sections 4.3 and 7.1);
* a token with both needs both proofs; an unbound token must come as ``Bearer``.

Proof ``jti``s are remembered until their ``iat`` leaves the window, so the replay cache is
bounded by the window times the request rate, and capped: when full it refuses new proofs
(fail closed) rather than forgetting. The cache is per verifier (per process).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from tasklease.core import _jws
from tasklease.verify._errors import InvalidToken
from tasklease.verify._jwks import thumbprint

__all__ = [
    "DPoPReplayCache",
    "Presentation",
    "access_token_hash",
    "cert_thumbprint",
    "check_binding",
    "normalize_htu",
    "presented_thumbprint",
]

DPOP_PROOF_TYPE = "dpop+jwt"
_MAX_JTI_CHARS = 256
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_THUMBPRINT_CHARS = 43  # base64url of 32 bytes, unpadded


def cert_thumbprint(der: bytes) -> str:
    """RFC 8705 section 3.1: base64url(SHA-256(DER certificate)), no padding."""
    return _jws.b64url_encode(hashlib.sha256(der).digest())


def presented_thumbprint(certificate: bytes | str | None) -> str:
    """The ``x5t#S256`` of a presented certificate given as DER, PEM or its thumbprint.

    ``bytes`` are DER unless they look like PEM; a ``str`` is PEM when it holds a
    ``-----BEGIN CERTIFICATE-----`` block and a thumbprint otherwise. ``""`` for ``None``.

    Raises:
        InvalidToken: a PEM that does not decode, or a string that is not a thumbprint.
    """
    if certificate is None:
        return ""
    if isinstance(certificate, bytes):
        if b"-----BEGIN CERTIFICATE-----" not in certificate:
            return cert_thumbprint(certificate) if certificate else ""
        certificate = certificate.decode("ascii", "replace")
    if "-----BEGIN CERTIFICATE-----" in certificate:
        try:
            return cert_thumbprint(ssl.PEM_cert_to_DER_cert(certificate.strip()))
        except ValueError:
            raise InvalidToken("presented certificate is not a PEM certificate") from None
    if len(certificate) != _THUMBPRINT_CHARS:
        raise InvalidToken("presented certificate thumbprint malformed")
    return certificate


def access_token_hash(token: str) -> str:
    """RFC 9449 section 4.2 ``ath``: base64url(SHA-256(ASCII access token))."""
    return _jws.b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalize_htu(uri: object) -> str | None:
    """Scheme, host and path of an HTTP(S) URI (query and fragment dropped, default port
    removed, case folded where it does not matter); ``None`` for anything else."""
    if not isinstance(uri, str) or len(uri) > 2048:
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or str(port) == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class DPoPReplayCache:
    """Checks DPoP proofs (RFC 9449 section 4.3) and remembers their ``jti``s."""

    def __init__(self, window: int, *, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, proof: str, *, htm: str, htu: str, now: float, access_token: str) -> str:
        """Verify ``proof`` for this request; return the JWK thumbprint it proves.

        Raises:
            InvalidToken: with the precise reason.
        """
        if not isinstance(proof, str) or not proof:
            raise InvalidToken("DPoP proof missing")
        try:
            raw_key, claims = _jws.decode_embedded_key(proof, typ=DPOP_PROOF_TYPE)
        except _jws.JWSError as exc:
            raise InvalidToken(f"DPoP proof refused: {exc.reason}") from None
        jti = claims.get("jti")
        if type(jti) is not str or not 1 <= len(jti) <= _MAX_JTI_CHARS:
            raise InvalidToken("DPoP proof jti missing or malformed")
        if claims.get("htm") != htm:
            raise InvalidToken("DPoP proof htm does not match the request method")
        claimed = normalize_htu(claims.get("htu"))
        if claimed is None or claimed != normalize_htu(htu):
            raise InvalidToken("DPoP proof htu does not match the request URI")
        raw_iat = claims.get("iat")
        if type(raw_iat) not in (int, float):  # bool is not int by type()
            raise InvalidToken("DPoP proof iat missing")
        iat = float(raw_iat)  # type: ignore[arg-type]
        if abs(now - iat) > self.window:
            raise InvalidToken("DPoP proof iat outside the acceptance window")
        ath = claims.get("ath")
        if type(ath) is not str or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise InvalidToken("DPoP proof ath does not match the access token")
        jkt = thumbprint(raw_key)
        self._remember(f"{jkt}:{jti}", iat + self.window, now)
        return jkt

    def _remember(self, key: str, expires_at: float, now: float) -> None:
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                if self._seen.get(old, now + 1) <= now:
                    del self._seen[old]
            if key in self._seen:
                raise InvalidToken("DPoP proof replayed (jti already used)")
            if len(self._seen) >= self.capacity:
                raise InvalidToken("DPoP replay cache full")
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))


class Presentation:
    """What a request presented besides the token: its scheme and its proofs."""

    __slots__ = ("cert_thumbprint", "dpop_proof", "htm", "htu", "scheme")

    def __init__(
        self,
        *,
        scheme: str = "Bearer",
        cert_thumbprint: str = "",
        dpop_proof: str = "",
        htm: str = "",
        htu: str = "",
    ) -> None:
        self.scheme = scheme
        self.cert_thumbprint = cert_thumbprint
        self.dpop_proof = dpop_proof
        self.htm = htm
        self.htu = htu


def check_binding(
    cnf: Any, token: str, presented: Presentation, *, dpop: DPoPReplayCache, now: float
) -> None:
    """Refuse ``token`` unless ``presented`` proves possession of every key in ``cnf``.

    ``cnf`` is the token's (well-formed, see ``_claims``) ``cnf`` claim or ``None``.

    Raises:
        InvalidToken: with the precise reason.
    """
    bound = cnf if isinstance(cnf, dict) else {}
    scheme = presented.scheme.lower()
    jkt = bound.get("jkt")
    if jkt is None:
        if scheme != "bearer":
            raise InvalidToken("DPoP scheme used with a token not bound to a DPoP key")
    else:
        if scheme != "dpop":
            raise InvalidToken("DPoP-bound token presented as a bearer token")
        proven = dpop.verify(
            presented.dpop_proof,
            htm=presented.htm,
            htu=presented.htu,
            now=now,
            access_token=token,
        )
        if not hmac.compare_digest(proven.encode(), str(jkt).encode()):
            raise InvalidToken("DPoP proof signed by another key than the token's cnf.jkt")
    x5t = bound.get("x5t#S256")
    if x5t is not None:
        if not presented.cert_thumbprint:
            raise InvalidToken("certificate-bound token presented without a client certificate")
        if not hmac.compare_digest(presented.cert_thumbprint.encode(), str(x5t).encode()):
            raise InvalidToken("certificate-bound token presented with another certificate")
