"""The SDK's late audit of offline derivations against a real broker over HTTP: queued
while the broker is away, reported once when it is back, kept across a crash with a
spool, and never recorded twice."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path

import httpx
import nacl.signing
import pytest

from tasklease.client import Agent, AsyncAgent, OfflineCredential, OfflineReporter
from tasklease.client.testing import BrokerForTests
from tasklease.core.store import AuditQuery
from tasklease.rules.chainverify import derive
from tasklease.rules.offlinereports import PendingReport


def _levels(agent: Agent, key: nacl.signing.SigningKey, count: int) -> list[str]:
    """``count`` levels derived offline from ``agent``'s token, each signed by its holder."""
    levels: list[str] = []
    parent, signer, name = agent.token, key, agent.agent_id
    for i in range(count):
        delegate = nacl.signing.SigningKey.generate()
        name = f"{name}/sdk{i}"  # each named under its delegator
        parent = derive(
            parent,
            signer,
            delegate=name,
            delegate_key=bytes(delegate.verify_key),
            now=int(time.time()),
            ttl=120,
        )
        levels.append(parent)
        signer = delegate
    return levels


def _unreachable() -> str:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _reported(broker: BrokerForTests) -> list[str]:
    events, _ = broker.broker.store.query_audit(
        AuditQuery(event_type="offline_derivation_reported", limit=100)
    )
    return [e.agent_id for e in events]


def test_derivations_wait_for_the_broker_and_are_reported_once(
    broker: BrokerForTests,
) -> None:
    key = nacl.signing.SigningKey.generate()
    before = len(_reported(broker))
    with broker.agent(["read:data:*"], key=key, dpop=True) as agent, httpx.Client() as client:
        levels = _levels(agent, key, 3)
        away = OfflineReporter(client, _unreachable(), agent.auth)
        for chain in levels:
            away.derived(chain)
        away.derived(levels[0])  # recorded twice locally: queued once
        assert away.flush() == 0 and away.pending == 3
        # The broker is back (the same queue, now pointed at it).
        back = OfflineReporter(client, broker.url, agent.auth)
        for report in levels:
            back.derived(report)
        assert back.flush() == 3 and back.pending == 0
        assert len(_reported(broker)) == before + 3
        # A retry after a lost answer: the broker records nothing new.
        again = OfflineReporter(client, broker.url, agent.auth)
        for report in levels:
            again.derived(report)
        assert again.flush() == 3
        assert len(_reported(broker)) == before + 3


def test_a_spool_keeps_reports_across_a_crash_and_is_private(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    key = nacl.signing.SigningKey.generate()
    spool = tmp_path / "reports.jsonl"
    before = len(_reported(broker))
    with broker.agent(["read:data:*"], key=key, dpop=True) as agent, httpx.Client() as client:
        levels = _levels(agent, key, 2)
        crashed = OfflineReporter(client, _unreachable(), agent.auth, spool=spool)
        for chain in levels:
            crashed.derived(chain)
        assert crashed.flush() == 0
        assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600
        # A new process: the spool is read back, and reported.
        restarted = OfflineReporter(client, broker.url, agent.auth, spool=spool)
        assert restarted.pending == 2
        assert restarted.flush() == 2
        assert spool.read_text() == ""  # nothing left: no credential stays on disk
        assert len(_reported(broker)) == before + 2


def test_a_full_queue_drops_the_oldest_and_counts_it(broker: BrokerForTests) -> None:
    key = nacl.signing.SigningKey.generate()
    with broker.agent(["read:data:*"], key=key, dpop=True) as agent, httpx.Client() as client:
        levels = _levels(agent, key, 3)
        reporter = OfflineReporter(client, _unreachable(), agent.auth, limit=2)
        for chain in levels:
            reporter.derived(chain)
        assert (reporter.pending, reporter.dropped) == (2, 1)


def test_a_delegate_derives_on_and_reports_with_its_chain(broker: BrokerForTests) -> None:
    # The agent hands on offline; its delegate, with no token of its own, hands on again
    # and reports with the chain it holds (presented as DPoP with its key's proof).
    helper_key, worker_key = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    with broker.agent(["read:data:*"], dpop=True) as agent, httpx.Client() as client:
        helper_id = agent.agent_id + "/helper"
        own = OfflineReporter(client, broker.url, agent.auth)
        chain = own.attenuate(agent, helper_id, bytes(helper_key.verify_key), ttl=60)
        helper = OfflineCredential(chain, helper_key)
        theirs = OfflineReporter(client, broker.url, helper.auth)
        onward = theirs.attenuate(
            helper, helper_id + "/worker", bytes(worker_key.verify_key), scope=["read:data:1"]
        )
        assert OfflineCredential(onward, worker_key).exp <= helper.exp
        assert own.flush() == 1 and theirs.flush() == 1 and theirs.refused == 0
        reported = _reported(broker)
        assert helper_id in reported and helper_id + "/worker" in reported


def test_an_async_agent_reports_with_an_async_client(broker: BrokerForTests) -> None:
    async def main() -> int:
        launch = broker.launch_token(["read:data:*"])
        agent = await AsyncAgent.register(
            broker.url, launch, "orch", "task-a", ["read:data:*"], dpop=True
        )
        async with agent, httpx.AsyncClient() as client:
            reporter = OfflineReporter(client, broker.url, agent.auth)
            helper = nacl.signing.SigningKey.generate()
            reporter.attenuate(agent, agent.agent_id + "/async", bytes(helper.verify_key))
            with pytest.raises(TypeError):
                reporter.flush()  # the sync flush needs an httpx.Client
            return await reporter.aflush()

    before = len(_reported(broker))
    assert asyncio.run(main()) == 1
    assert len(_reported(broker)) == before + 1


def test_a_spool_is_never_written_through_a_planted_link(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    # The spool's directory is shared: someone planted the name its rewrite used.
    key = nacl.signing.SigningKey.generate()
    spool = tmp_path / "reports.jsonl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("someone else's file\n")
    (tmp_path / "reports.jsonl.tmp").symlink_to(elsewhere)
    with broker.agent(["read:data:*"], key=key, dpop=True) as agent, httpx.Client() as client:
        first, second = _levels(agent, key, 2)
        reporter = OfflineReporter(client, _unreachable(), agent.auth, limit=1, spool=spool)
        reporter.derived(first)
        reporter.derived(second)  # the queue is full: the spool is rewritten
        assert elsewhere.read_text() == "someone else's file\n"
        assert second in spool.read_text()
        assert not spool.is_symlink()
        assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o660])
