"""What the broker's TLS listener negotiates: TLS 1.2 or later, and on TLS 1.2 only
forward-secret AEAD cipher suites, whatever uvicorn's own default cipher string.

uvicorn before 0.48 (the broker takes >= 0.34) set the cipher string ``TLSv1`` on every
context it made unless told otherwise, which replaces Python's hardened list with every
TLS 1.0 suite: CBC with an HMAC-SHA1 was accepted on a broker that carries tokens and the
admin secret. The handshakes run in memory (``ssl.MemoryBIO``), over the context uvicorn
builds from :func:`tasklease.http.tls.uvicorn_tls_options`.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any

import pytest
import uvicorn
from security_support import PKI, make_pki

from tasklease.core.config import Config
from tasklease.http.tls import uvicorn_tls_options

# uvicorn's default before 0.48 (Kludex/uvicorn#2940 made it None).
_OLD_UVICORN_DEFAULT = {"ssl_ciphers": "TLSv1"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("tls-ciphers"), clients=())


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called
    raise AssertionError("no request is served here")


def _served_context(pki: PKI) -> ssl.SSLContext:
    """The context uvicorn serves with for ``tls_mode = "tls"``, under the old default."""
    config = Config(tls_mode="tls", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    options = {**_OLD_UVICORN_DEFAULT, **uvicorn_tls_options(config)}
    served = uvicorn.Config(_app, log_config=None, **options)
    served.load()
    assert served.ssl is not None
    return served.ssl


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str] | str:
    """(protocol, cipher) of a completed handshake, or the reason it failed."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    serving = server.wrap_bio(to_server, from_server, server_side=True)
    calling = client.wrap_bio(to_client, from_client)
    for _ in range(8):
        for side in (calling, serving):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return str(exc.reason)
        to_server.write(from_client.read())
        to_client.write(from_server.read())
    cipher = calling.cipher()
    version = calling.version()
    assert cipher is not None and version is not None
    return version, cipher[0]


def _client(*, ciphers: str | None = None, newest: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if newest is not None:
        context.maximum_version = newest
    if ciphers is not None:
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    return context


# Would fail if: the broker left the cipher list to uvicorn, whose default before 0.48
# accepted these (CBC with HMAC-SHA1; RSA key transport has no forward secrecy).
@pytest.mark.parametrize(
    "suite", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256"]
)
def test_a_tls12_suite_without_aead_is_refused(pki: PKI, suite: str) -> None:
    offered = _client(ciphers=suite, newest=ssl.TLSVersion.TLSv1_2)
    assert _handshake(_served_context(pki), offered) == "NO_SHARED_CIPHER"


def test_tls_before_12_is_refused(pki: PKI) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.1 is deprecated
        old = _client(newest=ssl.TLSVersion.TLSv1_1)
    assert isinstance(_handshake(_served_context(pki), old), str)


def test_a_modern_client_negotiates_aead(pki: PKI) -> None:
    assert _handshake(_served_context(pki), _client()) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    version, suite = _handshake(_served_context(pki), _client(newest=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and suite.startswith("ECDHE-ECDSA-") and "GCM" in suite
