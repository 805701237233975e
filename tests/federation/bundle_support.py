"""Support for the trust-bundle tests: a test CA made with ``cryptography``, HTTPS servers
on loopback (uvicorn in a thread), and in-process brokers on a manual clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import Clock, ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.http.app import create_app
from tasklease.storage import MemoryStore

START = 1_800_000_000.0
CTX = RequestContext(request_id="req-fed", remote="127.0.0.1", path="/v1/test")


@dataclass
class CA:
    """A certificate authority of the test, and where its certificate is written."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    directory: Path

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def path(self) -> Path:
        path = self.directory / f"{self.name}.pem"
        if not path.exists():
            path.write_text(self.pem)
        return path

    @property
    def name(self) -> str:
        value = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return str(value).replace(" ", "-")

    def server(self, *names: str, label: str = "server") -> tuple[Path, Path]:
        """A server certificate and key for ``names`` (IP addresses or DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(label))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = f"{self.name}-{label}-{x509.random_serial_number() % 10**6}"
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory: Path, name: str = "federation test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert, directory)


class Served:
    """An ASGI app served by uvicorn over HTTPS (or HTTP without a certificate) on a free
    loopback port, in a thread of this process."""

    def __init__(self, app: Any, cert: tuple[Path, Path] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if cert else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        tls: dict[str, Any] = {}
        if cert is not None:
            tls = {"ssl_certfile": str(cert[0]), "ssl_keyfile": str(cert[1])}
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def make_broker(trust_domain: str, *, clock: Clock | None = None, **config: Any) -> Broker:
    """An in-process broker of ``trust_domain`` on a memory store."""
    return Broker(
        Config(trust_domain=trust_domain, issuer=f"https://{trust_domain}", **config),
        MemoryStore(),
        KeyRing.generate(),
        clock=clock or ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def serve_broker(broker: Broker, cert: tuple[Path, Path] | None = None) -> Served:
    return Served(create_app(broker, background=False), cert)


def admin(broker: Broker) -> IssuedToken:
    """An admin token minted as ``admin_auth`` would (no argon2 in these tests)."""
    cfg = broker.config
    token, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="admin",
        aud=cfg.audience,
        iat=int(broker.clock.now()),
        ttl=300,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    return IssuedToken(token, claims)


def trickling_app() -> Starlette:
    """A bundle endpoint that sends a byte every half second for a minute: each read is
    quick, the whole answer is not."""

    async def trickle(_request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(120):
                yield b" "
                await asyncio.sleep(0.5)

        return StreamingResponse(body(), media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", trickle)])


class Document:
    """A bundle endpoint that serves whatever the test sets (for forged bundles)."""

    def __init__(
        self, body: bytes = b"", status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ):
        self.body = body
        self.status = status
        self.headers = dict(headers)
        self.hits = 0

    def app(self) -> Starlette:
        async def serve(request: Request) -> Response:
            self.hits += 1
            return Response(
                self.body, self.status, headers=self.headers, media_type="application/json"
            )

        return Starlette(routes=[Route("/{path:path}", serve)])


def client_context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem)


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        time.sleep(0.05)
