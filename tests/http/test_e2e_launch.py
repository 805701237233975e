"""The tests' ports and broker launcher: ports no connection of the suite can take, and a
port taken between its choice and the bind is retried."""

from __future__ import annotations

import socket
from pathlib import Path

import e2e_support
import pytest
from e2e_support import launch_broker, stop_broker


def test_a_broker_whose_port_was_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: a port that another process took after it was found free failed
    # the test that wanted a broker (seen in CI: "address already in use"). Bound, not
    # listening: as an outgoing connection's ephemeral port holds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        ports = iter([busy, e2e_support.free_port()])
        monkeypatch.setattr(e2e_support, "free_port", lambda: next(ports))
        broker = launch_broker(tmp_path / "data")
        try:
            assert not broker.url.endswith(f":{busy}")
            assert broker.get("/v1/health").status_code == 200
        finally:
            stop_broker(broker)


def test_a_port_asked_for_and_taken_is_an_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(e2e_support.PortTaken):
            launch_broker(tmp_path / "data", port=taken.getsockname()[1])


def test_free_ports_come_from_a_block_of_this_process_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Would fail if: free_port handed out a port the kernel may give any outgoing
    # connection of the suite (seen in CI: a test server's port, picked at import, was
    # taken before it bound), or two test processes of a run could pick the same port.
    low, _ = e2e_support._ephemeral_range()
    if not e2e_support._PORTS:
        pytest.skip(f"no room below this machine's ephemeral range ({low})")
    picked = [e2e_support.free_port() for _ in range(50)]
    assert len(set(picked)) == 50
    assert all(port < low for port in picked), picked
    for workers in (2, 4, 8):
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
        blocks = []
        for worker in ["", *(f"gw{i}" for i in range(workers))]:
            monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
            blocks.append(set(e2e_support._own_ports()))
        assert all(blocks) and all(max(block) < low for block in blocks)
        assert sum(map(len, blocks)) == len(set().union(*blocks))  # disjoint
