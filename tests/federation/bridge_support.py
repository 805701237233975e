"""Support for the bridge tests: brokers of different trust domains as separate
``tasklease serve`` processes on loopback, each over HTTPS with a certificate from one
test CA, driven through the CLI and HTTP as their operators and agents would."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bundle_support import CA
from e2e_support import (
    Agent,
    RunningBroker,
    jwt_parts,
    launch_broker,
    run_cli,
    stop_broker,
)

__all__ = [
    "ACCESS",
    "GRANT",
    "Peer",
    "exchange",
    "start_peer",
    "stop_peer",
    "wait_until",
]

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
BIN = str(Path(sys.executable).parent)


@dataclass
class Peer:
    """A broker process of one trust domain, and how to reach it."""

    trust_domain: str
    running: RunningBroker
    ca: CA
    home: Path

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def http(self) -> httpx.Client:
        return self.running.client

    def env(self) -> dict[str, str]:
        """The environment of an operator's shell for this broker (the CLI trusts the CA)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
        env.update(
            {
                "HOME": str(self.home),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "COLUMNS": "200",
                "PATH": f"{BIN}:{env.get('PATH', '')}",
                "SSL_CERT_FILE": str(self.ca.path),
                "TASKLEASE_URL": self.url,
                "TASKLEASE_ADMIN_SECRET": self.running.admin_secret,
            }
        )
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The operator's ``tasklease *args``, run in this process (:func:`run_cli`)."""
        done = run_cli(list(args), self.env())
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done

    def register(self, scope: list[str], task_id: str) -> Agent:
        return self.running.register(scope, task_id=task_id, single_use=False, ttl=600)

    def valid(self, token: str) -> bool:
        return self.running.is_valid(token)

    def narrow(self, token: str, **params: str) -> dict[str, Any]:
        """The holder narrows its own token (RFC 8693, no actor)."""
        return exchange(self, token, **params)

    def for_domain(self, token: str, peer: Peer, **params: str) -> str:
        """The holder of ``token`` narrows it to ``peer``'s trust domain as its audience."""
        audience = f"spiffe://{peer.trust_domain}"
        return str(self.narrow(token, audience=audience, **params)["access_token"])


def exchange(
    peer: Peer, subject: str, actor: str | None = None, *, expect: int = 200, **params: str
) -> dict[str, Any]:
    """``POST /v1/oauth/token`` as an OAuth client sends it (a form)."""
    form = {"grant_type": GRANT, "subject_token": subject, "subject_token_type": ACCESS}
    if actor is not None:
        form.update(actor_token=actor, actor_token_type=ACCESS)
    form.update(params)
    response = peer.http.post("/v1/oauth/token", data=form)
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    if expect == 200:
        assert response.headers["cache-control"] == "no-store"
        assert body["issued_token_type"] == ACCESS
    else:
        assert body["error"] and body["denial_id"].startswith("den_"), body
    return body


def start_peer(base: Path, trust_domain: str, ca: CA, env: dict[str, str] | None = None) -> Peer:
    """``tasklease serve`` for ``trust_domain`` over HTTPS on a free loopback port."""
    data_dir = base / trust_domain
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = base / f"{trust_domain}-home"
    home.mkdir(exist_ok=True)
    cert, key = ca.server("127.0.0.1", "localhost", label=trust_domain)
    settings = {
        "TASKLEASE_ADMIN_AUTH_BURST": "1000",
        "TASKLEASE_APP_AUTH_BURST": "1000",
        "TASKLEASE_TRUST_DOMAIN": trust_domain,
        "TASKLEASE_ISSUER": f"https://{trust_domain}",
        "TASKLEASE_TLS_MODE": "tls",
        "TASKLEASE_TLS_CERT": str(cert),
        "TASKLEASE_TLS_KEY": str(key),
        "TASKLEASE_FEDERATION_REFRESH_HINT": "1",
        "SSL_CERT_FILE": str(ca.path),
        **(env or {}),
    }
    tls = ssl.create_default_context(cafile=str(ca.path))
    running = launch_broker(data_dir, settings, tls=tls)
    return Peer(trust_domain, running, ca, home)


def stop_peer(peer: Peer) -> int:
    return stop_broker(peer.running)


def wait_until(check: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        time.sleep(step)


def claims(token: str) -> dict[str, Any]:
    return jwt_parts(token)[1]


def dump(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    path.chmod(0o600)
    return path
