"""Workload-token issuers for the attestation tests: keys generated per test, tokens
minted with real signatures (RSA, EC), and an issuer served over HTTPS on loopback with
an OIDC discovery document and a JWKS that the test can rotate or take down."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

START = 1_800_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(value: int, size: int | None = None) -> str:
    length = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"ES256": (ec.SECP256R1, "P-256", 32), "ES384": (ec.SECP384R1, "P-384", 48),
           "ES512": (ec.SECP521R1, "P-521", 66)}  # fmt: skip


@dataclass
class SigningKey:
    """One issuer key: RSA (RS*/PS*) or EC (ES*), with its kid."""

    alg: str
    kid: str
    private: Any

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None) -> SigningKey:
        if alg.startswith(("RS", "PS")):
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(_CURVES[alg][0]())
        return cls(alg, kid or uuid.uuid4().hex[:16], private)

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            out = {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
        else:
            _curve, crv, size = _CURVES[self.alg]
            numbers = public.public_numbers()
            out = {"kty": "EC", "crv": crv, "x": _int(numbers.x, size), "y": _int(numbers.y, size)}
        return {**out, "kid": self.kid, "use": "sig", "alg": self.alg, **extra}

    def sign(self, signing_input: bytes, alg: str | None = None) -> bytes:
        alg = alg or self.alg
        if alg == "none":
            return b""
        digest = _HASHES[alg[2:]]()
        if alg.startswith("RS"):
            return self.private.sign(signing_input, padding.PKCS1v15(), digest)
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return self.private.sign(signing_input, pss, digest)
        r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(digest)))
        size = _CURVES[alg][2]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64url(sign(signing_input))}"


def mint(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    """A JWT signed by ``key`` (header: alg and kid, plus ``header``; None drops one)."""
    head = {"alg": key.alg, "kid": key.kid, **header}
    head = {k: v for k, v in head.items() if v is not None}
    return compact(head, claims, lambda data: key.sign(data, head.get("alg", key.alg)))


def hs256_with_public_key(key: SigningKey, claims: dict[str, Any]) -> str:
    """The classic alg-confusion forgery: HS256 keyed with the issuer's public key bytes."""
    secret = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def sign(data: bytes) -> bytes:
        mac = hmac.HMAC(secret, hashes.SHA256())
        mac.update(data)
        return mac.finalize()

    return compact({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, claims, sign)


# --- token shapes --------------------------------------------------------------------------


def k8s_claims(
    issuer: str,
    audience: str,
    now: float,
    *,
    namespace: str = "billing",
    account: str = "agent-runner",
    pod: str | None = "runner-7d9f",
    ttl: int = 600,
    node: str = "node-1",
) -> dict[str, Any]:
    """A projected service-account token's claims (kubernetes pkg/serviceaccount)."""
    iat = int(now)
    info: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
        "node": {"name": node, "uid": str(uuid.uuid4())},
        "warnafter": iat + ttl * 8 // 10,
    }
    if pod is not None:
        info["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
    else:
        info["secret"] = {"name": f"{account}-token", "uid": str(uuid.uuid4())}
    return {
        "aud": [audience],
        "exp": iat + ttl,
        "iat": iat,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": info,
        "nbf": iat,
        "sub": f"system:serviceaccount:{namespace}:{account}",
    }


def github_claims(
    audience: str,
    now: float,
    *,
    issuer: str = "https://token.actions.githubusercontent.com",
    repository: str = "octo-org/octo-repo",
    ref: str = "refs/heads/main",
    ttl: int = 300,
) -> dict[str, Any]:
    """A GitHub Actions OIDC token's claims (its OIDC reference)."""
    iat = int(now)
    owner = repository.split("/", maxsplit=1)[0]
    return {
        "jti": str(uuid.uuid4()),
        "sub": f"repo:{repository}:ref:{ref}",
        "aud": audience,
        "ref": ref,
        "sha": "8f3c2a1d" * 5,
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": "65",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "repository_visibility": "private",
        "repository_id": "74",
        "actor_id": "12",
        "actor": "octocat",
        "workflow": "deploy",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "job_workflow_ref": f"{repository}/.github/workflows/deploy.yml@{ref}",
        "runner_environment": "github-hosted",
        "iss": issuer,
        "nbf": iat - 5,
        "exp": iat + ttl,
        "iat": iat,
    }


def svid_claims(spiffe_id: str, audience: str, now: float, ttl: int = 300) -> dict[str, Any]:
    iat = int(now)
    return {"sub": spiffe_id, "aud": [audience], "exp": iat + ttl, "iat": iat}


def spiffe_bundle(*keys: SigningKey, sequence: int = 1) -> str:
    """A SPIFFE bundle whose jwt-svid keys are ``keys``."""
    entries = [{**k.jwk(), "use": "jwt-svid"} for k in keys]
    for entry in entries:
        entry.pop("alg", None)
    return json.dumps({"keys": entries, "spiffe_sequence": sequence, "spiffe_refresh_hint": 60})


# --- an issuer served over HTTPS ----------------------------------------------------------------


@dataclass
class IssuerCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    directory: Path

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def server(self, host: str = "127.0.0.1") -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = uuid.uuid4().hex[:8]
        cert_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def make_ca(directory: Path) -> IssuerCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attestation test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuerCA(key, cert, directory)


class Served:
    """An ASGI app served by uvicorn on a free loopback port, in a thread: over HTTPS with
    ``cert``, else over plain HTTP."""

    def __init__(self, app: Any, cert: tuple[Path, Path] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.port}"
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


@dataclass
class OidcIssuer:
    """An OIDC issuer on loopback HTTPS: ``/.well-known/openid-configuration`` and
    ``/keys`` (the JWKS). ``keys`` is what the JWKS serves (rotate by changing it);
    ``up`` False makes both answer 503 (an outage); ``hits`` counts JWKS fetches."""

    ca: IssuerCA
    keys: list[SigningKey] = field(default_factory=list)
    up: bool = True
    hits: int = 0
    discovery_issuer: str | None = None  # what discovery claims, when not the truth
    served: Served | None = None

    def start(self) -> OidcIssuer:
        async def discovery(request: Request) -> Response:
            if not self.up:
                return Response(status_code=503)
            return JSONResponse(
                {
                    "issuer": self.discovery_issuer or self.url,
                    "jwks_uri": f"{self.url}/keys",
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        async def jwks(request: Request) -> Response:
            if not self.up:
                return Response(status_code=503)
            self.hits += 1
            return JSONResponse({"keys": [k.jwk() for k in self.keys]})

        app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/keys", jwks),
            ]
        )
        self.served = Served(app, self.ca.server())
        return self

    @property
    def url(self) -> str:
        if self.served is None:
            raise RuntimeError("not started")
        return self.served.url

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()
