"""The ``tasklease`` command against a broker with ``tls_mode = "mtls"``, over real TLS on
loopback: it presents a client certificate given by ``--client-cert``/``--client-key``,
their variables or the profile; the key is a secret file; and without a certificate the
broker's unanswered close comes with a hint that says how to give one.

The broker asks every connection for a certificate its ``tls_client_ca`` issued; the
CLI had no way to present one, so it could not reach such a broker at all
("Server disconnected without sending a response", exit 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_runner import CliRunner
from cryptography.hazmat.primitives import serialization

from tasklease.cli.main import app
from tasklease.client._holder import default_ssl_context, ssl_context
from tasklease.client.testing import BrokerForTests

_SECURITY = str(Path(__file__).resolve().parents[1] / "security")
if _SECURITY not in sys.path:
    sys.path.insert(0, _SECURITY)

from security_support import PKI, make_pki  # noqa: E402

_RUNNER = CliRunner()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"), clients=("operator",))


@pytest.fixture(scope="module")
def broker(pki: PKI) -> Iterator[BrokerForTests]:
    context = ssl_context(pki.clients["operator"], str(pki.ca_cert))
    with BrokerForTests(
        tls_mode="mtls",
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca_cert),
        admin_transport=httpx.HTTPTransport(verify=context),
    ) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    # The SDK's clients share one context made from the default trust when first needed
    # (default_ssl_context): made afresh here, it trusts SSL_CERT_FILE, the test's CA.
    default_ssl_context.cache_clear()
    yield tmp_path
    default_ssl_context.cache_clear()


def run(*args: str, home: Path, pki: PKI, **env: str) -> subprocess.CompletedProcess[str]:
    full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    full.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        COLUMNS="200",
        SSL_CERT_FILE=str(pki.ca_cert),
    )
    full.update(env)
    done = _RUNNER.invoke(app, list(args), env=full, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), done.exit_code, done.stdout, done.stderr)


def flags(pki: PKI) -> list[str]:
    cert, key = pki.clients["operator"]
    return ["--client-cert", str(cert), "--client-key", str(key)]


# Would fail if: the CLI presented no certificate (it had no way to): the broker closes
# the connection, exit 4 "Server disconnected without sending a response".
def test_the_cli_presents_a_client_certificate_by_flag_variable_or_profile(
    broker: BrokerForTests, pki: PKI, home: Path
) -> None:
    by_flag = run(
        *flags(pki), "status", "--json", "--url", broker.url, home=home, pki=pki,
        TASKLEASE_ADMIN_SECRET=broker.admin_secret,
    )  # fmt: skip
    assert by_flag.returncode == 0, by_flag.stderr
    assert json.loads(by_flag.stdout)["signing_kid"]  # signed in: the admin's view

    cert, key = pki.clients["operator"]
    by_env = run(
        "app", "list", "--json", home=home, pki=pki,
        TASKLEASE_URL=broker.url, TASKLEASE_ADMIN_SECRET=broker.admin_secret,
        TASKLEASE_CLIENT_CERT=str(cert), TASKLEASE_CLIENT_KEY=str(key),
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr

    profile = home / "profile.toml"
    profile.write_text(
        f'url = "{broker.url}"\nadmin_secret = "{broker.admin_secret}"\n'
        f'client_cert = "{cert}"\nclient_key = "{key}"\n'
    )
    profile.chmod(0o600)
    by_profile = run("status", "--json", "--profile", str(profile), home=home, pki=pki)
    assert by_profile.returncode == 0, by_profile.stderr
    assert json.loads(by_profile.stdout)["signing_kid"]


# Would fail if: a connection the broker closed for want of a certificate were only
# "Server disconnected without sending a response", with nothing on how to give one.
def test_without_a_certificate_the_error_says_how_to_present_one(
    broker: BrokerForTests, pki: PKI, home: Path
) -> None:
    done = run(
        "status", "--url", broker.url, home=home, pki=pki,
        TASKLEASE_ADMIN_SECRET=broker.admin_secret,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert 'tls_mode = "mtls"' in done.stderr and "--client-cert FILE --client-key FILE" in (
        done.stderr
    )
    assert "TASKLEASE_CLIENT_CERT" in done.stderr and "client_cert" in done.stderr

    # A certificate of another CA: the broker closes the connection the same way.
    (home / "other").mkdir()
    other = make_pki(home / "other", clients=("stranger",))
    cert, key = other.clients["stranger"]
    foreign = run(
        "--client-cert", str(cert), "--client-key", str(key), "status", "--url", broker.url,
        home=home, pki=pki, TASKLEASE_ADMIN_SECRET=broker.admin_secret,
    )  # fmt: skip
    assert foreign.returncode == 4, foreign.stderr
    assert "tls_client_ca did not issue" in foreign.stderr and str(cert) in foreign.stderr


# Would fail if: the key were read without the CLI's secret-file rules (open to others,
# a link), or a certificate without its key were sent as a TLS client with none.
def test_the_client_key_is_a_secret_file_and_goes_with_its_certificate(
    broker: BrokerForTests, pki: PKI, home: Path
) -> None:
    cert, key = pki.clients["operator"]
    base = ("status", "--url", broker.url)
    alone = run("--client-cert", str(cert), *base, home=home, pki=pki)
    assert alone.returncode == 2 and "without its private key" in alone.stderr, alone.stderr
    orphan = run("--client-key", str(key), *base, home=home, pki=pki)
    assert orphan.returncode == 2 and "without its certificate" in orphan.stderr

    shared = home / "shared.key"
    shared.write_bytes(key.read_bytes())
    shared.chmod(0o644)
    opened = run("--client-cert", str(cert), "--client-key", str(shared), *base, home=home, pki=pki)
    assert opened.returncode == 2 and "accessible by group or others" in opened.stderr

    link = home / "link.key"
    link.symlink_to(key)
    linked = run("--client-cert", str(cert), "--client-key", str(link), *base, home=home, pki=pki)
    assert linked.returncode == 2 and "link.key" in linked.stderr, linked.stderr

    locked = home / "locked.key"
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    locked.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    locked.chmod(0o600)
    encrypted = run(
        "--client-cert", str(cert), "--client-key", str(locked), *base, home=home, pki=pki
    )
    assert encrypted.returncode == 2 and "is encrypted" in encrypted.stderr, encrypted.stderr

    mismatched = run("--client-cert", str(cert), "--client-key", str(pki.server_key), *base,
                     home=home, pki=pki)  # fmt: skip
    assert mismatched.returncode == 2 and "do not load" in mismatched.stderr


# Would fail if: `tasklease login`, or a command using its cached session, or `token
# inspect` (which fetches the broker's keys) connected without the certificate.
def test_login_and_its_cached_session_work_over_mtls(
    broker: BrokerForTests, pki: PKI, home: Path
) -> None:
    logged = run(
        *flags(pki), "login", "--url", broker.url, home=home, pki=pki,
        TASKLEASE_ADMIN_SECRET=broker.admin_secret,
    )  # fmt: skip
    assert logged.returncode == 0, logged.stderr
    (session,) = (home / ".config" / "tasklease" / "sessions").glob("*.json")
    token = json.loads(session.read_text())["access_token"]

    cached = run(*flags(pki), "app", "list", "--json", "--url", broker.url, home=home, pki=pki)
    assert cached.returncode == 0, cached.stderr  # no secret given: the session served

    inspected = run(*flags(pki), "token", "inspect", token, "--url", broker.url, "--json",
                    home=home, pki=pki)  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert "signature" in inspected.stdout


# Would fail if: `serve` (or `doctor`) refused the CLI's variables as settings it does not
# know, in a shell that exports them for the CLI.
def test_the_certificate_variables_are_not_taken_for_broker_settings(tmp_path: Path) -> None:
    from tasklease.settings import load_config

    env = {
        "TASKLEASE_DATA_DIR": str(tmp_path),
        "TASKLEASE_CLIENT_CERT": "op.crt",
        "TASKLEASE_CLIENT_KEY": "op.key",
    }
    assert load_config(None, env=env).tls_mode == "none"
