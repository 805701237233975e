"""Wiring: build a Broker from a Config and serve it with uvicorn.

One worker serves the app object built here. Several workers (``--workers N``) are
separate processes started by uvicorn from an import string: the parent resolves the
configuration once, checks the broker's state and migrates the schema once, and hands
the resolved configuration to every worker in the ``TASKLEASE_WORKER_CONFIG`` environment
variable; :func:`worker_app` rebuilds the Broker from it. Serving creates no state: the
database, the keys and the nonce secret are made by ``tasklease init`` only
(:mod:`tasklease.brokerstate`). The workers share the SQLite file (``BEGIN IMMEDIATE``
serializes their writers, so the audit log stays one chain) and pick up each other's
revocations from the store (see ``http.app``).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasklease import brokerstate
from tasklease.core.broker import Broker
from tasklease.core.config import Config, is_loopback_host
from tasklease.core.keys import KeyRing, load_keyring, load_or_create_keyring
from tasklease.core.passwords import hash_problem
from tasklease.core.rollback import DatabaseWentBack
from tasklease.core.transparency import LOG_KEY_DIR, logs_went_back
from tasklease.hardening import protect
from tasklease.http.metrics import (
    MULTIPROCESS_ENV,
    MetricsListener,
    WorkerMetrics,
    multiprocess_registry,
)
from tasklease.http.protocol import http_protocol
from tasklease.http.tls import HandshakeBoundServer, uvicorn_tls_options
from tasklease.keystore import (
    PASSPHRASE_ENV,
    PIN_ENV,
    CheckpointFiles,
    EncryptedFileKeyProvider,
    KeyStoreError,
    open_key_provider,
    read_private_file,
)
from tasklease.localfiles import make_private_directories
from tasklease.logs import configure_logging
from tasklease.storage import is_shared_database, open_store, redact_url
from tasklease.tenancy import report_tenants_without_keys

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "LOOPS",
    "build_broker",
    "serve",
    "worker_app",
]

_log = logging.getLogger("tasklease.server")

LOOPS = ("asyncio", "uvloop")
"""Event loops ``serve`` accepts. asyncio is the default: see docs/performance.md."""

_WORKER_CONFIG_ENV = "TASKLEASE_WORKER_CONFIG"

# Secrets the supervisor's environment may hold that a worker is given another way (with
# its arguments, over the spawn pipe) rather than in the environment its process starts
# with: that one stays readable in /proc/<pid>/environ (to the broker's user until the
# worker marks itself not dumpable, to root always) whatever is removed from it later.
# Workers need only the key provider's secret; the admin secret reaches them as its hash.
_WORKER_SECRETS_ENV = (PASSPHRASE_ENV, PIN_ENV, "TASKLEASE_ADMIN_SECRET")


def build_broker(
    config: Config, *, migrate: bool = True, create: bool = False, refuse_went_back: bool = True
) -> Broker:
    """Open the broker's key ring and storage (migrating it if asked), and build the Broker.

    The broker's state must exist: only ``tasklease init`` passes ``create=True``, which
    makes the data directory, the first signing key, the passphrase file, the nonce
    secret, the audit log's key and the database where they are missing. The keys come
    first: a broker that cannot sign does not touch the database. Then a database that
    went back in time (restored from a backup, or missing its last commits: an audit log
    that does not extend the last checkpoint its log key signed, kept beside the key;
    ``core.rollback``) is refused, unless ``refuse_went_back`` is false (the command that
    accepts it).

    Raises:
        tasklease.brokerstate.StateError: ``database = "memory://"``, a ``database``
            the store cannot open (a URL libpq cannot parse), or (without ``create``)
            part of the state is missing; the message names it.
        tasklease.keystore.KeyStoreError: the keys cannot be opened with the configured
            key provider (the message says why and what to do), or a checkpoint anchor
            is unsafe or unreadable.
        tasklease.storage.SchemaError: the database cannot be used (missing, without
            schema, out of date).
        tasklease.core.rollback.DatabaseWentBack: the database went back in time.
    """
    if create:
        brokerstate.refuse_unshared(config.database)
        make_private_directories(config.data_dir)
    else:
        brokerstate.require(config)
    keyring = _load_keyring(config, create=create)
    # A shared (PostgreSQL) database is only migrated by `tasklease db migrate`.
    shared = is_shared_database(config.database)
    try:
        store = open_store(
            config.database, migrate=migrate and not shared, config=config, create=create
        )
    except ValueError as exc:
        # A setting the configuration's check let through that the store still cannot
        # open (libpq's own parser refused the URL, or psycopg is not installed): a
        # configuration error, in words that never quote the setting.
        raise brokerstate.StateError(f"database: {exc}") from None
    anchors = CheckpointFiles()
    try:
        make_log_key = create
        if not create and brokerstate.require_store(config, store):
            make_log_key = True
            _log.warning(
                "making the audit log key in %s/log: the key directory has none and the "
                "database no checkpoint (a data directory from before signed checkpoints)",
                config.key_dir,
            )
        log_keyring = _load_log_keyring(config, keyring, create=make_log_key)
        nonce_secret = _nonce_secret(Path(config.key_dir), create=create)
        if refuse_went_back:
            try:
                found = logs_went_back(store, anchors, config.key_dir)
            except (OSError, ValueError) as exc:
                raise KeyStoreError(str(exc)) from None
            if found:
                raise DatabaseWentBack(found)
    except BaseException:
        store.close()
        raise
    return Broker(
        config,
        store,
        keyring,
        nonce_secret=nonce_secret,
        anchors=anchors,
        log_keyring=log_keyring,
    )


def _load_keyring(config: Config, *, create: bool) -> KeyRing:
    """The key ring, through the key provider the configuration names (``tasklease.keystore``).

    With ``create`` (``tasklease init``), a key directory without keys gets its first key
    and, with the ``file`` provider and no passphrase given, a random passphrase file
    (0600) at ``<data_dir>/key-passphrase``, said in the log.
    """
    provider = open_key_provider(config, create_kek_file="when-no-keys" if create else "never")
    if isinstance(provider, EncryptedFileKeyProvider) and provider.new_passphrase_file:
        _log.warning(
            "created the signing-key passphrase file %s (random, mode 0600): the keys cannot "
            "be read without it; keep it out of the data directory's backups, or move it "
            "and set key_passphrase_file (or TASKLEASE_KEY_PASSPHRASE)",
            provider.new_passphrase_file,
        )
    load = load_or_create_keyring if create else load_keyring
    return load(Path(config.key_dir), provider)


def _load_log_keyring(config: Config, signing: KeyRing, *, create: bool) -> KeyRing | None:
    """The audit log's key ring in ``<key_dir>/log``, through the signing keys' provider;
    made only with ``create`` (``init``, or a data directory from before signed
    checkpoints: :func:`tasklease.brokerstate.require_store`)."""
    if signing.provider is None or not config.key_dir:
        return None
    load = load_or_create_keyring if create else load_keyring
    return load(Path(config.key_dir) / LOG_KEY_DIR, signing.provider)


def _keys_banner(broker: Broker, config: Config) -> str:
    """Where the signing keys are, for the start-up output (never a secret)."""
    ring = broker.keyring
    where = ring.provider.describe(Path(config.key_dir)) if ring.provider else "in memory"
    return f"tasklease broker signing keys: {where}; active kid {ring.active_kid}"


def _nonce_secret(key_dir: Path, *, create: bool) -> bytes:
    """The secret that authenticates challenge nonces, kept beside the keys (0600) and
    made by ``tasklease init`` (``create``).

    Every process and replica that shares the key directory accepts the others' nonces.
    """
    path = key_dir / brokerstate.NONCE_SECRET
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            secret = os.urandom(32)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secret)
                fh.flush()
                os.fsync(fh.fileno())
            return secret
    if not os.path.lexists(path):
        raise brokerstate.StateError(
            f"no broker here: the nonce secret {path} does not exist. {brokerstate.INIT_HINT}"
        )
    label = f"nonce secret {path}"
    data = read_private_file(path, label, 32, fix=f"; run: chmod 600 {path}")
    if len(data) != 32:
        raise KeyStoreError(f"{label} is not a 32-byte secret file")
    return data


def _config_to_env(config: Config) -> str:
    return json.dumps(dataclasses.asdict(config))


def _config_from_env() -> Config:
    raw = os.environ.get(_WORKER_CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{_WORKER_CONFIG_ENV} is not set: start workers with `tasklease serve`")
    values: dict[str, Any] = json.loads(raw)
    kinds = {f.name: f for f in dataclasses.fields(Config)}
    for name, value in values.items():
        if name in kinds and isinstance(value, list):
            values[name] = tuple(value)
    return Config(**values)


def worker_app() -> Starlette:
    """The ASGI app of one worker process (uvicorn calls this with ``factory=True``).

    The parent already checked the state and migrated the schema, so the worker opens
    the database without migrating and only reads the key files.
    """
    from tasklease.http.app import create_app

    config = _config_from_env()
    configure_logging(config.log_level)
    broker = build_broker(config, migrate=False)
    atexit.register(broker.store.close)
    # Under a supervisor that sums its workers' metrics, /v1/metrics (metrics_public =
    # "token") and the console's charts read the same sum as the metrics listener.
    shared = os.environ.get(MULTIPROCESS_ENV)
    if shared:
        broker.metrics.scraped = multiprocess_registry(shared)
    app = create_app(broker, close_store=True)
    settle_heap()
    return app


# The collector's thresholds in a serving process (``gc.set_threshold``), against
# CPython's (700, 10, 10). Requests free almost all they allocate by reference counting;
# what outlives them is the caches (10,000 validated tokens are about 50,000 tracked
# objects), so a young collection finds next to nothing, and under load a full one ran
# about once a second, walking the caches for 15 to 50 ms while the worker stood still.
# Ten times the first threshold still collects a cycle within 7,000 tracked objects
# allocated (a bounded amount of garbage); the third makes full collections ten times
# rarer than the second alone would (CPython also waits until a quarter of the old heap
# is new). Decision 258.
GC_THRESHOLDS = (7_000, 10, 100)


def settle_heap() -> None:
    """Move everything alive at start-up out of the garbage collector's sight, and
    collect what requests leave behind less often (:data:`GC_THRESHOLDS`).

    Modules, routes and configuration live as long as the process; left in the collected
    heap, every full collection (about once a second under load) walked them all while
    the process stood still (20 to 40 ms on a 2-core machine, in the tail of registration
    latency). Frozen, they are never examined again (``gc.freeze``); what requests
    allocate is collected as before, at the thresholds above.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _prepare(config: Config, admin_secret: str | None = None) -> str:
    """Check once, before any worker starts, that the broker's state is all there, and
    migrate its schema (SQLite) once; record the admin secret it starts with
    (:func:`_started`).

    Returns the signing keys' line of the start-up output.
    """
    broker = build_broker(config, migrate=True)
    try:
        _started(broker, admin_secret)
    finally:
        broker.store.close()
    return _keys_banner(broker, config)


