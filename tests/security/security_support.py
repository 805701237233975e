"""Helpers for the zero-trust suite: in-process brokers, DPoP proofs, forged tokens, and
a certificate authority generated with ``cryptography`` for the TLS and mTLS tests."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import ADMIN_SCOPES, APP_SCOPES, KIND_ADMIN, KIND_APP, mint
from tasklease.rules import jws as _jws
from tasklease.storage import MemoryStore

START = 1_800_000_000.0
CTX = RequestContext(request_id="req-sec", remote="127.0.0.1", path="/v1/token/renew")
HTU = "https://broker.example/v1/token/renew"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_broker(**config: Any) -> Broker:
    return Broker(
        Config(**config),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def admin(broker: Broker) -> IssuedToken:
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


def app(broker: Broker, client_id: str = "de-0123456789ab") -> IssuedToken:
    cfg = broker.config
    token, claims = mint(
        broker.keyring,
        kind=KIND_APP,
        iss=cfg.issuer,
        sub="app:app-demo-abc123",
        aud=cfg.audience,
        iat=int(broker.clock.now()),
        ttl=300,
        scope=APP_SCOPES,
        client_id=client_id,
    )
    return IssuedToken(token, claims)


def launch(broker: Broker, scope: Sequence[str] = ("read:data:*",), **extra: Any) -> str:
    token, _ = broker.create_launch_token(
        admin(broker).claims,
        agent_name="sec-agent",
        allowed_scope=list(scope),
        max_ttl=extra.pop("max_ttl", None),
        single_use=extra.pop("single_use", None),
        ttl=extra.pop("ttl", None),
        ctx=CTX,
        **extra,
    )
    return token


def register(
    broker: Broker,
    scope: Sequence[str] = ("read:data:*",),
    *,
    launch_token: str | None = None,
    ctx: RequestContext = CTX,
    task_id: str | None = None,
    **extra: Any,
) -> IssuedToken:
    launch_token = launch_token or launch(broker, scope)
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    return broker.register(
        launch_token=launch_token,
        nonce=nonce,
        public_key=b64(bytes(key.verify_key)),
        signature=b64(key.sign(bytes.fromhex(nonce)).signature),
        orch_id="orch-sec",
        task_id=task_id or f"task-{secrets.token_hex(4)}",
        requested_scope=list(scope),
        ctx=ctx,
        **extra,
    )


def dpop_proof(
    key: SigningKey,
    *,
    htm: str = "POST",
    htu: str = HTU,
    iat: float = START,
    token: str | None = None,
    jti: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """An RFC 9449 proof signed by ``key`` (Ed25519)."""
    head = header or {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(key.verify_key))},
    }
    claims: dict[str, Any] = {"jti": jti or secrets.token_hex(12), "htm": htm, "htu": htu}
    claims["iat"] = int(iat)
    if token is not None:
        claims["ath"] = b64url(__import__("hashlib").sha256(token.encode()).digest())
    signing_input = (
        b64url(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode()).signature
    return signing_input + "." + b64url(signature)


def forge(header: dict[str, Any], payload: dict[str, Any], key: SigningKey | None) -> str:
    """A compact JWS with any header, signed by ``key`` (or with an empty signature)."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode()).signature if key else b""
    return signing_input + "." + b64url(signature)


def token_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(_jws.b64url_decode(header)), json.loads(_jws.b64url_decode(payload))


# --- a private PKI for TLS tests ----------------------------------------------------------


@dataclass
class PKI:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (cert, key)
    thumbprints: dict[str, str]  # name -> x5t#S256


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path, clients: Sequence[str] = ("alice", "mallory")) -> PKI:
    """A CA, a server certificate for 127.0.0.1 and one client certificate per name."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("tasklease test CA"))
        .issuer_name(_name("tasklease test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
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
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(common_name: str, *, server: bool) -> tuple[Path, Path, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = directory / f"{common_name}.pem"
        key_path = directory / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path, cert

    server_cert, server_key, _ = leaf("server", server=True)
    client_files: dict[str, tuple[Path, Path]] = {}
    thumbprints: dict[str, str] = {}
    for name in clients:
        cert_path, key_path, cert = leaf(name, server=False)
        client_files[name] = (cert_path, key_path)
        der = cert.public_bytes(serialization.Encoding.DER)
        thumbprints[name] = b64url(__import__("hashlib").sha256(der).digest())
    return PKI(directory, ca_path, server_cert, server_key, client_files, thumbprints)
