"""Sender-constrained tokens: certificate binding (RFC 8705) and DPoP (RFC 9449).

The broker and the offline verifier check a bound token's proofs with these same rules.
A bound token carries ``cnf`` (RFC 7800) naming the key its holder must prove it holds:

* ``x5t#S256`` — base64url(SHA-256(DER of the client certificate)), compared with the
  certificate of the TLS connection the token arrived on (RFC 8705 section 3);
* ``jkt`` — the RFC 7638 thumbprint of an Ed25519 JWK; every request carries a fresh
  DPoP proof signed by that key (RFC 9449 section 4), sent with ``Authorization: DPoP``.

A token with both members needs both proofs. An unbound token is a bearer token; a bound
one presented as a bearer token, without its proof or with another key's, is refused.
(That ``cnf`` itself is well formed is a claim rule: :func:`tasklease.rules.claims.check_claims`.)

DPoP proofs are single use: their ``jti`` (with the key) is remembered until the proof's
``iat`` leaves the acceptance window, so the replay cache is bounded by the window times
the request rate. Where it is remembered is a :class:`ProofLedger`: this process's memory
(:class:`MemoryProofLedger`, capped; when full it refuses new proofs, fail closed, rather
than forgetting), or the broker's store, shared by its workers and replicas. So that one
holder cannot fill a capped ledger and lock every other holder out, a ledger may also
bound the live proofs of each key (:class:`QuotaProofLedger`; the memory ledger does):
past it that key's proofs are refused, and only that key's.

Every failure raises :class:`BindingError`, whose ``reason`` is for the audit log only.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence, Sized
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from tasklease import forksafe
from tasklease.rules import jws

__all__ = [
    "DEFAULT_HOLDER_QUOTA",
    "DPOP_PROOF_TYPE",
    "PROOF_OVER_QUOTA",
    "PROOF_REPLAYED",
    "BindingError",
    "DPoPNonceRequired",
    "DPoPProof",
    "DPoPProofError",
    "DPoPVerifier",
    "MalformedAuthorization",
    "MemoryProofLedger",
    "NonceSource",
    "Presentation",
    "ProofLedger",
    "QuotaProofLedger",
    "access_token_hash",
    "authorization_credentials",
    "cert_thumbprint",
    "check_binding",
    "claimed_htu",
    "expected_htu",
    "normalize_htu",
    "origin_of",
    "presented_thumbprint",
    "remember_proof",
    "url_path",
    "www_authenticate",
]

PROOF_REPLAYED = "DPoP proof replayed (jti already used)"
"""Why a proof presented before is refused (RFC 9449 section 11.1), wherever it is."""

PROOF_OVER_QUOTA = "DPoP proof refused: its key has its quota of live proofs remembered"
"""Why a proof is refused when its holder already has :data:`DEFAULT_HOLDER_QUOTA` (or the
ledger's own quota) proofs remembered that have not expired."""

DEFAULT_HOLDER_QUOTA = 5_000
"""Live proofs one key may have remembered in a :class:`MemoryProofLedger` by default.

A proof is remembered until its ``iat`` leaves the window, so a key sending one proof a
request keeps about rate x window of them live: 5,000 is 83 requests a second sustained
for the default 60 s window (about half that for a client whose clock runs a full window
ahead), far above what an agent sends to one resource server, while one key alone can
fill no more than 5,000 of a ledger's places (docs/decisions.md 141)."""

DPOP_PROOF_TYPE = "dpop+jwt"
"""The JWS ``typ`` of a DPoP proof (RFC 9449 section 4.2)."""

_MAX_JTI_CHARS = 256
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_MAX_PROOF_PAYLOAD = 4096  # base64url characters of a proof's payload read for its htu
_THUMBPRINT_CHARS = 43  # base64url of 32 bytes, unpadded
_PEM_MARKER = "-----BEGIN CERTIFICATE-----"


_SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_SCOPE_TOKENS = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*")


class MalformedAuthorization(ValueError):
    """A ``Bearer`` or ``DPoP`` ``Authorization`` header whose credential is not one token."""


def authorization_credentials(header: str | None) -> tuple[str, str] | None:
    """``(scheme, token)`` of an ``Authorization`` header with the Bearer or DPoP scheme.

    The scheme is matched without case (RFC 9110 section 11.1) and returned as ``Bearer``
    or ``DPoP``; one or more spaces separate it from the credential, which must be one
    ``token68`` (RFC 6750 section 2.1, RFC 9449 section 7.1). Whitespace around the field
    value is not part of it (RFC 9110 section 5.5).

    Returns None when there is no header or it names another scheme (``Basic``): the
    request then carries no token at all (RFC 6750 section 3.1: no error code).

    Raises:
        MalformedAuthorization: the Bearer or DPoP scheme without exactly one token68.
    """
    if not header:
        return None
    text = header.strip(" \t")
    scheme, _, credential = text.partition(" ")
    canonical = _SCHEMES.get(scheme.lower())
    if canonical is None:
        return None
    credential = credential.lstrip(" ")
    if _TOKEN68.fullmatch(credential) is None:
        raise MalformedAuthorization(f"{canonical} credential is not one token")
    return canonical, credential


def www_authenticate(
    challenge: tuple[str, str] | None, scope: str | None = None, *, realm: str = "tasklease"
) -> str:
    """The ``WWW-Authenticate`` value: a challenge for each scheme we accept.

    ``Bearer`` (RFC 6750 section 3) and ``DPoP`` with the one algorithm we verify (RFC
    9449 section 7.1). ``challenge`` is ``(scheme, error)`` when a presented credential
    failed; the error goes in that scheme's challenge, with ``scope`` for
    ``insufficient_scope``. Without one (no credential was sent, RFC 6750 section 3.1)
    neither challenge has an error.
    """
    params = {"Bearer": [f'realm="{realm}"'], "DPoP": [f'realm="{realm}"']}
    if challenge is not None:
        scheme, error = challenge
        target = params["DPoP" if scheme == "DPoP" else "Bearer"]
        target.append(f'error="{error}"')
        if error == "insufficient_scope" and scope and _SCOPE_TOKENS.fullmatch(scope):
            target.append(f'scope="{scope}"')
    params["DPoP"].append('algs="EdDSA"')
    return f"Bearer {', '.join(params['Bearer'])}, DPoP {', '.join(params['DPoP'])}"


class BindingError(Exception):
    """A proof of possession was missing, malformed, stale, replayed or for another key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DPoPProofError(BindingError):
    """The DPoP proof itself was refused (RFC 9449 ``invalid_dpop_proof``), as opposed
    to a token presented with the wrong scheme or certificate."""


def cert_thumbprint(der: bytes) -> str:
    """RFC 8705 section 3.1: base64url(SHA-256(DER certificate)), no padding."""
    return jws.b64url_encode(hashlib.sha256(der).digest())


def presented_thumbprint(certificate: bytes | str | None) -> str:
    """The ``x5t#S256`` of a presented certificate given as DER, PEM or its thumbprint.

    ``bytes`` are DER unless they look like PEM; a ``str`` is PEM when it holds a
    ``-----BEGIN CERTIFICATE-----`` block and a thumbprint otherwise. ``""`` for ``None``.
    The PEM is only unwrapped (standard library), not parsed as X.509: the thumbprint is
    over the DER bytes, whatever they hold.

    Raises:
        BindingError: a PEM that does not decode, or a string that is not a thumbprint.
    """
    if certificate is None:
        return ""
    if isinstance(certificate, bytes):
        if _PEM_MARKER.encode("ascii") not in certificate:
            return cert_thumbprint(certificate) if certificate else ""
        certificate = certificate.decode("ascii", "replace")
    if _PEM_MARKER in certificate:
        try:
            return cert_thumbprint(ssl.PEM_cert_to_DER_cert(certificate.strip()))
        except ValueError:
            raise BindingError("presented certificate is not a PEM certificate") from None
    if len(certificate) != _THUMBPRINT_CHARS:
        raise BindingError("presented certificate thumbprint malformed")
    return certificate


def access_token_hash(token: str) -> str:
    """RFC 9449 section 4.2 ``ath``: base64url(SHA-256(ASCII access token))."""
    return jws.b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalize_htu(uri: object) -> str | None:
    """Scheme, host and path of an HTTP(S) URI, lowercased where case does not matter.

    Query and fragment are dropped, default ports removed and the path's percent-encodings
    brought to one form (RFC 9449 section 4.3 point 9 compares without query and
    fragment, with RFC 3986 section 6 normalization).
    ``None`` for anything that is not an absolute http(s) URI.
    """
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
    return f"{scheme}://{netloc}{_PERCENT.sub(_percent, parts.path) or '/'}"


# RFC 3986 section 6.2.2: a percent-encoding's hex digits are one in either case, and an
# unreserved character means the same encoded or not. Both sides of a comparison are
# brought to one form: upper-case hex, unreserved characters decoded.
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, normalized as :func:`normalize_htu` compares
    (default port dropped); ``None`` for anything but an absolute http(s) URL."""
    normalized = normalize_htu(url.rstrip("/") + "/")
    return normalized[:-1] if normalized is not None else None


def claimed_htu(proof: str) -> str | None:
    """The ``htu`` a DPoP proof claims, normalized; read without verification, only to
    choose among a server's own origins (:func:`expected_htu`), never to trust."""
    parts = proof.split(".")
    if len(parts) != 3 or len(parts[1]) > _MAX_PROOF_PAYLOAD:
        return None
    try:
        payload = json.loads(jws.b64url_decode(parts[1]))
    except (ValueError, RecursionError, jws.JWSError):
        return None
    return normalize_htu(payload.get("htu")) if isinstance(payload, dict) else None


# What a URL's path may hold as it is (RFC 3986 section 3.3: pchar and "/"); anything
# else, "%" included, is percent-encoded (UTF-8) as a client writes it.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


def url_path(path: str) -> str:
    """The path of a request's URL from its ASGI ``path`` (decoded, a mount's or proxy's
    ``root_path`` already included), percent-encoded again as a client writes it: every
    character but those RFC 3986 allows in a path, ``%``, ``?``, ``#``, ``\\``, spaces and
    non-ASCII included. Left decoded, ``/a?/b`` would name the URI ``/a`` (query ``/b``)
    to :func:`normalize_htu`, and ``/a%20b`` (sent as ``/a%2520b``) the file ``a b``: a
    proof for one URL would pass at another. What :func:`expected_htu` is given, at the
    broker and at a resource server."""
    return quote(path, safe=_PATH_SAFE, errors="surrogatepass")


def expected_htu(origins: Sequence[str], path: str, proof: str) -> str:
    """The URI a DPoP proof for a request to ``path`` (its URL's path, :func:`url_path`)
    must name (RFC 9449 section 4.3 point 9): one of the server's own ``origins``
    (normalized, :func:`origin_of`) + the path, never built from the request's ``Host``
    header, so a proof minted for another server is not made valid here by sending that
    server's name. With several origins, the one the proof names; with none matching,
    the first (and the check fails). "" without an origin."""
    if not origins:
        return ""
    if len(origins) > 1 and proof:
        claimed = claimed_htu(proof)
        for origin in origins:
            if claimed == normalize_htu(origin + path):
                return origin + path
    return origins[0] + path


class DPoPNonceRequired(DPoPProofError):
    """The proof lacks a current nonce the server provided (RFC 9449 ``use_dpop_nonce``);
    ``nonce`` is a fresh one for the client to retry with (the ``DPoP-Nonce`` header)."""

    def __init__(self, reason: str, nonce: str) -> None:
        super().__init__(reason)
        self.nonce = nonce


class NonceSource(Protocol):
    """Server-provided DPoP nonces (RFC 9449 sections 8 and 9): issued, then checked."""

    def issue(self, now: float) -> str:
        """A nonce for proofs made from ``now`` on."""
        ...

    def check(self, nonce: str, now: float) -> bool:
        """True when ``nonce`` is one of ours and still current at ``now``."""
        ...


class DPoPProof(NamedTuple):
    """A DPoP proof that passed every check but the replay check.

    ``jkt`` is the thumbprint of the key it proves; ``key`` names it in a replay ledger
    (SHA-256 hex of ``jkt`` and its ``jti``); it must be remembered until ``expires_at``.
    """

    jkt: str
    key: str
    expires_at: float


class ProofLedger(Protocol):
    """Where proofs already presented are remembered: one use each.

    :class:`MemoryProofLedger` for one process; the broker's records them in its store, so
    a proof is single use across its workers and replicas (``core.binding``).
    """

    def remember(self, key: str, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded.

        Raises:
            DPoPProofError: the ledger cannot take it (full): refuse, never forget.
        """
        ...


@runtime_checkable
class QuotaProofLedger(ProofLedger, Protocol):
    """A :class:`ProofLedger` that also bounds what one holder may have remembered at once.

    ``holder`` names whose proof it is (the thumbprint of the key it proves, or of the key
    an offline chain was derived from): a capped ledger that takes anyone's proofs until it
    is full would let one holder sending fresh proofs as fast as they are accepted fill it
    and lock every other holder out. The verifiers pass the holder to a ledger that has
    :meth:`remember_for` (:func:`remember_proof`), and call :meth:`remember` on others.
    """

    def remember_for(self, holder: str, key: str, expires_at: float, now: float) -> bool:
        """:meth:`remember`, counted against ``holder``'s quota until ``expires_at``.

        Raises:
            DPoPProofError: ``holder`` has its quota of live proofs remembered
                (:data:`PROOF_OVER_QUOTA`), or the ledger is full: refuse, never forget.
        """
        ...


def remember_proof(
    ledger: ProofLedger, key: str, expires_at: float, now: float, *, holder: str = ""
) -> bool:
    """Record a proof in ``ledger``: counted against ``holder``'s quota when the ledger
    keeps quotas (:class:`QuotaProofLedger`) and a holder is named; False if it is
    already recorded.

    Raises:
        DPoPProofError: the ledger refuses it (full, or the holder over its quota).
    """
    # One attribute read rather than a runtime Protocol check (isinstance on a Protocol
    # inspects every member each time): this runs once per proof.
    remember_for = getattr(ledger, "remember_for", None) if holder else None
    if remember_for is None:
        return ledger.remember(key, expires_at, now)
    return bool(remember_for(holder, key, expires_at, now))


class _Holder:
    """One holder's live proofs in a :class:`MemoryProofLedger`; each of its heap entries
    points here, so the holder's name is stored once, not once a proof."""

    __slots__ = ("live", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.live = 0


class MemoryProofLedger:
    """A :class:`QuotaProofLedger` in this process: at most ``capacity`` live keys, and at
    most ``holder_quota`` of them for any one holder.

    Keys leave once expired (a holder's count with them); when full, new proofs are refused
    (fail closed) rather than old ones forgotten, and a holder at its quota has its new
    proofs refused while everyone else's are still taken. Proofs recorded with
    :meth:`remember` name no holder and count against the capacity only. Every call is
    O(log n) (amortized over the expired keys it drops) under one lock: thread-safe.

    Expired means past ``expires_at`` by the ``now`` of the call *and* by the time that
    elapsed (``monotonic``) since the key was recorded: a wall clock stepped forward does
    not forget a proof that is still fresh by the time the clock comes back to, and a clock
    stepped back keeps it until the clock has passed its expiry again.

    Raises:
        ValueError: ``holder_quota`` below 1.
    """

    def __init__(
        self,
        capacity: int = 1_000_000,
        *,
        holder_quota: int = DEFAULT_HOLDER_QUOTA,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if holder_quota < 1:
            raise ValueError("holder_quota must be at least 1")
        self.capacity = capacity
        self.holder_quota = holder_quota
        self._monotonic = monotonic
        self._seen: dict[str, float] = {}
        # (elapsed-time deadline, key, holder or None): by the monotonic time at which the
        # key's life is over; a holder's count drops as its keys are dropped. Keys are
        # unique, so a tie never compares holders.
        self._expiry: list[tuple[float, str, _Holder | None]] = []
        # (expires_at, key, holder or None): keys whose life is over by elapsed time but not
        # by the clock (it was stepped back), until the clock passes their expiry again.
        self._stepped: list[tuple[float, str, _Holder | None]] = []
        self._held: dict[str, _Holder] = {}  # holders with a live key, by name
        self._lock = threading.Lock()
        forksafe.track(self)

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, key: str, expires_at: float, now: float) -> bool:
        return self.remember_for("", key, expires_at, now)

    def remember_for(self, holder: str, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            elapsed = self._monotonic()
            self._expire(now, elapsed)
            if key in self._seen:
                return False
            counted = self._held.get(holder) if holder else None
            if counted is not None and counted.live >= self.holder_quota:
                raise DPoPProofError(PROOF_OVER_QUOTA)
            if len(self._seen) >= self.capacity:
                raise DPoPProofError("DPoP replay cache full")
            if holder and counted is None:
                counted = self._held[holder] = _Holder(holder)
            if counted is not None:
                counted.live += 1
            self._seen[key] = expires_at
            # Compared, never subtracted when the key is already over: an expiry no float
            # holds (a proof's own claim) must not make the deadline NaN or infinite.
            life = expires_at - now if expires_at > now else 0.0
            heapq.heappush(self._expiry, (elapsed + life, key, counted))
            return True

    def _expire(self, now: float, elapsed: float) -> None:
        """Drop every key expired at ``now`` and at ``elapsed``, counted off its holder
        (the lock is held)."""
        expiry, stepped, seen = self._expiry, self._stepped, self._seen
        while expiry and expiry[0][0] <= elapsed:
            entry = heapq.heappop(expiry)
            expires_at = seen.get(entry[1])
            if expires_at is not None and expires_at > now:
                heapq.heappush(stepped, (expires_at, entry[1], entry[2]))
            else:
                self._drop(entry[1], entry[2])
        while stepped and stepped[0][0] <= now:
            _, old, counted = heapq.heappop(stepped)
            self._drop(old, counted)

    def _drop(self, key: str, counted: _Holder | None) -> None:
        if self._seen.pop(key, None) is None:
            return
        if counted is not None:
            counted.live -= 1
            if not counted.live:
                del self._held[counted.name]


class DPoPVerifier:
    """Checks DPoP proofs (RFC 9449 section 4.3) and remembers them in a ledger.

    ``window``: seconds a proof's ``iat`` may differ from now; ``ledger``: where proofs
    already presented are remembered (default: this process's, of at most ``capacity``
    entries and ``holder_quota`` of one key's); ``nonces``: when given, every proof must
    carry a current nonce from it; ``retain``: seconds a proof is remembered past its
    window, for a ledger that processes whose clocks differ by up to that much share and
    prune (the broker's store: its clock skew), so that none of them forgets a proof
    another's clock still takes as fresh.
    """

    def __init__(
        self,
        window: int,
        *,
        capacity: int = 1_000_000,
        ledger: ProofLedger | None = None,
        nonces: NonceSource | None = None,
        holder_quota: int = DEFAULT_HOLDER_QUOTA,
        retain: int = 0,
    ) -> None:
        self.window = window
        self.retain = retain
        self.ledger: ProofLedger = (
            ledger if ledger is not None else MemoryProofLedger(capacity, holder_quota=holder_quota)
        )
        self.nonces = nonces

    def __len__(self) -> int:
        return len(self.ledger) if isinstance(self.ledger, Sized) else 0

    def verify(
        self,
        proof: str,
        *,
        htm: str,
        htu: str,
        now: float,
        access_token: str | None = None,
        jkt: str | None = None,
        holder: str = "",
    ) -> str:
        """Verify ``proof`` for this request; return the JWK thumbprint (``jkt``) it proves.

        :meth:`check`; with ``jkt`` (the token's ``cnf.jkt``), a proof signed by another
        key is refused before it is remembered, so that fresh keys cannot spend the
        ledger's places; then the proof is recorded in the ledger: a proof presented
        before (its ``jti`` with the same key) is refused. A ledger that keeps quotas
        counts it against ``holder`` (default: the key it proves).

        Raises:
            DPoPProofError: with the precise reason.
        """
        checked = self.check(proof, htm=htm, htu=htu, now=now, access_token=access_token)
        if jkt is not None and not hmac.compare_digest(checked.jkt.encode(), jkt.encode()):
            raise DPoPProofError("DPoP proof signed by another key than the token's cnf.jkt")
        if not remember_proof(
            self.ledger, checked.key, checked.expires_at, now, holder=holder or checked.jkt
        ):
            raise DPoPProofError(PROOF_REPLAYED)
        return checked.jkt

    def check(
        self,
        proof: str,
        *,
        htm: str,
        htu: str,
        now: float,
        access_token: str | None = None,
    ) -> DPoPProof:
        """Every check of a proof but the replay check, which is the caller's.

        In order: size and structure, ``typ: dpop+jwt``, ``alg: EdDSA`` with an Ed25519
        ``jwk`` and nothing else in the header, the signature, then the claims: ``htm``
        equal to the request method, ``htu`` equal to the request URI (no query), ``iat``
        within ``window`` seconds of now, ``ath`` equal to the access token's hash when one
        is presented (and absent otherwise), and, with ``nonces``, a current ``nonce``
        (:class:`DPoPNonceRequired` otherwise, carrying a fresh one). The proof is to be
        remembered until its ``iat`` leaves the window.

        Raises:
            DPoPProofError: with the precise reason.
        """
        if not isinstance(proof, str) or not proof:
            raise DPoPProofError("DPoP proof missing")
        try:
            raw_key, claims = jws.decode_embedded_key(proof, typ=DPOP_PROOF_TYPE)
        except jws.JWSError as exc:
            raise DPoPProofError(f"DPoP proof refused: {exc.reason}") from None
        jti = claims.get("jti")
        if type(jti) is not str or not 1 <= len(jti) <= _MAX_JTI_CHARS:
            raise DPoPProofError("DPoP proof jti missing or malformed")
        if claims.get("htm") != htm:
            raise DPoPProofError("DPoP proof htm does not match the request method")
        claimed = normalize_htu(claims.get("htu"))
        if claimed is None or claimed != normalize_htu(htu):
            raise DPoPProofError("DPoP proof htu does not match the request URI")
        raw_iat = claims.get("iat")
        if type(raw_iat) is not int and type(raw_iat) is not float:  # bool is not int here
            raise DPoPProofError("DPoP proof iat missing")
        try:
            iat = float(raw_iat)
        except OverflowError:  # an integer no float holds: far outside any window
            raise DPoPProofError("DPoP proof iat outside the acceptance window") from None
        # Acceptable strictly inside the window: at ``iat + window`` (``retain`` later, by
        # a clock that far ahead) the replay ledger forgets the proof
        # (``DPoPProof.expires_at``), so it must be refused from then on.
        if abs(now - iat) >= self.window:
            raise DPoPProofError("DPoP proof iat outside the acceptance window")
        ath = claims.get("ath")
        if access_token is None:
            if ath is not None:
                raise DPoPProofError("DPoP proof carries ath without an access token")
        elif type(ath) is not str or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise DPoPProofError("DPoP proof ath does not match the access token")
        if self.nonces is not None:  # RFC 9449 section 4.3 point 10
            nonce = claims.get("nonce")
            if type(nonce) is not str or not self.nonces.check(nonce, now):
                raise DPoPNonceRequired(
                    "DPoP proof without a current server nonce", self.nonces.issue(now)
                )
        jkt = jws.jwk_thumbprint(raw_key)
        key = hashlib.sha256(f"{jkt}:{jti}".encode()).hexdigest()
        return DPoPProof(jkt, key, iat + self.window + self.retain)


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
    cnf: Any,
    token: str,
    presented: Presentation,
    *,
    dpop: DPoPVerifier,
    now: float,
    holder: str = "",
) -> None:
    """Refuse ``token`` unless ``presented`` proves possession of every key in ``cnf``.

    ``cnf`` is the token's (already well-formed) ``cnf`` claim or ``None``. An unbound
    token must come with the ``Bearer`` scheme; a ``jkt``-bound one with ``DPoP`` and a
    valid proof for it (RFC 9449 section 7.1), remembered only once it is that key's and
    counted against ``holder``'s quota (default: that key's; an offline chain names its
    root holder's key, from which any number of delegate keys can be derived); an
    ``x5t#S256``-bound one over a connection with that certificate (RFC 8705 section 3).
    Schemes compare without case (RFC 9110 section 11.1).

    Raises:
        BindingError: with the precise reason.
    """
    bound = cnf if isinstance(cnf, dict) else {}
    scheme = presented.scheme.lower()
    jkt = bound.get("jkt")
    if jkt is None:
        if scheme != "bearer":
            raise BindingError("DPoP scheme used with a token not bound to a DPoP key")
    else:
        if scheme != "dpop":
            raise BindingError("DPoP-bound token presented as a bearer token")
        dpop.verify(
            presented.dpop_proof,
            htm=presented.htm,
            htu=presented.htu,
            now=now,
            access_token=token,
            jkt=str(jkt),
            holder=holder,
        )
    x5t = bound.get("x5t#S256")
    if x5t is not None:
        if not presented.cert_thumbprint:
            raise BindingError("certificate-bound token presented without a client certificate")
        if not hmac.compare_digest(presented.cert_thumbprint.encode(), str(x5t).encode()):
            raise BindingError("certificate-bound token presented with another certificate")
