"""``tasklease app register/update --public-key FILE``: an app's Ed25519 key for
``private_key_jwt``, from a JWK, raw base64 or PEM file, then used by the SDK's AppClient
to sign in with a client assertion against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasklease.client import AppClient, InvalidClient
from tasklease.client.testing import BrokerForTests
from tasklease.rules import jws


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerForTests]:
    # A key change dates its revocation clock_skew ahead (decision 142): the new key signs
    # in once that has passed, so a short skew keeps the wait within the SDK's retry.
    with BrokerForTests(clock_skew=1) as running:
        yield running


def run(*args: str, broker: BrokerForTests, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "200"})
    env["TASKLEASE_URL"] = broker.url
    env["TASKLEASE_ADMIN_SECRET"] = broker.admin_secret
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_public_key_files_register_update_and_remove(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    first = nacl.signing.SigningKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(first.verify_key))}
    jwk_file = tmp_path / "app.jwk"
    jwk_file.write_text(json.dumps(jwk))
    made = run(
        "app", "register", "keyed-bot", "--scope", "read:data:*",
        "--public-key", str(jwk_file), "--json", broker=broker, home=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    app = json.loads(made.stdout)
    assert app["public_key"] == jwk["x"]
    with AppClient(broker.url, app["client_id"], private_key=first) as client:
        assert client.create_launch_token("worker", ["read:data:1"])["launch_token"]

    # A PEM public key (as `openssl pkey -pubout` writes it) replaces it.
    second = Ed25519PrivateKey.generate()
    pem_file = tmp_path / "app.pem"
    pem_file.write_bytes(
        second.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    app_id = str(app["app_id"])
    updated = run(
        "app", "update", app_id, "--public-key", str(pem_file), "--json",
        broker=broker, home=tmp_path,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    raw = second.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    second_nacl = nacl.signing.SigningKey(raw)
    assert json.loads(updated.stdout)["public_key"] == jws.b64url_encode(
        bytes(second_nacl.verify_key)
    )
    with (
        AppClient(broker.url, app["client_id"], private_key=first) as client,
        pytest.raises(InvalidClient),
    ):
        client.app_token()
    with AppClient(broker.url, app["client_id"], private_key=second_nacl) as client:
        assert client.app_token()

    removed = run(
        "app", "update", app_id, "--no-public-key", "--json", broker=broker, home=tmp_path
    )
    assert removed.returncode == 0 and "public_key" not in json.loads(removed.stdout)
    with (
        AppClient(broker.url, app["client_id"], private_key=second_nacl) as client,
        pytest.raises(InvalidClient),
    ):
        client.app_token()

    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    refused = run("app", "update", app_id, "--public-key", str(bad), broker=broker, home=tmp_path)
    assert refused.returncode != 0 and "public_key" in refused.stderr
    assert "Traceback" not in refused.stderr
