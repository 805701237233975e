"""Helpers for the end-to-end suite: set up a data directory (``tasklease init``), start
and stop a real ``tasklease serve`` process, and drive the admin/app/agent ceremonies
against it over loopback HTTP.

Named ``e2e_support`` (not ``conftest``) so test modules can import it unambiguously.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
TASKLEASE = str(VENV_BIN / "tasklease") if (VENV_BIN / "tasklease").exists() else "tasklease"
ADMIN_SECRET = "e2e-admin-secret-" + "x" * 16
STARTUP_TIMEOUT = 20.0
HEX64 = set("0123456789abcdef")

# Generous defaults for the shared broker: every test authenticates from 127.0.0.1.
SHARED_ENV = {
    "TASKLEASE_ADMIN_AUTH_BURST": "1000",
    "TASKLEASE_APP_AUTH_BURST": "1000",
}


def b64(data: bytes) -> str:
    """Standard base64 with padding (the AgentWrit wire encoding for keys and signatures)."""
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, unverified (for tests only)."""
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= HEX64


_PORT_BASE = 10000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _own_ports() -> list[int]:
    """This test process's block of ports, below the kernel's ephemeral range, in turn
    from a random place in it.

    A port the kernel hands out (a ``bind`` to port 0, the local end of an outgoing
    connection) comes from its ephemeral range, so a port picked there can be taken again
    before the server it was picked for binds it: by any connection the suite opens. Ports
    below that range are never handed out. The room between ``_PORT_BASE`` and the range
    is shared out between the serial pass and each xdist worker, so two test processes
    of a run never pick the same port; starting at a random place keeps two runs on one
    host from going through the same ports in the same order. Empty (the kernel picks)
    where the range leaves no room.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    processes = max(int(count) if count.isdigit() else 0, index) + 1
    low, _ = _ephemeral_range()
    size = (low - _PORT_BASE) // processes
    if size < 16:
        return []
    start = _PORT_BASE + index * size
    ports = list(range(start, start + size))
    turn = secrets.randbelow(size)
    return ports[turn:] + ports[:turn]


_PORTS = _own_ports()
_next_port = 0
_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port no socket holds now and no other test process will pick.

    Ports come in turn from this process's own block (``_own_ports``), so a port handed to
    one test is not handed out again until the block wraps; where the block would meet
    the ephemeral range, the kernel picks one.
    """
    global _next_port
    for _ in range(len(_PORTS)):
        with _port_lock:
            port = _PORTS[_next_port % len(_PORTS)]
            _next_port += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dpop_proof(
    key: Ed25519PrivateKey, htm: str, htu: str, token: str | None = None, nonce: str | None = None
) -> str:
    """A DPoP proof (RFC 9449) by ``key`` for ``htm`` ``htu`` (and ``token``'s ``ath``, the
    server's ``nonce``)."""
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519",
              "x": _b64url(public)}}  # fmt: skip
    claims: dict[str, Any] = {
        "jti": secrets.token_hex(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()),
    }
    if token is not None:
        claims["ath"] = _b64url(hashlib.sha256(token.encode("ascii")).digest())
    if nonce is not None:
        claims["nonce"] = nonce
    text = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    return f"{text}.{_b64url(key.sign(text.encode('ascii')))}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class Agent:
    agent_id: str
    access_token: str
    expires_in: int
    key: Ed25519PrivateKey
    orch_id: str
    task_id: str
    scope: list[str]
    dpop: bool = False  # its token bound to ``key`` (RFC 9449)

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def auth(self, method: str, url: str) -> dict[str, str]:
        """The headers that present its token for ``method`` ``url``: a DPoP proof by its
        key when the token is bound, else the bearer header."""
        if not self.dpop:
            return self.bearer
        proof = dpop_proof(self.key, method, url, self.access_token)
        return {"Authorization": f"DPoP {self.access_token}", "DPoP": proof}


