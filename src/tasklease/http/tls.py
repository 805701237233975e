"""TLS and mutual TLS serving, and the client certificate in the ASGI scope.

uvicorn terminates TLS but does not put the peer certificate in the scope. With
``tls_mode = "mtls"`` the broker runs uvicorn with a protocol built on
:class:`TLSScopeMixin` (:class:`MTLSHttpToolsProtocol`, or the server's own subclass of
uvicorn's httptools protocol with the mixin in front), which reads the verified client
certificate once
per connection and adds it to every request's scope as the ASGI TLS extension
(``scope["extensions"]["tls"]``, asgiref "TLS Extension"): ``client_cert_chain`` (PEM)
plus our precomputed ``x5t#S256`` thumbprint (RFC 8705 section 3.1). The certificate comes
from the TLS connection only; no request header can supply or override it.

``tls``: server certificate only (clients verify us). ``mtls``: in addition the client
must present a certificate issued by ``tls_client_ca`` (``CERT_REQUIRED``: the handshake
fails otherwise), and agents registering over it get certificate-bound tokens.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tasklease.core.config import Config
from tasklease.localfiles import check_regular
from tasklease.rules.binding import cert_thumbprint

__all__ = [
    "THUMBPRINT_KEY",
    "TLS12_CIPHERS",
    "HandshakeBoundServer",
    "MTLSHttpToolsProtocol",
    "TLSFileError",
    "TLSScopeMixin",
    "check_tls_files",
    "peer_cert_thumbprint",
    "uvicorn_tls_options",
]

THUMBPRINT_KEY = "x5t#S256"

# The TLS 1.2 cipher suites served: forward-secret key agreement and AEAD only (TLS 1.3's
# suites are all of that kind and are not set by this string). Given to uvicorn rather
# than left to it: before 0.48 its default cipher string was "TLSv1", every TLS 1.0 suite,
# which left TLS 1.2 clients with CBC and HMAC-SHA1 only.
TLS12_CIPHERS = "@SECLEVEL=2:ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


class TLSFileError(ValueError):
    """A TLS file of the configuration that does not load: a configuration error (``serve``
    exits 2, as for any other), named with its setting and path, never its contents."""


def _tls_extension(transport: Any) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    extension: dict[str, Any] = {
        "tls_version": None,
        "cipher_suite": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        THUMBPRINT_KEY: "",
    }
    if der:
        extension["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
        extension[THUMBPRINT_KEY] = cert_thumbprint(der)
    return extension


class TLSScopeMixin(HttpToolsProtocol):
    """Put in front of an httptools protocol: adds the TLS extension to every scope.

    The certificate is read from the transport before the base class sees it (a base may
    wrap the transport), once per connection.
    """

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: Any) -> None:
        self._tls = _tls_extension(transport)
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            extensions: dict[str, Any] = dict(self.scope.get("extensions") or {})
            extensions["tls"] = self._tls
            self.scope["extensions"] = extensions


class MTLSHttpToolsProtocol(TLSScopeMixin, HttpToolsProtocol):
    """uvicorn's httptools protocol with the TLS extension."""


def peer_cert_thumbprint(scope: Mapping[str, Any]) -> str:
    """The ``x5t#S256`` of the verified client certificate of this request, or ``""``."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return ""
    value = tls.get(THUMBPRINT_KEY, "")
    return value if isinstance(value, str) else ""


def uvicorn_tls_options(config: Config) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that implement ``config.tls_mode``.

    In ``mtls`` mode the caller must also pass an ``http`` protocol class built on
    :class:`TLSScopeMixin`, or no token is ever bound to a certificate.

    Raises:
        TLSFileError: a TLS file does not load (:func:`check_tls_files`).
    """
    if config.tls_mode == "none":
        return {}
    check_tls_files(config)
    options: dict[str, Any] = {
        "ssl_certfile": config.tls_cert,
        "ssl_keyfile": config.tls_key,
        "ssl_ciphers": TLS12_CIPHERS,
    }
    if config.tls_mode == "mtls":
        options["ssl_ca_certs"] = config.tls_client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def check_tls_files(config: Config) -> None:
    """Load the TLS files once, before anything starts, so that a missing, unreadable,
    malformed or mismatched one stops ``serve`` with the setting and path named, not with
    a traceback from each worker (never the files' contents).

    Raises:
        TLSFileError: a file that does not load.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # OpenSSL opens them by name and would wait for ever on a named pipe.
        check_regular(config.tls_cert)
        check_regular(config.tls_key)
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFileError(
            f"tls_cert {config.tls_cert} and tls_key {config.tls_key} do not load as a "
            f"certificate and its private key: {_why(exc)}"
        ) from None
    if config.tls_mode == "mtls":
        try:
            check_regular(config.tls_client_ca)
            context.load_verify_locations(cafile=config.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFileError(
                f"tls_client_ca {config.tls_client_ca} does not load as CA certificates: "
                f"{_why(exc)}"
            ) from None


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


class HandshakeBoundServer(uvicorn.Server):
    """uvicorn's server, with each TLS handshake bounded by ``handshake_timeout`` seconds
    (the broker's ``http_header_timeout``) instead of the loop's 60.

    A connection counts against ``http_max_connections`` and its share per client, and its
    header deadline starts, once its handshake is done: until then it is the loop's alone.
    A client that opens connections and never finishes their handshakes held each one a
    minute; now as long as it could hold a connection that sends no headers, on asyncio's
    loop and on uvloop's alike.
    """

    def __init__(self, config: uvicorn.Config, *, handshake_timeout: float) -> None:
        super().__init__(config)
        self.handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if self.config.is_ssl:
            # uvicorn calls loop.create_server without the setting (which every event loop
            # takes, asyncio's and uvloop's): give it, for this loop.
            loop.create_server = functools.partial(  # type: ignore[method-assign]
                loop.create_server, ssl_handshake_timeout=self.handshake_timeout
            )
        await super().startup(sockets)