def _started(broker: Broker, admin_secret: str | None) -> None:
    """What every start does once its broker is built: record the admin secret it starts
    with (a changed one ends the admin's tokens and launch tokens: docs/decisions.md 241)
    and name the tenants without keys. Witnesses and a quorum other than the log last
    recorded are audited (``audit_witnesses_changed``)."""
    broker.transparency.record_witnesses()
    if broker.started_with_admin_secret(admin_secret):
        _log.warning(
            "the admin secret changed since the last start: the admin's tokens and launch "
            "tokens made before are revoked (audit event admin_secret_changed); the admin "
            "can sign in again in %d s",
            broker.kernel.config.clock_skew + 1,
        )
    report_tenants_without_keys(broker)


# --- several worker processes --------------------------------------------------------

# A worker that dies sooner than this after its start is not restarted: it would only die
# again (a port taken, a database it cannot open), so the broker stops and says so.
_WORKER_MIN_LIFETIME = 10.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 literal, as uvicorn


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT`` (not yet listening).

    Every worker binds its own: the kernel spreads new connections over the listening
    sockets of the port. With one socket shared by all workers, the first to wake
    accepted a whole burst of connections (31 of 32 at the start of a benchmark) and the
    others stayed idle.
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# How often the supervisor pings each worker, and how long an answer may take before the
# worker is taken for stuck (stopped, or holding the GIL) and replaced.
_PING_INTERVAL = 5.0
_PING_TIMEOUT = 10.0
# Signals that stop the broker (SIGHUP too: a terminal that closes, or a service manager).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker if its supervisor dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own shutdown remains
        return
    if os.getppid() != parent:  # the supervisor died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _answer_pings(conn: Any) -> None:
    """In a worker: answer each of the supervisor's pings (it replaces a silent worker)."""
    try:
        while True:
            conn.recv()
            conn.send(True)
    except (EOFError, OSError):
        return