@dataclass
class RunningBroker:
    """A live broker process and helpers for talking to it."""

    url: str
    admin_secret: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client = field(repr=False)
    _admin_token: str | None = None
    _admin_deadline: float = 0.0  # time.monotonic() after which the token is fetched anew
    _operator: str | None = None  # sign in as this named operator (a tenant's view)
    _views: list[RunningBroker] = field(default_factory=list, repr=False)

    # -- plumbing ----------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    # -- admin ---------------------------------------------------------------------------

    def admin_token(self) -> str:
        """An admin token, fetched again before it expires (a broker may outlive one)."""
        if self._admin_token is None or time.monotonic() >= self._admin_deadline:
            if self._operator is None:
                resp = self.post("/v1/admin/auth", json={"secret": self.admin_secret})
            else:
                body = {"name": self._operator, "secret": self.admin_secret}
                resp = self.post("/v1/operator/auth", json=body)
            assert resp.status_code == 200, resp.text
            answer = resp.json()
            self._admin_token = str(answer["access_token"])
            self._admin_deadline = time.monotonic() + max(1.0, answer["expires_in"] - 30.0)
        return self._admin_token

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token()}"}

    def operator_token(self, role: str) -> str:
        """The token of a new named operator with ``role`` (admin, operator, auditor)."""
        name = f"{role}-{secrets.token_hex(4)}"
        created = self.post(
            "/v1/admin/operators", json={"name": name, "role": role}, headers=self.admin_headers()
        )
        assert created.status_code == 201, created.text
        signed = self.post(
            "/v1/operator/auth", json={"name": name, "secret": created.json()["secret"]}
        )
        assert signed.status_code == 200, signed.text
        return str(signed.json()["access_token"])

    # -- tenants -------------------------------------------------------------------------

    def create_tenant(self, name: str, **extra: Any) -> RunningBroker:
        """Create tenant ``name`` (as the default tenant's admin) and return a view of the
        broker that speaks to that tenant, signed in as its first operator ``admin``."""
        resp = self.post(
            "/v1/admin/tenants", json={"name": name, **extra}, headers=self.admin_headers()
        )
        assert resp.status_code == 201, resp.text
        return self.tenant(name, resp.json()["admin_secret"])

    def tenant(self, name: str, admin_secret: str) -> RunningBroker:
        """This broker as tenant ``name`` sees it (``/t/<name>/...``), signed in as its
        operator ``admin`` with ``admin_secret`` (kept as the view's ``admin_secret``)."""
        client = httpx.Client(base_url=f"{self.url}/t/{name}", timeout=self.client.timeout)
        view = RunningBroker(
            url=f"{self.url}/t/{name}",
            admin_secret=admin_secret,
            data_dir=self.data_dir,
            proc=self.proc,
            log_path=self.log_path,
            client=client,
        )
        self._views.append(view)  # closed with this broker
        view._operator = "admin"
        view.admin_token()
        return view

    def create_app(
        self, scopes: list[str], *, name: str | None = None, token_ttl: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name or f"app-{secrets.token_hex(4)}", "scopes": scopes}
        if token_ttl is not None:
            body["token_ttl"] = token_ttl
        resp = self.post("/v1/admin/apps", json=body, headers=self.admin_headers())
        assert resp.status_code == 201, resp.text
        return resp.json()

    def app_token(self, app: dict[str, Any]) -> str:
        resp = self.post(
            "/v1/app/auth",
            json={"client_id": app["client_id"], "client_secret": app["client_secret"]},
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def launch_token(
        self,
        allowed_scope: list[str],
        *,
        bearer: str | None = None,
        route: str = "/v1/admin/launch-tokens",
        **extra: Any,
    ) -> str:
        token = bearer or self.admin_token()
        resp = self.post(
            route,
            json={"agent_name": "e2e-agent", "allowed_scope": allowed_scope, **extra},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["launch_token"]

    # -- agents ----------------------------------------------------------------------------

    def nonce(self) -> str:
        resp = self.get("/v1/challenge")
        assert resp.status_code == 200, resp.text
        return resp.json()["nonce"]

    def register_body(
        self,
        launch_token: str,
        scope: list[str],
        *,
        key: Ed25519PrivateKey | None = None,
        nonce: str | None = None,
        orch_id: str = "orch-e2e",
        task_id: str | None = None,
    ) -> tuple[dict[str, Any], Ed25519PrivateKey]:
        key = key or Ed25519PrivateKey.generate()
        nonce = nonce or self.nonce()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        body = {
            "launch_token": launch_token,
            "nonce": nonce,
            "public_key": b64(public),
            "signature": b64(key.sign(bytes.fromhex(nonce))),
            "orch_id": orch_id,
            "task_id": task_id or f"task-{secrets.token_hex(6)}",
            "requested_scope": scope,
        }
        return body, key

    def register(
        self,
        scope: list[str],
        *,
        launch_token: str | None = None,
        orch_id: str = "orch-e2e",
        task_id: str | None = None,
        dpop: bool = False,
        **launch: Any,
    ) -> Agent:
        """An agent registered over HTTP; ``dpop``: its token bound (RFC 9449) to its
        registered key, which then signs a proof for each use at the broker."""
        lt = launch_token or self.launch_token(scope, **launch)
        body, key = self.register_body(lt, scope, orch_id=orch_id, task_id=task_id)
        headers = {"DPoP": dpop_proof(key, "POST", f"{self.url}/v1/register")} if dpop else {}
        resp = self.post("/v1/register", json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        return Agent(
            agent_id=data["agent_id"],
            access_token=data["access_token"],
            expires_in=data["expires_in"],
            key=key,
            orch_id=body["orch_id"],
            task_id=body["task_id"],
            scope=scope,
            dpop=dpop,
        )

    def validate(self, token: str) -> dict[str, Any]:
        resp = self.post("/v1/token/validate", json={"token": token})
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/json"
        return resp.json()

    def is_valid(self, token: str) -> bool:
        data = self.validate(token)
        if data["valid"]:
            return True
        assert data == {"valid": False, "error": "token is invalid or expired"}
        return False

    def delegate(
        self, bearer: str, delegate_to: str, scope: list[str], **extra: Any
    ) -> httpx.Response:
        return self.post(
            "/v1/delegate",
            json={"delegate_to": delegate_to, "scope": scope, **extra},
            headers={"Authorization": f"Bearer {bearer}"},
        )

    def revoke(self, level: str, target: str) -> httpx.Response:
        return self.post(
            "/v1/revoke", json={"level": level, "target": target}, headers=self.admin_headers()
        )

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The broker's active signing key (newest PKCS#8 file) and its kid."""
        pems = sorted((self.data_dir / "keys").glob("signing-*.pem"))
        assert pems, "no signing key on disk"
        # Keys at rest are encrypted with the passphrase `tasklease init` left beside them.
        passphrase = (self.data_dir / "key-passphrase").read_bytes().strip()
        key = serialization.load_pem_private_key(pems[-1].read_bytes(), password=passphrase)
        assert isinstance(key, Ed25519PrivateKey)
        kid = self.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
        return kid, key


def assert_problem(
    resp: httpx.Response,
    status: int,
    code: str,
    *,
    detail: str | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    """A problem+json body with every AgentWrit field, consistent with the response."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    assert resp.headers["content-type"] == "application/problem+json", resp.headers
    body = resp.json()
    for name in ("type", "title", "status", "detail", "instance", "error_code", "request_id"):
        assert name in body, f"problem body lacks {name}: {body}"
    assert body["status"] == status
    assert body["error_code"] == code
    assert body["type"].endswith(":" + code)
    assert body["type"].startswith("urn:")
    assert body["request_id"] == resp.headers["x-request-id"]
    assert isinstance(body["title"], str) and body["title"]
    if instance is not None:
        assert body["instance"] == instance
    else:
        assert body["instance"] == resp.request.url.path
    if detail is not None:
        assert body["detail"] == detail, body
    return body


def _clean_env(data_dir: Path, extra: dict[str, str], *, with_secret: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env["TASKLEASE_DATA_DIR"] = str(data_dir)
    # The metrics listener on a free port: brokers running side by side never share one.
    env["TASKLEASE_METRICS_LISTEN"] = "127.0.0.1:0"
    if with_secret:
        env["TASKLEASE_ADMIN_SECRET"] = ADMIN_SECRET
    env.update(extra)
    return env


def init_data_dir(data_dir: Path, env: dict[str, str]) -> None:
    """``tasklease init`` on ``data_dir`` when it holds no broker yet, with the
    environment the broker will have (its database, key provider, passphrase): only init
    creates a broker's state, ``serve`` refuses to start without it.

    Run in this process, through the CLI's own entry (``env`` stands in for the
    environment while it runs): a new interpreter for each broker the suite starts would
    spend most of init's time importing. tests/cli runs init as a command."""
    if any((data_dir / name).exists() for name in ("config.toml", "keys", "tasklease.db")):
        return
    args = [
        "init",
        "--data-dir",
        str(data_dir),
        "--secret-file",
        str(data_dir / "init-admin-secret"),
    ]
    # TASKLEASE_* variables ``env`` lacks are unset for the run, as a new process given
    # ``env`` would not have them; the rest of this process's environment stays.
    outside = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    done = run_cli(args, {**outside, **env})
    if done.returncode != 0:
        raise RuntimeError(f"tasklease init failed: {done.stdout}{done.stderr}")
    secret = env.get("TASKLEASE_ADMIN_SECRET")
    if secret:
        # The file holds this process's hash of the secret the broker is given, so that
        # its start keeps it (settings) and its sign-ins check it at this process's cost
        # (tests/conftest.py), instead of hashing at the product's.
        from tasklease.core.passwords import hash_secret

        config = data_dir / "config.toml"
        text, found = re.subn(
            r'^admin_secret_hash = "[^"]*"$',
            f'admin_secret_hash = "{hash_secret(secret)}"',
            config.read_text(),
            flags=re.M,
        )
        if found != 1:
            raise RuntimeError(f"no admin_secret_hash line in {config}")
        config.write_text(text)


_INIT_LOCK = threading.Lock()


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``tasklease *args`` run in this process, with ``env`` as its whole environment for
    the run (as a new process given ``env`` would have it), for a test about what the
    command says rather than about the process: a new interpreter for each command
    would spend most of its time importing.

    Its output is captured at the file descriptors (``capture="fd"``), so what reaches
    fd 1 or 2 by another way than ``sys.stdout``/``sys.stderr`` is in it too; an
    exception the command lets out is in ``stderr`` as its traceback, exit code 1, as
    the interpreter would print it.
    """
    from cli_runner import built
    from click.testing import CliRunner

    from tasklease.cli.main import app
    from tasklease.client._holder import default_ssl_context

    changes: dict[str, str | None] = {k: v for k, v in env.items() if os.environ.get(k) != v}
    changes.update({k: None for k in os.environ if k not in env})
    # The process's one default TLS context trusts the CA bundle its first client found
    # (``client._holder.default_ssl_context``): a command told to trust another gets its
    # own, and the process's is made again after it.
    trust = {"SSL_CERT_FILE", "SSL_CERT_DIR"} & changes.keys()
    with _INIT_LOCK:  # the environment is the process's: one command at a time
        runner = CliRunner(capture="fd")  # click's: typer's own captures sys.stdout only
        if trust:
            default_ssl_context.cache_clear()
        try:
            done = runner.invoke(built(app), args, env=changes, prog_name="tasklease")
        finally:
            if trust:
                default_ssl_context.cache_clear()
    stderr = done.stderr
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        stderr += "".join(traceback.format_exception(done.exception))
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, stderr)


def launch_broker(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    admin_secret: str = ADMIN_SECRET,
    use_env_secret: bool = True,
    args: tuple[str, ...] = (),
    port: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> RunningBroker:
    """Start ``tasklease serve`` on a free loopback port (or ``port``) and wait for
    /v1/health; ``args`` are more options for ``serve`` (``--workers 2``). ``tls``: the
    broker serves HTTPS (its ``env`` says with what) and is reached trusting ``tls``.

    A free port can be taken by another process between the moment it was found free
    and the broker's bind (an outgoing connection's ephemeral port, a broker another
    test starts): then the broker is started again on another one, twice at most."""
    for attempt in range(3):
        try:
            return _launch(data_dir, env, admin_secret, use_env_secret, args, port, tls)
        except PortTaken:
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class PortTaken(RuntimeError):
    """The broker could not bind its port: another process had taken it."""


def _launch(
    data_dir: Path,
    env: dict[str, str] | None,
    admin_secret: str,
    use_env_secret: bool,
    args: tuple[str, ...],
    port: int | None,
    tls: ssl.SSLContext | None,
) -> RunningBroker:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    full_env = _clean_env(data_dir, env or {}, with_secret=use_env_secret)
    init_data_dir(data_dir, full_env)
    port = port or free_port()
    log_path = data_dir / f"broker-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasklease.cli.main",
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(data_dir),
        )
    url = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=15.0, verify=True if tls is None else tls)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            client.close()
            output = log_path.read_text()
            if any(
                sign in output
                for sign in (
                    f"port {port} on 127.0.0.1 is taken",  # the CLI's check before serving
                    f"cannot listen on 127.0.0.1:{port}:",  # serve's own bind
                    f"error while attempting to bind on address ('127.0.0.1', {port})",
                )
            ):
                raise PortTaken(f"port {port} was taken: {output}")
            raise RuntimeError(f"broker exited with {proc.returncode}: {output}")
        try:
            if client.get("/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _terminate(proc)
            client.close()
            raise RuntimeError(f"broker did not become healthy: {log_path.read_text()}")
        time.sleep(0.05)
    return RunningBroker(url, admin_secret, data_dir, proc, log_path, client)


def wait_answering(
    url: str,
    *,
    within: float = STARTUP_TIMEOUT,
    proc: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
) -> None:
    """Until ``url`` answers 200; fails the test past ``within`` seconds, or at once when
    ``proc`` has exited (with ``log``'s text)."""
    deadline = time.monotonic() + within
    while True:
        said = log.read_text() if log is not None and log.exists() else ""
        assert proc is None or proc.poll() is None, f"the process exited: {said}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {within:g} s: {said}"
        time.sleep(0.05)


def metrics_url(broker: RunningBroker) -> str:
    """Where the broker serves its metrics listener (from its start-up output)."""
    match = re.search(r"^tasklease broker metrics on (http://\S+)$", broker.log(), re.M)
    assert match, f"no metrics listener in the start-up output: {broker.log()}"
    return match[1]


def _terminate(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def stop_broker(broker: RunningBroker) -> int:
    """SIGTERM (then SIGKILL) the broker; returns its exit code."""
    for view in broker._views:
        view.client.close()
    broker.client.close()
    return _terminate(broker.proc)
