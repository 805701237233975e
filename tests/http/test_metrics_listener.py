"""The metrics: on a listener of their own, loopback by default; on the broker's port only
by the operator's choice and then only to an operator's token; one scrape for every worker.

Each test broker's metrics listener is on a free loopback port (``e2e_support``); the
default address is checked on the configuration.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, assert_problem, metrics_url
from worker_procs import ESTABLISHED, age, socket_inodes, tcp_inodes, worker_pids

from tasklease.core.config import Config
from tasklease.http.metrics import WorkerMetrics, remove_abandoned
from tasklease.settings import ConfigError, load_config

TOKEN_ENV = {**SHARED_ENV, "TASKLEASE_METRICS_PUBLIC": "token"}


def _sample(text: str, name: str) -> float:
    """The value of the one unlabelled sample ``name`` (or with exactly these labels)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"no sample {name} in:\n{text}"
    return float(match[1])


def test_the_default_is_a_listener_of_their_own_on_loopback() -> None:
    config = Config()
    assert config.metrics_listen == "127.0.0.1:9464"
    assert config.metrics_address == ("127.0.0.1", 9464)
    assert config.metrics_public == "off"
    assert load_config(os.devnull, env={"TASKLEASE_METRICS_LISTEN": "off"}).metrics_address is None
    assert Config(metrics_listen="").metrics_address is None
    assert Config(metrics_listen="[::1]:0").metrics_address == ("::1", 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_LISTEN", "localhost:9464"),  # an address, not a name to resolve
        ("METRICS_LISTEN", "::1:9464"),  # IPv6 in brackets
        ("METRICS_LISTEN", "127.0.0.1"),
        ("METRICS_LISTEN", "127.0.0.1:65536"),
        ("METRICS_PUBLIC", "open"),
    ],
)
def test_malformed_metrics_settings_stop_the_broker(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.lower()):
        load_config(os.devnull, env={f"TASKLEASE_{name}": value})


def test_metrics_on_the_loopback_listener_and_not_on_the_main_port(
    broker: RunningBroker,
) -> None:
    broker.register(["read:data:x"])
    url = metrics_url(broker)
    assert urlsplit(url).hostname == "127.0.0.1"
    scrape = httpx.get(url, timeout=10)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert scrape.headers["server"] == "tasklease"  # no Python version
    assert "# TYPE tasklease_issuance_seconds histogram" in scrape.text
    assert _sample(scrape.text, 'tasklease_registrations_total{status="success"}') >= 1
    # Prometheus's default path works too; the listener serves nothing else.
    assert httpx.get(url.replace("/v1/metrics", "/metrics"), timeout=10).status_code == 200
    assert httpx.head(url, timeout=10).status_code == 200
    assert httpx.get(url.replace("/v1/metrics", "/v1/health"), timeout=10).status_code == 404

    # The broker's own port: as unknown as any path, to anyone, with any token.
    unknown = assert_problem(broker.get("/v1/nope"), 404, "not_found")
    for headers in ({}, broker.admin_headers()):
        hidden = assert_problem(broker.get("/v1/metrics", headers=headers), 404, "not_found")
        assert hidden["detail"] == unknown["detail"] == "no such endpoint"


def test_token_mode_serves_the_main_port_to_operators_only(
    start_broker: Callable[..., RunningBroker],
) -> None:
    running = start_broker(env=TOKEN_ENV)
    agent = running.register(["read:data:x"])
    app_token = running.app_token(running.create_app(["read:data:*"]))

    assert_problem(running.get("/v1/metrics"), 401, "unauthorized")
    garbage = {"Authorization": "Bearer not-a-token"}
    assert_problem(running.get("/v1/metrics", headers=garbage), 401, "unauthorized")
    assert_problem(running.get("/v1/metrics", headers=agent.bearer), 403, "insufficient_scope")
    app_bearer = {"Authorization": f"Bearer {app_token}"}
    assert_problem(running.get("/v1/metrics", headers=app_bearer), 403, "insufficient_scope")

    scrape = running.get("/v1/metrics", headers=running.admin_headers())
    assert scrape.status_code == 200, scrape.text
    assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert _sample(scrape.text, 'tasklease_registrations_total{status="success"}') == 1
    # The auditor role, made for observers, reads them too.
    auditor = {"Authorization": f"Bearer {running.operator_token('auditor')}"}
    assert running.get("/v1/metrics", headers=auditor).status_code == 200
    # The loopback listener serves them as well.
    assert httpx.get(metrics_url(running), timeout=10).status_code == 200