def test_a_spool_others_may_read_is_refused(
    broker: BrokerForTests, tmp_path: Path, mode: int
) -> None:
    # Chains hold their root token: one appended to a file others read is given away.
    spool = tmp_path / "reports.jsonl"
    spool.touch()
    spool.chmod(mode)
    with (
        broker.agent(["read:data:*"]) as agent,
        httpx.Client() as client,
        pytest.raises(ValueError, match="group or others"),
    ):
        OfflineReporter(client, _unreachable(), agent.auth, spool=spool)
    assert spool.read_text() == ""


def test_a_spool_that_is_a_link_is_refused(broker: BrokerForTests, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.touch(mode=0o600)
    spool = tmp_path / "reports.jsonl"
    spool.symlink_to(target)
    with (
        broker.agent(["read:data:*"]) as agent,
        httpx.Client() as client,
        pytest.raises(ValueError, match="symbolic link"),
    ):
        OfflineReporter(client, _unreachable(), agent.auth, spool=spool)


def _spool_lines(count: int) -> list[bytes]:
    """``count`` reports as the spool holds them, one a line."""
    reports = [
        PendingReport("derivation", f"key-{i}", {"chain": f"chain-{i}-" + "x" * 500})
        for i in range(count)
    ]
    return [(report.to_json() + "\n").encode("ascii") for report in reports]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_a_spool_torn_by_a_crash_keeps_the_reports_before_the_tear(tmp_path: Path) -> None:
    spool = tmp_path / "reports.jsonl"
    lines = _spool_lines(3)
    kept = b"".join(lines[:2])
    with httpx.Client() as client:
        # The agent died in the middle of writing its third report, at any byte of it.
        for cut in range(0, len(lines[2]) - 1, 37):
            _write_private(spool, kept + lines[2][:cut])
            loaded = OfflineReporter(client, _unreachable(), lambda r: r, spool=spool)
            assert loaded.pending == 2, cut
            assert spool.read_bytes() == kept  # the torn line is gone, not appended to
        # Bytes damaged on disk (a crash of the machine) in the middle line: that report
        # is lost, the others are read, and loading does not fail.
        damaged = bytearray(b"".join(lines))
        damaged[len(lines[0]) + 40] = 0xFF
        _write_private(spool, bytes(damaged))
        loaded = OfflineReporter(client, _unreachable(), lambda r: r, spool=spool)
        assert loaded.pending == 2
        assert spool.read_bytes() == lines[0] + lines[2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_does_not_write_its_parents_spool(
    broker: BrokerForTests, tmp_path: Path
) -> None:
    # Would fail if: a reporter copied by fork() (a pre-forking server's workers) went on
    # appending to and rewriting the parent's spool, so that each process's rewrite
    # dropped the reports the other had spooled since the fork.
    import json
    import select

    key = nacl.signing.SigningKey.generate()
    spool = tmp_path / "reports.jsonl"
    with broker.agent(["read:data:*"], key=key, dpop=True) as agent, httpx.Client() as client:
        levels = _levels(agent, key, 3)
        reporter = OfflineReporter(client, _unreachable(), agent.auth, spool=spool)
        reporter.derived(levels[0])
        before = spool.read_bytes()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            os.close(read)
            try:
                reporter.derived(levels[1])
                answer = {"derived": True, "pending": reporter.pending}
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                answer = {"error": f"{type(exc).__name__}: {exc}", "pending": reporter.pending}
            os.write(write, json.dumps(answer).encode())
            os._exit(0)
        os.close(write)
        try:
            assert select.select([read], [], [], 10)[0], "the child did not answer"
            answer = json.loads(os.read(read, 65536))
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        assert "derived" not in answer, answer
        assert "ValueError" in answer["error"] and str(spool) in answer["error"]
        assert answer["pending"] == 0  # the parent's reports stay the parent's to send
        assert spool.read_bytes() == before  # the child wrote nothing into it
        reporter.derived(levels[2])  # the parent's spool is still the parent's
        assert reporter.pending == 2 and len(spool.read_bytes().splitlines()) == 2
