# Would fail if: a trust bundle that is malformed, carries duplicate or private members,
# or comes from an endpoint that is not https, or over a certificate we do not trust, or
# from a caller who may not manage trust anchors, were accepted as a federated domain's
# trust; or if such a refusal were not audited under its denial_id.
"""TM-41 — forged, stale or rolled-back trust bundles, attacked over HTTP.

Declaring a federated domain is declaring whose keys to trust. Each attempt here to
make the broker trust keys it should not is refused, and nothing is trusted afterwards.
The rest of TM-41 (an endpoint that goes away, a sequence going back, a certificate for
another host, redirects, compression) is attacked with real HTTPS endpoints in
``tests/federation/test_trust_bundles.py``.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e_support import RunningBroker
from nacl.signing import SigningKey
from threat_support import bearer, refused

from tasklease.core.keys import jwk_thumbprint
from tasklease.rules.bundle import TrustBundle, serialize_bundle

pytestmark = pytest.mark.slow

PEER = "peer.example"


def _bundle() -> str:
    key = SigningKey.generate()
    raw = {jwk_thumbprint(bytes(key.verify_key)): bytes(key.verify_key)}
    return serialize_bundle(TrustBundle(PEER, 1, 60, raw)).decode()


def _declare(broker: RunningBroker, token: str, **body: Any) -> Any:
    return broker.post(
        "/v1/admin/federations", json={"trust_domain": PEER, **body}, headers=bearer(token)
    )


def _not_trusted(broker: RunningBroker) -> None:
    listed = broker.get("/v1/admin/federations", headers=broker.admin_headers())
    assert listed.status_code == 200, listed.text
    assert all(f["trust_domain"] != PEER for f in listed.json()["federations"])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b.replace('"keys"', '"keys": [], "keys"', 1),  # duplicate member
        lambda b: b.replace('"kty"', '"d": "c2VjcmV0", "kty"', 1),  # a private key member
        lambda b: b.replace('"spiffe_sequence":1', '"spiffe_sequence":-1'),
        lambda b: b[: len(b) // 2],  # truncated
    ],
    ids=["duplicate-keys", "private-member", "negative-sequence", "truncated"],
)
def test_a_malformed_static_bundle_is_refused(broker: RunningBroker, mangle: Any) -> None:
    good = _bundle()
    bad = mangle(good)
    assert bad != good
    resp = _declare(broker, broker.admin_token(), bundle=bad)
    refused(broker, resp, 400, "invalid_request")
    _not_trusted(broker)


def test_an_endpoint_that_is_not_https_is_refused(broker: RunningBroker) -> None:
    for url in (
        "http://peer.example/v1/federation/bundle",
        "https://user:pw@peer.example/v1/federation/bundle",
        "ftp://peer.example/bundle",
    ):
        resp = _declare(broker, broker.admin_token(), bundle_endpoint_url=url)
        refused(broker, resp, 400, "invalid_request")
    _not_trusted(broker)


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[str]:
    """An HTTPS endpoint serving a well-formed bundle under a self-signed certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    body = _bundle().encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v1/federation/bundle"
    server.shutdown()
    server.server_close()


def test_a_bundle_over_an_untrusted_certificate_is_not_trusted(
    broker: RunningBroker, impostor: str
) -> None:
    # Declared without the impostor's CA: the system store does not know it.
    resp = _declare(broker, broker.admin_token(), bundle_endpoint_url=impostor)
    assert resp.status_code in (201, 400, 502), resp.text
    if resp.status_code == 201:
        record = resp.json()
        assert record["kids"] == [] and record["sequence"] is None, record
        assert record.get("last_error"), record
        removed = broker.client.delete(
            f"/v1/admin/federations/{PEER}", headers=broker.admin_headers()
        )
        assert removed.status_code == 200, removed.text
    _not_trusted(broker)


def test_only_holders_of_the_key_scope_declare_trust(broker: RunningBroker) -> None:
    app = broker.create_app(["read:data:*"])
    for token in (broker.app_token(app), broker.operator_token("auditor")):
        resp = _declare(broker, token, bundle=_bundle())
        assert resp.status_code in (401, 403), resp.text
        assert "denial_id" in resp.json()
    agent = broker.register(["read:data:*"])
    resp = _declare(broker, agent.access_token, bundle=_bundle())
    assert resp.status_code in (401, 403), resp.text
    _not_trusted(broker)
    json.dumps(resp.json())  # a problem body, never a bundle