def test_no_listener_when_it_is_turned_off(start_broker: Callable[..., RunningBroker]) -> None:
    running = start_broker(env={**SHARED_ENV, "TASKLEASE_METRICS_LISTEN": "off"})
    assert "metrics on" not in running.log()
    assert_problem(running.get("/v1/metrics"), 404, "not_found")


# --- several workers -------------------------------------------------------------------------


def _serving_worker(response: httpx.Response, port: int, workers: set[int]) -> int:
    """The worker whose socket holds the (still open) connection ``response`` came on."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    inodes = tcp_inodes(port, ESTABLISHED, remote_port=client_port)
    assert inodes, "the connection is not open"
    for pid in workers:
        if socket_inodes(pid) & inodes:
            return pid
    raise AssertionError("no worker holds the connection")


@pytest.mark.slow
def test_one_scrape_sums_every_worker_and_outlives_a_replaced_one(
    start_broker: Callable[..., RunningBroker],
) -> None:
    running = start_broker(env=TOKEN_ENV, args=("--workers", "2"))
    port = int(urlsplit(running.url).port or 0)
    deadline = time.monotonic() + 30
    while len(workers := worker_pids(running.proc.pid)) != 2:
        assert time.monotonic() < deadline, "the two workers did not start"
        time.sleep(0.1)

    # Registrations, each over a connection of its own, until each worker served some:
    # each worker counts only its own, so a scrape that is right sums them.
    served: dict[int, int] = dict.fromkeys(workers, 0)
    for _ in range(60):
        if min(served.values()) >= 2:
            break
        body, _ = running.register_body(running.launch_token(["read:data:x"]), ["read:data:x"])
        with httpx.Client(base_url=running.url, timeout=10) as fresh:
            answer = fresh.post("/v1/register", json=body)
            assert answer.status_code == 200, answer.text
            served[_serving_worker(answer, port, workers)] += 1
    assert min(served.values()) >= 2, served
    total = sum(served.values())

    def registrations(text: str) -> float:
        return _sample(text, 'tasklease_registrations_total{status="success"}')

    listener = httpx.get(metrics_url(running), timeout=10).text
    assert registrations(listener) == total
    # The HTTP request metrics add up the same way, by route template.
    served_requests = (
        'tasklease_http_requests_total{method="POST",route="/v1/register",status="200"}'
    )
    assert _sample(listener, served_requests) == total
    assert not re.search(r"^\w+_created[{ ]", listener, re.M)
    assert re.search(r"^tasklease_active_agents \S+$", listener, re.M)  # one sum, no pid label
    for _ in range(4):  # whichever worker answers, the main port gives the same sum
        with httpx.Client(base_url=running.url, timeout=10) as fresh:
            scrape = fresh.get("/v1/metrics", headers=running.admin_headers())
        assert scrape.status_code == 200, scrape.text
        assert registrations(scrape.text) == total

    # A worker replaced (killed once past its start-up grace): its counts stay in the sum.
    victim = next(iter(workers))
    time.sleep(max(0.0, 11.5 - age(victim)))  # the supervisor counts from just after its fork
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = worker_pids(running.proc.pid)
        if victim not in now and len(now) == 2:
            break
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.2)
    assert running.proc.poll() is None
    assert registrations(httpx.get(metrics_url(running), timeout=10).text) == total


_ISSUED_RATE = re.compile(
    r'<div class="value">([0-9.]+)</div><div class="label">tokens issued / min'
)


@pytest.mark.slow
def test_the_consoles_charts_are_every_workers(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """The console's overview draws its rates from what a scrape reads: with workers,
    their sum. Each worker sampled its own counters only, so the tokens issued per
    minute it drew were the share of the worker that happened to answer."""
    running = start_broker(env=SHARED_ENV, args=("--workers", "2"))
    port = int(urlsplit(running.url).port or 0)
    deadline = time.monotonic() + 30
    while len(workers := worker_pids(running.proc.pid)) != 2:
        assert time.monotonic() < deadline, "the two workers did not start"
        time.sleep(0.1)
    launch = [running.launch_token(["read:data:x"]) for _ in range(40)]
    with httpx.Client(base_url=running.url, timeout=10) as console:  # one worker's
        form = console.get("/console/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found is not None, form.text[:500]
        signed = console.post(
            "/console/login",
            data={"csrf": found[1], "operator": "", "secret": running.admin_secret},
            headers={"origin": running.url},
        )
        assert signed.status_code == 303, signed.text[:500]
        began = time.monotonic()
        first = console.get("/console/live/overview")  # the first sample
        assert first.status_code == 200, first.text[:500]
        # Registrations over connections of their own until each worker served some.
        served: dict[int, int] = dict.fromkeys(workers, 0)
        for token in launch:
            if min(served.values()) >= 2:
                break
            body, _ = running.register_body(token, ["read:data:x"])
            with httpx.Client(base_url=running.url, timeout=10) as fresh:
                answer = fresh.post("/v1/register", json=body)
                assert answer.status_code == 200, answer.text
                served[_serving_worker(answer, port, workers)] += 1
        assert min(served.values()) >= 2, served
        time.sleep(max(0.0, began + 2.2 - time.monotonic()))  # a sample every 2 s
        second = console.get("/console/live/overview")
        assert second.status_code == 200, second.text[:500]
        elapsed = time.monotonic() - began
    rate = _ISSUED_RATE.search(second.text)
    assert rate is not None, second.text[:2000]
    # Between its two samples, every registration was issued, within ``elapsed``.
    assert float(rate[1]) * elapsed / 60.0 >= sum(served.values()) - 0.5, (rate[1], served)


def _cache_samples(broker: RunningBroker) -> tuple[float, float]:
    text = httpx.get(metrics_url(broker), timeout=10).text
    hits = re.search(r'^tasklease_token_cache_total\{result="hit"\} (\S+)$', text, re.M)
    misses = re.search(r'^tasklease_token_cache_total\{result="miss"\} (\S+)$', text, re.M)
    return float(hits[1]) if hits else 0.0, float(misses[1]) if misses else 0.0


@pytest.mark.parametrize("size", ["10000", "0"])
def test_the_token_cache_is_counted_and_can_be_turned_off(
    start_broker: Callable[..., RunningBroker], size: str
) -> None:
    """A token the broker issued is validated three times: with the cache, every use is
    a hit (the broker signed it); with ``TASKLEASE_TOKEN_CACHE_SIZE=0``, every use is
    verified, and the answers are the same."""
    running = start_broker(env={**SHARED_ENV, "TASKLEASE_TOKEN_CACHE_SIZE": size})
    agent = running.register(["read:data:x"])
    hits, misses = _cache_samples(running)
    assert all(running.validate(agent.access_token)["valid"] for _ in range(3))
    after_hits, after_misses = _cache_samples(running)
    if size == "0":
        assert (after_hits - hits, after_misses - misses) == (0, 3)
    else:
        assert (after_hits - hits, after_misses - misses) == (3, 0)


@pytest.mark.slow
def test_active_agents_is_the_deployments_figure_once_with_workers(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """Each worker reads the deployment's live agents from the store at its housekeeping
    tick and the scrape reports that figure, not the sum over the workers (twice it with
    two), nor each worker's registrations (which a revocation never lowered)."""
    env = {**TOKEN_ENV, "TASKLEASE_PRUNE_INTERVAL": "0.2"}
    running = start_broker(env=env, args=("--workers", "2"))
    deadline = time.monotonic() + 30
    while len(worker_pids(running.proc.pid)) != 2:
        assert time.monotonic() < deadline, "the two workers did not start"
        time.sleep(0.1)
    agents = [running.register(["read:data:x"]) for _ in range(3)]
    assert running.revoke("agent", agents[0].agent_id).status_code == 200

    def active(text: str) -> float:
        return _sample(text, "tasklease_active_agents")

    deadline = time.monotonic() + 20
    while active(httpx.get(metrics_url(running), timeout=10).text) != 2:
        assert time.monotonic() < deadline, "the gauge never read the 2 live agents"
        time.sleep(0.2)
    time.sleep(1)  # every worker has ticked again since
    assert active(httpx.get(metrics_url(running), timeout=10).text) == 2
    for _ in range(4):  # whichever worker answers /v1/metrics
        with httpx.Client(base_url=running.url, timeout=10) as fresh:
            scrape = fresh.get("/v1/metrics", headers=running.admin_headers())
        assert scrape.status_code == 200, scrape.text
        assert active(scrape.text) == 2


