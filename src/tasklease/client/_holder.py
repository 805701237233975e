"""Proof of possession for a bound agent, without I/O: DPoP proofs (RFC 9449) and the
transport settings that present a client certificate (RFC 8705).

A DPoP-bound agent sends every request with ``Authorization: DPoP <token>`` (when it has
a token) and a ``DPoP`` header: a fresh JWT (``typ: dpop+jwt``, ``alg: EdDSA``, the
public ``jwk``) whose claims are ``htm`` (method), ``htu`` (URI without query and
fragment), ``iat``, a unique ``jti``, with a token ``ath`` (its SHA-256), and the
``nonce`` the request's server provided (``DPoP-Nonce``; each origin's own, RFC 9449
section 8): a request refused with ``use_dpop_nonce`` is resent once with it (RFC 9449
sections 8 and 9). The same
:meth:`DPoPKey.bind` is used by the flows (sync and async alike) and by the ``httpx.Auth``
for the agent's own calls to resource servers. PyNaCl and the standard library only; the
encodings and thumbprints are the broker's own (``tasklease.rules``).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import httpx
import nacl.signing

from tasklease import forksafe
from tasklease.bounds import json_document
from tasklease.rules import attenuation, jws
from tasklease.rules.binding import DPOP_PROOF_TYPE, access_token_hash
from tasklease.rules.claims import CNF_MEMBERS

__all__ = [
    "DPoPKey",
    "bind_flow",
    "dpop_key",
    "sender_constrained",
    "ssl_context",
    "token_cnf",
]

T = TypeVar("T")
Flow = Generator[httpx.Request, httpx.Response, T]
Origin = tuple[str, str, int | None]

# The servers whose nonces a key remembers: the ones it talks to (a broker, a few
# resource servers), not every URL it was ever handed. The least recently used goes.
NONCE_ORIGINS = 64


def _compact(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def htu_of(url: httpx.URL) -> str:
    """The request URI as DPoP signs it: scheme, host, port and path (no query/fragment)."""
    return str(url.copy_with(query=None, fragment=None))


def origin_of(url: httpx.URL) -> Origin:
    """Whose nonce a request carries: its scheme, host and port (a default port as None)."""
    return url.scheme, url.host, url.port


class DPoPKey:
    """An Ed25519 DPoP key and the proofs it signs.

    ``clock`` (seconds since the epoch) dates the proofs: it must agree with the broker's
    clock within its ``dpop_proof_window``, so it is the system clock by default, not the
    agent's (possibly injected) renewal clock.
    """

    def __init__(
        self,
        key: nacl.signing.SigningKey | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key if key is not None else nacl.signing.SigningKey.generate()
        self._clock = clock
        public_key = bytes(self.key.verify_key)
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(public_key)}
        self.thumbprint = jws.jwk_thumbprint(public_key)
        header = {"typ": DPOP_PROOF_TYPE, "alg": jws.ALGORITHM, "jwk": self.jwk}
        self._header = jws.b64url_encode(_compact(header))
        # The nonce each server asked for (RFC 9449 sections 8 and 9), by origin: sent in
        # every proof for that server, and to no other.
        self._nonces: OrderedDict[Origin, str] = OrderedDict()
        self._nonces_lock = threading.Lock()
        forksafe.track(self)

    def nonce_for(self, url: str | httpx.URL) -> str | None:
        """The nonce the server of ``url`` provided last, if any."""
        origin = origin_of(httpx.URL(str(url)))
        with self._nonces_lock:
            nonce = self._nonces.get(origin)
            if nonce is not None:
                self._nonces.move_to_end(origin)
            return nonce

    def _remember(self, url: httpx.URL, nonce: str) -> None:
        origin = origin_of(url)
        with self._nonces_lock:
            self._nonces[origin] = nonce
            self._nonces.move_to_end(origin)
            while len(self._nonces) > NONCE_ORIGINS:
                self._nonces.popitem(last=False)

    def proof(self, method: str, url: str | httpx.URL, token: str | None = None) -> str:
        """A fresh, single-use proof for ``method`` ``url`` (and ``token``, as ``ath``)."""
        target = httpx.URL(str(url))  # an httpx2.URL too
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(18),
            "htm": method.upper(),
            "htu": htu_of(target),
            "iat": int(self._clock()),
        }
        if token is not None:
            claims["ath"] = access_token_hash(token)
        nonce = self.nonce_for(target)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = self._header + "." + jws.b64url_encode(_compact(claims))
        signature = jws.sign_detached(signing_input.encode("ascii"), self.key)
        return signing_input + "." + jws.b64url_encode(signature)

    def observe(self, response: httpx.Response) -> bool:
        """Remember the nonce a response provides (``DPoP-Nonce``) for the server that
        answered; True when the response refused the request for want of it
        (``use_dpop_nonce``): resend it, re-bound."""
        nonce = response.headers.get("DPoP-Nonce")
        if not nonce:
            return False
        try:
            url = response.request.url
        except RuntimeError:  # an answer to no request: no server to remember it for
            return False
        self._remember(url, nonce)
        if response.status_code not in (400, 401):
            return False
        if 'error="use_dpop_nonce"' in response.headers.get("WWW-Authenticate", ""):
            return True
        try:
            return bool(json_document(response.content).get("error") == "use_dpop_nonce")
        except (ValueError, AttributeError, httpx.ResponseNotRead):
            return False

    def bind(self, request: httpx.Request) -> httpx.Request:
        """Attach a proof to ``request``; a bearer ``Authorization`` becomes ``DPoP``."""
        token: str | None = None
        authorization = request.headers.get("Authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() in ("bearer", "dpop") and credential:
            token = credential.strip()
            request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.proof(request.method, request.url, token)
        return request


def dpop_key(dpop: bool | nacl.signing.SigningKey | DPoPKey | None) -> DPoPKey | None:
    """The DPoP key a ``dpop=`` argument asks for: True generates one."""
    if dpop is None or dpop is False:
        return None
    if dpop is True:
        return DPoPKey()
    if isinstance(dpop, DPoPKey):
        return dpop
    if isinstance(dpop, nacl.signing.SigningKey):
        return DPoPKey(dpop)
    raise TypeError("dpop must be a bool, a nacl.signing.SigningKey or None")


def bind_flow(flow: Flow[T], key: DPoPKey | None) -> Flow[T]:
    """``flow`` with a DPoP proof on every request it makes (``flow`` itself without key)."""
    if key is None:
        return (yield from flow)
    try:
        request = next(flow)
    except StopIteration as stop:  # a flow with nothing to send
        done: T = stop.value
        return done
    while True:
        response = yield key.bind(request)
        if key.observe(response):  # the server asks for its nonce: once more, with it
            response = yield key.bind(request)
            key.observe(response)
        try:
            request = flow.send(response)
        except StopIteration as stop:
            result: T = stop.value
            return result


def token_cnf(token: str) -> dict[str, Any]:
    """The ``cnf`` of a JWT access token, read without verification ({} if none or opaque).

    Only to decide how the SDK presents the token; the broker verifies it.
    """
    try:
        _, payload = jws.decode_unverified(token)
    except jws.JWSError:
        return {}
    cnf = payload.get("cnf")
    return cnf if isinstance(cnf, dict) else {}


def sender_constrained(token: str, opaque_bound: Callable[[], bool] | None = None) -> bool:
    """Whether ``token`` is useless to whoever copies it: presenting it needs proof of a
    key or certificate its holder keeps (RFC 9449, RFC 8705). Read without verification,
    to decide whether the SDK may show the token to a party it has not authenticated.

    A JWT: its ``cnf`` names a key (``jkt``) or a certificate (``x5t#S256``). An offline
    chain needs its last delegate's DPoP proof, but it carries its root token, which can
    be cut out and presented alone: it is as constrained as that root. An opaque
    (by-reference) token does not say: ``opaque_bound`` tells (its holder knows whether
    it sent a DPoP proof or a client certificate when it got it); without it, it is not.
    """
    if attenuation.is_chain(token):
        try:
            token = attenuation.decode(token).root
        except attenuation.ChainError:
            return False  # not a chain this SDK can read: it proves nothing
    if token.count(".") == 2:
        cnf = token_cnf(token)
        return any(isinstance(cnf.get(m), str) and cnf.get(m) for m in CNF_MEMBERS)
    return opaque_bound is not None and opaque_bound()


CertArg = tuple[str | os.PathLike[str], str | os.PathLike[str]]


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The context every client of this process that trusts the default CA bundle shares
    (httpx's: certifi's bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as the first client
    found them). Building one reads and parses the whole bundle, tens of milliseconds: an
    orchestrator registering hundreds of agents would pay it for each. Nothing is ever
    loaded into it (a client certificate gets a context of its own: :func:`ssl_context`),
    and a context is safe to share between threads."""
    return httpx.create_ssl_context()


def ssl_context(
    cert: CertArg | None, verify: ssl.SSLContext | str | os.PathLike[str] | bool
) -> ssl.SSLContext | bool:
    """The ``verify=`` for httpx that trusts ``verify`` and presents ``cert`` (mTLS).

    ``verify``: an ``ssl.SSLContext`` (used as is, ``cert`` loaded into it), a CA bundle
    path, or a bool as httpx takes it. ``cert``: ``(certificate_path, key_path)``.
    """
    if cert is None and not isinstance(verify, str | os.PathLike):
        return default_ssl_context() if verify is True else verify
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str | os.PathLike):
        context = ssl.create_default_context(cafile=os.fspath(verify))
    elif verify:
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        certfile, keyfile = cert
        context.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
    return context