def _worker_process(
    common: dict[str, Any],
    host: str,
    port: int,
    parent: int,
    conn: Any,
    handshake_timeout: float,
    core_dumps: bool = False,
    key_secrets: dict[str, str] | None = None,
) -> None:
    """One worker (a spawned process): its own socket on the port, uvicorn, worker_app.

    ``key_secrets`` are the key provider's secrets of the supervisor's environment, put
    back in this process's ``os.environ`` (not in the environment it started with)."""
    protect(allow_core_dumps=core_dumps)  # execve made the process dumpable again
    os.environ.update(key_secrets or {})
    import uvicorn

    _die_with_parent(parent)
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_answer_pings, args=(conn,), daemon=True).start()
    sock = _listening_socket(host, port)
    config = uvicorn.Config("tasklease.server:worker_app", factory=True, **common)
    HandshakeBoundServer(config, handshake_timeout=handshake_timeout).run(sockets=[sock])


def _reserve_port(host: str, port: int) -> socket.socket:
    """The supervisor's hold on the port; SystemExit if anything else listens on it.

    First an ordinary bind (``SO_REUSEADDR`` only, as a single server binds): it fails
    when any socket listens on the port, including another broker's ``SO_REUSEPORT``
    workers, which would otherwise share the port with ours without a word.
    """
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            if port == 0:
                port = int(probe.getsockname()[1])
        return _listening_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None


