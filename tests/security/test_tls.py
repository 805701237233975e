"""TLS and mTLS serving over real sockets, with certificates made by the test
(``cryptography``): a CA, a server certificate for 127.0.0.1 and two client certificates.
Tokens registered over mTLS are bound to the client certificate (RFC 8705)."""

from __future__ import annotations

import contextlib
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
from e2e_support import ADMIN_SECRET, free_port, init_data_dir
from security_support import PKI, make_pki, token_parts

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tls_broker(
    data_dir: Path,
    pki: PKI,
    mode: str,
    *,
    workers: str = "1",
    loop: str = "asyncio",
    **settings: str,
) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        TASKLEASE_DATA_DIR=str(data_dir),
        TASKLEASE_ADMIN_SECRET=ADMIN_SECRET,
        TASKLEASE_TLS_MODE=mode,
        TASKLEASE_TLS_CERT=str(pki.server_cert),
        TASKLEASE_TLS_KEY=str(pki.server_key),
        TASKLEASE_ADMIN_AUTH_BURST="1000",
        TASKLEASE_METRICS_LISTEN="127.0.0.1:0",  # never a port another broker holds
        **settings,
    )
    if mode == "mtls":  # a client CA under any other mode is refused (unused TLS material)
        env["TASKLEASE_TLS_CLIENT_CA"] = str(pki.ca_cert)
    init_data_dir(data_dir, env)
    log = data_dir / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(port), "--workers", workers,
             "--loop", loop],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(data_dir),
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            try:
                with socket_ready(port):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start: {log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def socket_ready(port: int) -> Iterator[None]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        yield


def client(url: str, pki: PKI, who: str | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if who is not None:
        cert, key = pki.clients[who]
        context.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=url, verify=context, timeout=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _register(http: httpx.Client, **extra: Any) -> dict[str, Any]:
    from e2e_support import RunningBroker

    admin = http.post("/v1/admin/auth", json={"secret": ADMIN_SECRET}).json()["access_token"]
    lt = http.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "tls", "allowed_scope": ["read:data:*"]},
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["launch_token"]
    # register_body only needs .get for the nonce: borrow it with this client.
    helper = RunningBroker.__new__(RunningBroker)
    helper.client = http
    body, _ = helper.register_body(lt, ["read:data:*"])
    resp = http.post("/v1/register", json={**body, **extra})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    data["admin"] = admin
    return data


def test_tls_mode_serves_https_with_hsts(tmp_path: Path, pki: PKI) -> None:
    with tls_broker(tmp_path, pki, "tls") as url, client(url, pki, None) as http:
        resp = http.get("/v1/health")
        assert resp.status_code == 200
        assert resp.headers["strict-transport-security"].startswith("max-age=")
        agent = _register(http)
        assert "cnf" not in token_parts(agent["access_token"])[1]  # no client cert: bearer
        with pytest.raises(httpx.ConnectError):  # a client that does not trust our CA
            httpx.get(f"{url}/v1/health", verify=ssl.create_default_context())


@pytest.mark.parametrize(("workers", "loop"), [("1", "asyncio"), ("2", "asyncio"), ("1", "uvloop")])
def test_a_handshake_never_made_is_cut_off_at_the_header_timeout(
    tmp_path: Path, pki: PKI, workers: str, loop: str
) -> None:
    # Would fail if: a connection that never starts its TLS handshake were held for
    # the loop's 60 s (it counts against no cap until its handshake is done), not for
    # http_header_timeout as a connection that sends no headers is.
    settings = {"TASKLEASE_HTTP_HEADER_TIMEOUT": "1"}
    with tls_broker(tmp_path, pki, "tls", workers=workers, loop=loop, **settings) as url:
        port = int(url.rsplit(":", 1)[1])
        with client(url, pki, None) as http:  # every worker up: health from each
            assert http.get("/v1/health").status_code == 200
        silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
        opened = time.monotonic()
        try:
            for sock in silent:
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1) == b""  # closed by the broker, nothing said
            took = time.monotonic() - opened
        finally:
            for sock in silent:
                sock.close()
        assert took < 1 + 10, f"silent handshakes were held {took:.1f} s"


