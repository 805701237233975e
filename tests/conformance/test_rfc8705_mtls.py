"""RFC 8705: OAuth 2.0 Mutual-TLS Client Authentication and Certificate-Bound Access Tokens.

A broker serving mTLS on loopback with certificates made by the test (a CA, a server
certificate and two client certificates): tokens registered over mTLS are bound to the
client certificate, and refused over another.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conformance_support import BROKER_ENV, parts, www_authenticate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from e2e_support import ADMIN_SECRET, RunningBroker, free_port, init_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from security_support import PKI, make_pki  # noqa: E402

NOT_APPLICABLE = {
    "s2 mutual-TLS client authentication at a token endpoint": "apps authenticate with "
    "client secrets or assertions; mTLS here binds agent and app tokens (section 3)",
    "s3_2 certificate-bound tokens by introspection": "covered by RFC 7662 introspection, "
    "which reports cnf for the resource server to compare",
}


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PKI]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    data_dir = tmp_path_factory.mktemp("mtls-broker")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(BROKER_ENV)
    env.update(
        TASKLEASE_DATA_DIR=str(data_dir),
        TASKLEASE_ADMIN_SECRET=ADMIN_SECRET,
        TASKLEASE_TLS_MODE="mtls",
        TASKLEASE_TLS_CERT=str(pki.server_cert),
        TASKLEASE_TLS_KEY=str(pki.server_key),
        TASKLEASE_TLS_CLIENT_CA=str(pki.ca_cert),
        TASKLEASE_METRICS_LISTEN="127.0.0.1:0",
    )
    init_data_dir(data_dir, env)
    with open(data_dir / "broker.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(data_dir),
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError((data_dir / "broker.log").read_text())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"https://127.0.0.1:{port}", pki
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client(url: str, pki: PKI, who: str) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    cert, key = pki.clients[who]
    context.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=url, verify=context, timeout=10)


def _register(http: httpx.Client) -> str:
    admin = http.post("/v1/admin/auth", json={"secret": ADMIN_SECRET}).json()["access_token"]
    launch = http.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "mtls", "allowed_scope": ["read:data:42"]},
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["launch_token"]
    helper = RunningBroker.__new__(RunningBroker)
    helper.client = http
    body, _ = helper.register_body(launch, ["read:data:42"])
    answer = http.post("/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _x5t(pem_path: Path) -> str:
    der = x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def test_rfc8705_s3_1_cnf_x5t_s256_is_the_certificates_thumbprint(
    mtls: tuple[str, PKI],
) -> None:
    """§3.1: the token's `cnf` is `x5t#S256`, base64url SHA-256 of the DER certificate."""
    url, pki = mtls
    with _client(url, pki, "alice") as alice:
        token = _register(alice)
    assert parts(token)[1]["cnf"] == {"x5t#S256": _x5t(pki.clients["alice"][0])}


def test_rfc8705_s3_a_bound_token_over_another_certificate_is_invalid_token(
    mtls: tuple[str, PKI],
) -> None:
    """§3: the protected resource compares the certificate of the connection with `cnf`;
    a mismatch is 401 `invalid_token`."""
    url, pki = mtls
    with _client(url, pki, "alice") as alice, _client(url, pki, "mallory") as mallory:
        token = _register(alice)
        bearer = {"Authorization": f"Bearer {token}"}
        stolen = mallory.post("/v1/token/renew", headers=bearer)
        assert stolen.status_code == 401
        assert www_authenticate(stolen)["Bearer"]["error"] == "invalid_token"
        assert alice.post("/v1/token/renew", headers=bearer).status_code == 200


def test_rfc8705_s3_resource_servers_present_what_they_saw(mtls: tuple[str, PKI]) -> None:
    """§3: a resource server checking the token at the broker presents its connection's
    certificate: only the bound one validates."""
    url, pki = mtls
    with _client(url, pki, "alice") as alice:
        token = _register(alice)
        check: dict[str, Any] = {"token": token}
        assert alice.post("/v1/token/validate", json=check).json()["valid"] is False
        for who, valid in (("alice", True), ("mallory", False)):
            pem = pki.clients[who][0].read_text()
            answer = alice.post("/v1/token/validate", json={**check, "client_cert": pem})
            assert answer.json()["valid"] is valid, who


COUNTED = {
    "type": "resource_access",
    "actions": ["read"],
    "locations": ["https://rs.example/"],
    "limits": {"max_calls": 2},
}


def test_rfc8705_s3_app_tokens_and_counted_calls_are_held_to_the_certificate(
    mtls: tuple[str, PKI],
) -> None:
    """§3 for apps: client credentials over mTLS give an app token bound to the client
    certificate (the metadata's `tls_client_certificate_bound_access_tokens`), usable over
    that certificate only. And a certificate-bound agent token's calls are counted only for
    an authenticated resource server: whoever holds the token can name its thumbprint."""
    url, pki = mtls
    with _client(url, pki, "alice") as alice, _client(url, pki, "mallory") as mallory:
        admin = alice.post("/v1/admin/auth", json={"secret": ADMIN_SECRET}).json()
        app = alice.post(
            "/v1/admin/apps",
            json={"name": "rs-mtls", "authorization_details": [COUNTED]},
            headers={"Authorization": f"Bearer {admin['access_token']}"},
        ).json()
        signed_in = alice.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(app["client_id"], app["client_secret"]),
        )
        assert signed_in.status_code == 200, signed_in.text
        app_token = signed_in.json()["access_token"]
        assert parts(app_token)[1]["cnf"] == {"x5t#S256": _x5t(pki.clients["alice"][0])}
        as_app = {"Authorization": f"Bearer {app_token}"}
        ask = {"agent_name": "counted", "authorization_details": [COUNTED]}
        assert mallory.post("/v1/app/launch-tokens", json=ask, headers=as_app).status_code == 401
        launched = alice.post("/v1/app/launch-tokens", json=ask, headers=as_app)
        assert launched.status_code == 201, launched.text
        helper = RunningBroker.__new__(RunningBroker)
        helper.client = alice
        body, _ = helper.register_body(launched.json()["launch_token"], [])
        registered = alice.post("/v1/register", json={**body, "authorization_details": [COUNTED]})
        assert registered.status_code == 200, registered.text
        agent_token = registered.json()["access_token"]
        call = {
            "token": agent_token,
            "type": "resource_access",
            "action": "read",
            "location": "https://rs.example/x",
            "client_cert_thumbprint": parts(agent_token)[1]["cnf"]["x5t#S256"],
        }
        stolen = mallory.post("/v1/token/calls", json=call)
        assert stolen.status_code == 401 and stolen.json()["denial_id"], stolen.text
        counted = alice.post("/v1/token/calls", json=call, headers=as_app)
        assert counted.status_code == 200, counted.text
        assert counted.json()["remaining"] == 1