_STARTUP_FAILURE = 3
"""The exit status of a broker whose server did not start (uvicorn's own)."""
_BACKLOG = 2048
"""Connections the listening socket queues before the server accepts them (uvicorn's)."""


def _bound_socket(host: str, port: int) -> socket.socket:
    """The one process's socket on ``(host, port)``, bound (not listening); SystemExit,
    naming the address, when it cannot be."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _serve_workers(
    common: dict[str, Any],
    workers: int,
    reserved: socket.socket,
    on_exit: Callable[[int], None] | None = None,
    *,
    handshake_timeout: float,
    core_dumps: bool = False,
) -> None:
    """Run ``workers`` worker processes until a stop signal; replace one that dies or hangs.

    The parent keeps ``reserved``, a bound (not listening) socket on the port
    (:func:`_reserve_port`), for its lifetime: it holds the port and resolves port 0 to
    one port for every worker. Every worker is
    pinged every few seconds and replaced when it does not answer; a worker that dies
    within ``_WORKER_MIN_LIFETIME`` of its start stops the broker instead (it would only
    die again). Workers receive SIGTERM if the parent dies. ``on_exit`` is called with the
    process id of each worker that has ended.
    """
    host = str(common["host"])
    port = int(reserved.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    # Out of the environment the workers inherit (given back when the broker stops).
    held = {name: os.environ.pop(name) for name in _WORKER_SECRETS_ENV if name in os.environ}
    key_secrets = {name: held[name] for name in (PASSPHRASE_ENV, PIN_ENV) if name in held}

    class Worker:
        def __init__(self) -> None:
            self.conn, child = context.Pipe()
            self.process = context.Process(
                target=_worker_process,
                args=(
                    {**common, "port": port},
                    host,
                    port,
                    os.getpid(),
                    child,
                    handshake_timeout,
                    core_dumps,
                    key_secrets,
                ),
            )
            self.process.start()
            child.close()
            self.started = time.monotonic()
            self.pinged = 0.0

        def answers(self) -> bool:
            try:
                self.conn.send(b"ping")
                if self.conn.poll(_PING_TIMEOUT):
                    self.conn.recv()
                    return True
            except (OSError, EOFError):
                pass
            return False

        def stop(self) -> None:
            if self.process.exitcode is None and self.process.pid is not None:
                os.kill(self.process.pid, signal.SIGTERM)  # uvicorn shuts down gracefully

        def reap(self) -> None:
            self.process.join(timeout=15)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
            self.conn.close()
            if on_exit is not None and self.process.pid is not None:
                on_exit(self.process.pid)

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    running = [Worker() for _ in range(workers)]
    try:
        while not stopping.wait(0.2):
            for index, worker in enumerate(running):
                now = time.monotonic()
                if worker.process.exitcode is None:
                    if now - worker.pinged < _PING_INTERVAL:
                        continue
                    worker.pinged = now
                    if worker.answers() or stopping.is_set():
                        continue
                    _log.error("worker %s stopped answering: replacing it", worker.process.pid)
                    worker.process.kill()
                    worker.reap()
                elif now - worker.started < _WORKER_MIN_LIFETIME:
                    raise SystemExit(
                        f"a worker exited at start-up (exit code {worker.process.exitcode}): "
                        "see its log above"
                    )
                else:
                    _log.error(
                        "worker %s exited (code %s): restarting",
                        worker.process.pid,
                        worker.process.exitcode,
                    )
                    worker.reap()
                running[index] = Worker()
    finally:
        for worker in running:
            worker.stop()
        for worker in running:
            worker.reap()
        reserved.close()
        for sig, handler in {**previous, **ignored}.items():
            signal.signal(sig, handler)
        os.environ.update(held)


def _metrics_served(config: Config) -> bool:
    return config.metrics_address is not None or config.metrics_public == "token"


def _start_metrics(config: Config, render: Callable[[], bytes]) -> MetricsListener | None:
    """The listener of ``metrics_listen`` (None when it is off), serving ``render()``.

    Raises:
        SystemExit: the address cannot be bound: a broker that starts without the
            metrics it was told to serve, or whose scraper reads another broker's on
            the same port, fails unnoticed.
    """
    address = config.metrics_address
    if address is None:
        return None
    host, port = address
    try:
        listener = MetricsListener(host, port, render)
    except OSError as exc:
        raise SystemExit(
            f"cannot listen on {config.metrics_listen} for metrics (metrics_listen): "
            f"{exc.strerror or exc}"
        ) from None
    if not is_loopback_host(host):
        _log.warning(
            "metrics served on %s, not a loopback address: whoever reaches it reads them",
            config.metrics_listen,
        )
    print(f"tasklease broker metrics on {listener.url}", flush=True)
    return listener


# Descriptors a serving process keeps for itself beside its clients' connections: its
# database, key and log files, pool connections, the metrics listener, its workers' pipes.
_OWN_DESCRIPTORS = 256


def _raise_descriptor_limit(connections: int) -> None:
    """Raise this process's soft descriptor limit (up to the hard one; workers inherit it)
    so that ``http_max_connections`` client connections and its own files fit; warn when
    the hard limit is lower, as connections past it would be refused by the system."""
    import resource

    need = connections + _OWN_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # beyond what the system gives one process
        target = soft
    if target < need:
        _log.warning(
            "http_max_connections is %d, but the descriptor limit (%d) leaves room for "
            "about %d: raise the limit (ulimit -n, LimitNOFILE) or lower the setting",
            connections,
            target,
            max(target - _OWN_DESCRIPTORS, 0),
        )


def serve(
    config: Config,
    *,
    workers: int = 1,
    loop: str = "asyncio",
    notices: Sequence[str] = (),
    admin_secret: str | None = None,
) -> None:
    """Run the broker in the foreground until SIGINT/SIGTERM.

    ``workers`` > 1 starts that many worker processes, each listening on the port with
    its own socket (``SO_REUSEPORT``), sharing the database and the revocation state.
    ``loop`` is ``asyncio`` (default) or ``uvloop``. ``notices`` (from
    :func:`tasklease.settings.load_config`) are logged as warnings once logging is set up.
    ``admin_secret`` is the admin secret's plain text when the environment gave it: a
    start tells by it a secret hashed afresh from one that changed (:func:`_started`).

    Raises:
        tasklease.http.tls.TLSFileError: a TLS file of the configuration does not load.
    """
    import uvicorn

    from tasklease.http.app import create_app

    if not config.admin_secret_hash:
        raise SystemExit(
            "no admin secret configured: run `tasklease init` or set TASKLEASE_ADMIN_SECRET"
        )
    unusable = hash_problem(config.admin_secret_hash)
    if unusable is not None:  # no secret would ever sign in as the admin: said, not served
        raise SystemExit(
            f"admin_secret_hash (of the config file or TASKLEASE_ADMIN_SECRET_HASH) cannot be "
            f"used: {unusable}. In a shell put the hash tasklease init wrote in single "
            "quotes, in a Compose file write each $ as $$; or set TASKLEASE_ADMIN_SECRET"
        )
    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    # Before the keys are read: no core file holds them (tasklease.hardening).
    protect(allow_core_dumps=config.core_dumps)
    configure_logging(config.log_level)
    if loop not in LOOPS:
        raise SystemExit(f"--loop must be one of {', '.join(LOOPS)}")
    for notice in notices:
        _log.warning("%s", notice)
    if config.tls_mode == "none" and not is_loopback_host(config.host):
        _log.warning(
            "listening on %s without TLS: tokens and secrets cross the network in clear; "
            "put it behind TLS (tls_mode) or bind a loopback address",
            config.host,
        )
    _raise_descriptor_limit(config.http_max_connections)
    common: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "loop": loop,
        "http": http_protocol(config),
        # No WebSocket route is served: an upgrade is answered as the plain request it is
        # (with a WebSocket library installed, uvicorn logged each one's raw path and
        # query string, a credential pasted there included).
        "ws": "none",
        # A kept-alive connection with no request in this long is closed.
        "timeout_keep_alive": config.http_keepalive_timeout,
        "log_level": config.log_level,
        "log_config": None,  # our root handler renders uvicorn's records as JSON too
        "access_log": False,
        "server_header": False,
        # uvicorn would believe X-Forwarded-For/-Proto from 127.0.0.1 (or $FORWARDED_ALLOW_IPS):
        # any local process could choose its address. The application does it, only for
        # the configured trusted_proxies (http/middleware.py).
        "proxy_headers": False,
        # On SIGTERM, requests in flight get this long to finish; open revocation-feed
        # streams never finish by themselves and are cut then (their readers reconnect,
        # to another replica if this one is going away).
        "timeout_graceful_shutdown": 3,
        **uvicorn_tls_options(config),
    }
    scheme = "https" if config.tls_mode != "none" else "http"
    if workers > 1:
        print(_prepare(config, admin_secret), flush=True)
        os.environ[_WORKER_CONFIG_ENV] = _config_to_env(config)
        shared = WorkerMetrics() if _metrics_served(config) else None
        if shared is not None:
            os.environ[MULTIPROCESS_ENV] = shared.directory  # the workers inherit it
        listener = None
        try:
            # The port first: the metrics listener's (port 0 among them) cannot take it.
            reserved = _reserve_port(config.host, config.port)
            listener = _start_metrics(config, shared.render) if shared is not None else None
            print(
                f"tasklease broker listening on {scheme}://{config.host}:"
                f"{reserved.getsockname()[1]} (database {redact_url(config.database)}, "
                f"{workers} workers, pid {os.getpid()})",
                flush=True,
            )
            _serve_workers(
                common,
                workers,
                reserved,
                shared.process_gone if shared else None,
                handshake_timeout=config.http_header_timeout,
                core_dumps=config.core_dumps,
            )
        finally:
            if listener is not None:
                listener.close()
            if shared is not None:
                os.environ.pop(MULTIPROCESS_ENV, None)
                shared.close()
        return
    broker = build_broker(config)
    _started(broker, admin_secret)
    app = create_app(broker, close_store=True)
    settle_heap()
    print(_keys_banner(broker, config), flush=True)
    listener = None
    try:
        # The port first, listened on at once (uvicorn accepts from it once started): no
        # other socket of this process, the metrics listener's among them, can take it.
        sock = _bound_socket(config.host, config.port)
        sock.listen(_BACKLOG)
        listener = _start_metrics(config, broker.metrics.render)
        print(
            f"tasklease broker listening on {scheme}://{config.host}:{sock.getsockname()[1]} "
            f"(database {redact_url(config.database)}, pid {os.getpid()})",
            flush=True,
        )
        server = HandshakeBoundServer(
            uvicorn.Config(app, **common), handshake_timeout=config.http_header_timeout
        )
        with contextlib.suppress(KeyboardInterrupt):  # a SIGINT it re-raises once stopped
            server.run(sockets=[sock])
        if not server.started:
            sys.exit(_STARTUP_FAILURE)
    finally:
        if listener is not None:
            listener.close()
        broker.audit.close()
        broker.store.close()