# --- the workers' metrics directory ----------------------------------------------------------


def _metrics_directories(parent: Path) -> set[str]:
    return {entry.name for entry in parent.iterdir() if "metrics" in entry.name}


@pytest.mark.slow
def test_a_killed_supervisors_directory_is_removed_by_the_next_start(
    start_broker: Callable[..., RunningBroker], tmp_path: Path
) -> None:
    """A supervisor killed with SIGKILL cannot remove its metrics directory: the next start
    does (its lock is free), and serves the sum from a directory of its own."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**SHARED_ENV, "TMPDIR": str(temp)}
    data_dir = tmp_path / "broker"
    first = start_broker(data_dir, env=env, args=("--workers", "2"))
    deadline = time.monotonic() + 30
    while len(workers := worker_pids(first.proc.pid)) != 2:
        assert time.monotonic() < deadline, "the two workers did not start"
        time.sleep(0.1)
    left = _metrics_directories(temp)
    assert len(left) == 1, left
    os.kill(first.proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert _metrics_directories(temp) == left  # nothing removed it

    second = start_broker(data_dir, env=env, args=("--workers", "2"))
    now = _metrics_directories(temp)
    assert len(now) == 1 and not now & left, (left, now)
    scrape = httpx.get(metrics_url(second), timeout=10)
    assert scrape.status_code == 200 and "tasklease_" in scrape.text


def test_only_directories_no_supervisor_holds_are_removed(tmp_path: Path) -> None:
    """A live supervisor's directory stays; so do a symbolic link and what it points to,
    and a name that is not a supervisor's; an abandoned one is removed with its files."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path))
        live = WorkerMetrics()
    try:
        abandoned = tmp_path / "tasklease-worker-metrics-abandoned"
        abandoned.mkdir(mode=0o700)
        (abandoned / "counter_123.db").write_bytes(b"x")
        target = tmp_path / "elsewhere"
        target.mkdir()
        (target / "keep").write_text("keep")
        (tmp_path / "tasklease-worker-metrics-link").symlink_to(target)
        other = tmp_path / "unrelated"
        other.mkdir()

        remove_abandoned(str(tmp_path))

        assert not abandoned.exists()
        assert Path(live.directory).is_dir()
        assert (target / "keep").read_text() == "keep"
        assert (tmp_path / "tasklease-worker-metrics-link").is_symlink()
        assert other.is_dir()
        live.render()  # the live directory still reads
    finally:
        live.close()
    assert not Path(live.directory).exists()


