"""A DPoP proof's ``htu`` must name this broker, never whatever ``Host`` the client sent.

Before, the expected ``htu`` was built from the request's ``Host`` header: a proof minted
for another server (same path) was accepted by sending that server's name as ``Host``.
The expected origin is now ``public_url`` or, when unset, the address the server listens on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import RunningBroker, launch_broker, stop_broker
from nacl.signing import SigningKey
from security_support import dpop_proof, token_parts

from tasklease.core.config import Config
from tasklease.settings import ConfigError, load_config

pytestmark = pytest.mark.slow

SCOPE = ["read:data:*"]
PUBLIC = "https://broker.example.com"
ALSO_PUBLIC = "https://tasklease.internal.example:8443"
ELSEWHERE = "https://evil.example"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("edge-htu-local"))
    yield running
    stop_broker(running)


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(
        tmp_path_factory.mktemp("edge-htu-public"),
        {"TASKLEASE_PUBLIC_URL": f"{PUBLIC}, {ALSO_PUBLIC}/"},
    )
    yield running
    stop_broker(running)


def _register(
    broker: RunningBroker, key: SigningKey, htu: str, host: str | None = None
) -> tuple[int, str]:
    body, _ = broker.register_body(broker.launch_token(SCOPE), SCOPE)
    headers = {"DPoP": dpop_proof(key, htu=htu, iat=time.time())}
    if host is not None:
        headers["Host"] = host
    resp = broker.post("/v1/register", json=body, headers=headers)
    token = resp.json().get("access_token", "") if resp.status_code == 200 else ""
    return resp.status_code, token


def _renew(
    broker: RunningBroker, key: SigningKey, token: str, htu: str, host: str | None = None
) -> int:
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": dpop_proof(key, htu=htu, iat=time.time(), token=token),
    }
    if host is not None:
        headers["Host"] = host
    return broker.post("/v1/token/renew", headers=headers).status_code


def test_a_proof_for_another_host_is_refused_whatever_the_host_header(
    local: RunningBroker,
) -> None:
    key = SigningKey.generate()
    # A refused proof at registration is RFC 9449 section 5's invalid_dpop_proof (400).
    status, _ = _register(local, key, f"{ELSEWHERE}/v1/register", host="evil.example")
    assert status == 400
    status, _ = _register(local, key, "http://localhost:1/v1/register", host="localhost:1")
    assert status == 400
    # The broker's own address is what a proof must name.
    status, token = _register(local, key, f"{local.url}/v1/register")
    assert status == 200
    assert "jkt" in token_parts(token)[1]["cnf"]
    assert _renew(local, key, token, f"{ELSEWHERE}/v1/token/renew", host="evil.example") == 401
    assert _renew(local, key, token, f"{local.url}/v1/token/renew") == 200


def test_the_host_header_does_not_change_the_expected_origin(local: RunningBroker) -> None:
    # A proof for the broker's own address with a forged Host: still the broker's origin.
    key = SigningKey.generate()
    status, _ = _register(local, key, f"{local.url}/v1/register", host="evil.example")
    assert status == 200


def test_public_url_is_the_origin_proofs_must_name(public: RunningBroker) -> None:
    key = SigningKey.generate()
    # The connection is plain HTTP on loopback; the proof names the public origin.
    status, token = _register(public, key, f"{PUBLIC}/v1/register")
    assert status == 200, token
    assert _renew(public, key, token, f"{PUBLIC}/v1/token/renew") == 200
    # The second public origin as well (default port and case normalized).
    status, _ = _register(public, key, "HTTPS://Tasklease.Internal.Example:8443/v1/register")
    assert status == 200
    # Not the address it listens on, once public_url is set...
    status, _ = _register(public, key, f"{public.url}/v1/register")
    assert status == 400  # invalid_dpop_proof (RFC 9449 section 5)
    # ...and never another host, Host header or not.
    status, _ = _register(public, key, f"{ELSEWHERE}/v1/register", host="evil.example")
    assert status == 400
    status, _ = _register(public, key, f"{PUBLIC}/v1/token/renew")  # wrong path
    assert status == 400
    status, _ = _register(public, key, "http://broker.example.com/v1/register")  # scheme
    assert status == 400


def test_public_url_setting(tmp_path: Path) -> None:
    env = {
        "TASKLEASE_DATA_DIR": str(tmp_path),
        "TASKLEASE_PUBLIC_URL": "https://a.example, http://b.example:8080/",
    }
    assert load_config(env=env).public_url == ("https://a.example", "http://b.example:8080/")
    assert Config().public_url == ()
    for bad in (
        "broker.example.com",
        "ftp://broker.example.com",
        "https://",
        "https://broker.example.com/prefix",
        "https://broker.example.com?x=1",
        "https://broker.example.com#f",
        "https://user@broker.example.com",
        "https://broker.example.com:99999",
        "",
    ):
        with pytest.raises(ValueError, match="public_url"):
            Config(public_url=(bad,))
    config = tmp_path / "c.toml"
    config.write_text('public_url = ["broker.example.com"]\n')
    with pytest.raises(ConfigError, match="public_url"):
        load_config(str(config), env={"TASKLEASE_DATA_DIR": str(tmp_path)})
