"""The witnesses a broker starts with, and their quorum, are in the audit log.

Which witnesses a checkpoint must reach, and how many must cosign it before it is final,
is configuration: a start with another set (a witness dropped, its key or URL replaced,
the quorum lowered) writes ``audit_witnesses_changed``, before -> after, once, however
many processes start on the store together.
"""

from __future__ import annotations

import threading
from typing import Any

import nacl.signing

from tasklease.core.store import AuditQuery
from tasklease.rules.note import COSIGNATURE, VerifierKey
from tasklease.storage import MemoryStore, open_store

EVENT = "audit_witnesses_changed"


def _entry(seed: int, url: str = "") -> str:
    key = nacl.signing.SigningKey(bytes([seed]) * 32).verify_key
    vkey = VerifierKey(f"w{seed}.example", COSIGNATURE, bytes(key)).vkey
    return f"{url or f'https://w{seed}.example'} {vkey}"


def _details(broker: Any) -> list[str]:
    events, _ = broker.audit_events(AuditQuery(event_type=EVENT))
    return [event.detail for event in events]


def test_a_start_with_other_witnesses_is_audited_once(make_broker: Any) -> None:
    store = MemoryStore()

    def start(*witnesses: str, quorum: int) -> Any:
        broker = make_broker(store=store, audit_witnesses=witnesses, audit_witness_quorum=quorum)
        broker.transparency.record_witnesses()
        return broker

    start(quorum=0)  # no witnesses, none recorded: nothing to say
    assert _details(start(quorum=0)) == []
    broker = start(_entry(1), _entry(2), quorum=2)
    [first] = _details(broker)
    assert "quorum=2" in first and "w1.example" in first and "w2.example" in first
    start(_entry(2), _entry(1), quorum=2)  # the same set, in another order
    assert len(_details(broker)) == 1
    start(_entry(1), quorum=1)  # a witness dropped and the quorum lowered
    second = _details(broker)[-1]
    before, _, after = second.partition(" -> ")
    assert "quorum=2" in before and "w2.example" in before
    assert "quorum=1" in after and "w2.example" not in after
    start(_entry(1, "https://elsewhere.example"), quorum=1)  # the URL replaced
    assert "elsewhere.example" in _details(broker)[-1].partition(" -> ")[2]
    start(quorum=0)  # every witness removed
    assert "quorum=0 witnesses=[]" in _details(broker)[-1].partition(" -> ")[2]
    assert len(_details(broker)) == 4


def test_processes_starting_together_write_it_once(make_broker: Any, tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path / 'db.sqlite'}"
    stores = [open_store(url) for _ in range(4)]  # a store each, as processes have
    brokers = [
        make_broker(store=store, audit_witnesses=(_entry(3),), audit_witness_quorum=1)
        for store in stores
    ]
    gate = threading.Barrier(len(brokers))

    def start(broker: Any) -> None:
        gate.wait()
        broker.transparency.record_witnesses()

    threads = [threading.Thread(target=start, args=(b,)) for b in brokers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(_details(brokers[0])) == 1
    finally:
        for store in stores:
            store.close()


def test_every_start_of_the_server_records_them(make_broker: Any) -> None:
    from tasklease.server import _started

    broker = make_broker(audit_witnesses=(_entry(4),), audit_witness_quorum=1)
    _started(broker, None)
    _started(broker, None)
    [detail] = _details(broker)
    assert detail.startswith("audit witnesses changed: unrecorded -> quorum=1 witnesses=[")