def test_an_earlier_layouts_directory_is_removed_once_no_process_holds_its_files(
    tmp_path: Path,
) -> None:
    """Directories of the layout before the lock (``tasklease-metrics-*``) carry no lock:
    one whose files no process holds open (its workers gone) is removed; one whose
    worker still holds a file open (a running broker of that version) stays, as does
    one with no worker file at all."""
    dead = tmp_path / "tasklease-metrics-dead"
    dead.mkdir(mode=0o700)
    (dead / "counter_123.db").write_bytes(b"x")
    (dead / "gauge_livesum_123.db").write_bytes(b"x")
    running = tmp_path / "tasklease-metrics-running"
    running.mkdir(mode=0o700)
    (running / "counter_456.db").write_bytes(b"x")
    (running / "counter_789.db").write_bytes(b"x")
    empty = tmp_path / "tasklease-metrics-empty"
    empty.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "counter_1.db").write_bytes(b"x")
    (tmp_path / "tasklease-metrics-link").symlink_to(target)
    with open(running / "counter_789.db", "rb+"):  # as a live worker holds its files
        remove_abandoned(str(tmp_path))
    assert not dead.exists()
    assert sorted(p.name for p in running.iterdir()) == ["counter_456.db", "counter_789.db"]
    assert empty.is_dir()
    assert (tmp_path / "tasklease-metrics-link").is_symlink() and target.is_dir()