def test_mtls_requires_a_client_certificate_and_binds_tokens(tmp_path: Path, pki: PKI) -> None:
    with tls_broker(tmp_path, pki, "mtls") as url:
        with client(url, pki, None) as anonymous, pytest.raises(httpx.TransportError):
            anonymous.get("/v1/health")  # the handshake itself is refused
        with client(url, pki, "alice") as alice, client(url, pki, "mallory") as mallory:
            agent = _register(alice)
            token = agent["access_token"]
            assert token_parts(token)[1]["cnf"] == {"x5t#S256": pki.thumbprints["alice"]}
            # The certificate's holder renews; the binding is kept.
            renewed = alice.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
            assert renewed.status_code == 200, renewed.text
            token = renewed.json()["access_token"]
            assert token_parts(token)[1]["cnf"] == {"x5t#S256": pki.thumbprints["alice"]}
            # The same token over another client certificate: refused and audited.
            stolen = mallory.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
            assert stolen.status_code == 401
            denial = stolen.json()["denial_id"]
            events = alice.get(
                "/v1/audit/events?outcome=denied&limit=1000",
                headers={"Authorization": f"Bearer {agent['admin']}"},
            ).json()["events"]
            hit = [e for e in events if e["detail"].endswith(f"denial={denial}")]
            assert len(hit) == 1 and "another certificate" in hit[0]["detail"]
            # Resource servers pass what they saw: the right PEM, another, or none.
            alice_pem = pki.clients["alice"][0].read_text()
            mallory_pem = pki.clients["mallory"][0].read_text()
            check = {"token": token}
            assert alice.post("/v1/token/validate", json=check).json()["valid"] is False
            assert alice.post(
                "/v1/token/validate", json={**check, "client_cert": alice_pem}
            ).json()["valid"]
            assert not alice.post(
                "/v1/token/validate", json={**check, "client_cert": mallory_pem}
            ).json()["valid"]


def _refused(data_dir: Path, pki: PKI, workers: str, **files: str) -> str:
    """Run ``serve`` with TLS files that do not load; return what it said (it must stop
    at once, naming the setting and the path, without a traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update(
        TASKLEASE_DATA_DIR=str(data_dir),
        TASKLEASE_ADMIN_SECRET=ADMIN_SECRET,
        TASKLEASE_TLS_CERT=str(pki.server_cert),
        TASKLEASE_TLS_KEY=str(pki.server_key),
        TASKLEASE_METRICS_LISTEN="off",
    )
    if files.get("TASKLEASE_TLS_MODE") == "mtls":
        env["TASKLEASE_TLS_CLIENT_CA"] = str(pki.ca_cert)
    env.update(files)
    said = subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", "serve", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--port", str(free_port()), "--workers", workers],
        capture_output=True, text=True, env=env, cwd=str(data_dir), timeout=60,
    )  # fmt: skip
    assert said.returncode == 2, said.stderr  # a configuration error, as docs/cli.md says
    assert "Traceback" not in said.stderr, said.stderr
    return " ".join(said.stderr.split())


def test_tls_files_that_do_not_load_stop_serve_with_the_setting_named(
    tmp_path: Path, pki: PKI
) -> None:
    missing = tmp_path / "nowhere.pem"
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    other_key = pki.clients[next(iter(pki.clients))][1]
    said = _refused(tmp_path, pki, "1", TASKLEASE_TLS_MODE="tls", TASKLEASE_TLS_CERT=str(missing))
    assert f"tls_cert {missing} and tls_key {pki.server_key} do not load" in said
    said = _refused(tmp_path, pki, "2", TASKLEASE_TLS_MODE="tls", TASKLEASE_TLS_KEY=str(other_key))
    assert "do not load as a certificate and its private key" in said
    said = _refused(
        tmp_path, pki, "1", TASKLEASE_TLS_MODE="mtls", TASKLEASE_TLS_CLIENT_CA=str(empty)
    )
    assert f"tls_client_ca {empty} does not load as CA certificates" in said
