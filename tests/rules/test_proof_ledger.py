"""The replay ledger's per-key quota (docs/decisions.md 141): one holder sending fresh
proofs as fast as they are accepted fills its own quota, never the ledger every other
holder needs; the capacity still fails closed; a key's count drops as its proofs expire."""

from __future__ import annotations

import threading

import nacl.signing
import pytest

from tasklease.client._holder import DPoPKey
from tasklease.rules.binding import (
    DEFAULT_HOLDER_QUOTA,
    PROOF_OVER_QUOTA,
    PROOF_REPLAYED,
    BindingError,
    DPoPProofError,
    DPoPVerifier,
    MemoryProofLedger,
    Presentation,
    QuotaProofLedger,
    check_binding,
)
from tasklease.rules.wimse import WorkloadIdentity, WorkloadProofError, make_wpt, verify_wpt

NOW = 1_800_000_000.0
URL = "https://api.example/data/42"
TOKEN = "the.token.x"


def _keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


# --- the ledger --------------------------------------------------------------------------


def test_a_key_at_its_quota_has_its_proofs_refused_and_only_its() -> None:
    ledger = MemoryProofLedger(100, holder_quota=3)
    assert isinstance(ledger, QuotaProofLedger)
    for key in _keys("m", 3):
        assert ledger.remember_for("mallory", key, NOW + 60, NOW)
    with pytest.raises(DPoPProofError) as refused:
        ledger.remember_for("mallory", "m-3", NOW + 60, NOW)
    assert refused.value.reason == PROOF_OVER_QUOTA
    # A proof seen before is still a replay (False), not a quota refusal.
    assert ledger.remember_for("mallory", "m-0", NOW + 60, NOW) is False
    # Every other holder is untouched, up to its own quota.
    for key in _keys("a", 3):
        assert ledger.remember_for("alice", key, NOW + 60, NOW)
    assert ledger.remember_for("bob", "b-0", NOW + 60, NOW)
    assert len(ledger) == 7


def _following(capacity: int, quota: int) -> tuple[MemoryProofLedger, list[float]]:
    """A ledger whose elapsed time is the test's to move (with its calls' ``now``)."""
    elapsed = [NOW]
    return MemoryProofLedger(capacity, holder_quota=quota, monotonic=lambda: elapsed[0]), elapsed


def test_expiry_frees_a_keys_quota_exactly_as_its_proofs_expire() -> None:
    ledger, elapsed = _following(100, 3)
    for key, expires in zip(_keys("m", 3), (NOW + 10, NOW + 20, NOW + 30), strict=True):
        assert ledger.remember_for("mallory", key, expires, NOW)
    elapsed[0] = NOW + 9.999
    with pytest.raises(DPoPProofError, match="quota"):
        ledger.remember_for("mallory", "late", NOW + 70, NOW + 9.999)
    # At the first proof's expiry exactly one place is free, not more.
    elapsed[0] = NOW + 10
    assert ledger.remember_for("mallory", "x-1", NOW + 70, NOW + 10)
    with pytest.raises(DPoPProofError, match="quota"):
        ledger.remember_for("mallory", "x-2", NOW + 70, NOW + 10)
    elapsed[0] = NOW + 20
    assert ledger.remember_for("mallory", "x-2", NOW + 70, NOW + 20)
    elapsed[0] = NOW + 29
    with pytest.raises(DPoPProofError, match="quota"):
        ledger.remember_for("mallory", "x-3", NOW + 70, NOW + 29)
    # Once every proof of the key has expired, it has its whole quota again.
    elapsed[0] = NOW + 70
    for key in _keys("y", 3):
        assert ledger.remember_for("mallory", key, NOW + 200, NOW + 70)
    assert len(ledger) == 3


def test_a_proof_is_kept_until_its_expiry_by_the_clock_and_by_elapsed_time() -> None:
    # Stepped forward past its expiry, the clock does not drop a proof before that much
    # time has elapsed; stepped back, it keeps one until the clock passes its expiry again.
    ledger, elapsed = _following(100, 3)
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW)
    elapsed[0] = NOW + 1
    assert ledger.remember_for("bob", "b-0", NOW + 3660, NOW + 3600)  # a step forward
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW + 2) is False  # and back
    elapsed[0] = NOW + 3600  # an hour elapsed, the clock an hour behind: both still held
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW + 2) is False
    assert ledger.remember_for("bob", "b-0", NOW + 3660, NOW + 2) is False
    assert ledger.remember_for("carol", "c-0", NOW + 3660, NOW + 60)  # a-0 over by both
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW + 60)
    assert ledger.remember_for("bob", "b-0", NOW + 3660, NOW + 60) is False
    assert len(ledger) == 2  # b-0 and c-0; a-0 was over when recorded again


def test_the_capacity_still_fails_closed_for_everyone() -> None:
    ledger, elapsed = _following(4, 3)
    for key in _keys("m", 3):
        assert ledger.remember_for("mallory", key, NOW + 10, NOW)
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW)
    with pytest.raises(DPoPProofError) as full:
        ledger.remember_for("bob", "b-0", NOW + 60, NOW)
    assert full.value.reason == "DPoP replay cache full"
    with pytest.raises(DPoPProofError, match="full"):
        ledger.remember("anonymous", NOW + 60, NOW)  # no holder: the capacity alone
    elapsed[0] = NOW + 10
    assert ledger.remember_for("bob", "b-0", NOW + 60, NOW + 10)  # mallory's expired


def test_proofs_without_a_holder_count_against_the_capacity_only() -> None:
    ledger = MemoryProofLedger(10, holder_quota=2)
    for key in _keys("k", 10):
        assert ledger.remember(key, NOW + 60, NOW)
    assert ledger.remember("k-0", NOW + 60, NOW) is False
    with pytest.raises(DPoPProofError, match="full"):
        ledger.remember("k-10", NOW + 60, NOW)


def test_a_quota_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="holder_quota"):
        MemoryProofLedger(10, holder_quota=0)
    assert MemoryProofLedger().holder_quota == DEFAULT_HOLDER_QUOTA
    ledger = DPoPVerifier(60, holder_quota=7).ledger
    assert isinstance(ledger, MemoryProofLedger) and ledger.holder_quota == 7


def test_threads_racing_one_key_get_exactly_its_quota() -> None:
    ledger = MemoryProofLedger(10_000, holder_quota=50)
    accepted: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(8)

    def flood(thread: int) -> None:
        start.wait()
        for key in _keys(f"t{thread}", 40):
            try:
                ledger.remember_for("mallory", key, NOW + 60, NOW)
                accepted.append(key)
            except DPoPProofError:
                refused.append(key)

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 50 and len(refused) == 270 and len(ledger) == 50


# --- the verifier's use of it --------------------------------------------------------------


def _dpop_key(seed: bytes, clock: list[float]) -> DPoPKey:
    return DPoPKey(nacl.signing.SigningKey(seed * 32), clock=lambda: clock[0])


def _present(dpop: DPoPVerifier, key: DPoPKey, cnf_key: DPoPKey, now: float) -> str:
    """check_binding for a token bound to ``cnf_key`` with a fresh proof by ``key``."""
    proof = key.proof("GET", URL, TOKEN)
    presented = Presentation(scheme="DPoP", dpop_proof=proof, htm="GET", htu=URL)
    try:
        check_binding({"jkt": cnf_key.thumbprint}, TOKEN, presented, dpop=dpop, now=now)
    except BindingError as exc:
        return exc.reason
    return "ok"


def test_one_key_flooding_a_verifier_does_not_lock_another_out() -> None:
    clock = [NOW]
    ledger = MemoryProofLedger(12, holder_quota=4, monotonic=lambda: clock[0])
    dpop = DPoPVerifier(60, ledger=ledger)
    mallory, alice = _dpop_key(b"m", clock), _dpop_key(b"a", clock)
    answers = [_present(dpop, mallory, mallory, NOW) for _ in range(20)]
    assert answers[:4] == ["ok"] * 4 and set(answers[4:]) == {PROOF_OVER_QUOTA}
    assert len(dpop) == 4  # the refused proofs were not remembered
    assert [_present(dpop, alice, alice, NOW) for _ in range(4)] == ["ok"] * 4
    # Mallory's proofs leave the window: its quota is free again.
    clock[0] = NOW + 60
    assert _present(dpop, mallory, mallory, NOW + 60) == "ok"


def test_proofs_by_other_keys_than_the_tokens_are_refused_before_they_are_remembered() -> None:
    """Otherwise one token's holder, signing each proof with a fresh key (a fresh holder),
    fills the ledger past any per-key quota."""
    clock = [NOW]
    dpop = DPoPVerifier(60, capacity=5, holder_quota=2)
    mallory = _dpop_key(b"m", clock)
    for n in range(10):
        fresh = _dpop_key(bytes([n + 1]), clock)
        assert _present(dpop, fresh, mallory, NOW) == (
            "DPoP proof signed by another key than the token's cnf.jkt"
        )
    assert len(dpop) == 0
    alice = _dpop_key(b"a", clock)
    assert _present(dpop, alice, alice, NOW) == "ok"


def test_a_ledger_without_quotas_is_still_called_as_before() -> None:
    """A ProofLedger written before quotas (``remember`` only) keeps working unchanged."""

    class Shared:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float, float]] = []

        def remember(self, key: str, expires_at: float, now: float) -> bool:
            self.calls.append((key, expires_at, now))
            return len(self.calls) == 1

    clock = [NOW]
    shared = Shared()
    dpop = DPoPVerifier(60, ledger=shared)
    key = _dpop_key(b"k", clock)
    assert dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW) == key.thumbprint
    with pytest.raises(DPoPProofError) as replayed:
        dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW)
    assert replayed.value.reason == PROOF_REPLAYED
    assert [call[1:] for call in shared.calls] == [(NOW + 60, NOW)] * 2


def test_a_shared_ledger_with_quotas_is_told_whose_proof_it_is() -> None:
    seen: list[str] = []

    class SharedWithQuotas:
        def remember(self, key: str, expires_at: float, now: float) -> bool:
            raise AssertionError("remember_for is the one to call")

        def remember_for(self, holder: str, key: str, expires_at: float, now: float) -> bool:
            seen.append(holder)
            return True

    clock = [NOW]
    key = _dpop_key(b"k", clock)
    dpop = DPoPVerifier(60, ledger=SharedWithQuotas())
    dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW)
    dpop.verify(key.proof("POST", URL), htm="POST", htu=URL, now=NOW, holder="root-key")
    assert seen == [key.thumbprint, "root-key"]


# --- workload proof tokens (WIMSE) ----------------------------------------------------------


def test_one_workload_flooding_wpts_does_not_lock_its_peers_out() -> None:
    target = "https://peer.example/work"
    ledger = MemoryProofLedger(8, holder_quota=3)

    def identity(name: str) -> tuple[nacl.signing.SigningKey, WorkloadIdentity, str]:
        key = nacl.signing.SigningKey(name.encode() * 32)
        public = bytes(key.verify_key)
        sub = f"spiffe://example.org/agent/{name}"
        return key, WorkloadIdentity(sub, "tasklease", int(NOW) + 600, name, public, {}), name

    def use(who: tuple[nacl.signing.SigningKey, WorkloadIdentity, str]) -> str:
        key, workload, wit = who
        wpt = make_wpt(key, wit=wit, target_uri=target, now=NOW)
        try:
            verify_wpt(wpt, identity=workload, wit=wit, target_uri=target, now=NOW, replay=ledger)
        except WorkloadProofError as exc:
            return exc.reason
        return "ok"

    mallory, alice = identity("m"), identity("a")
    answers = [use(mallory) for _ in range(10)]
    assert answers[:3] == ["ok"] * 3 and set(answers[3:]) == {PROOF_OVER_QUOTA}
    assert [use(alice) for _ in range(3)] == ["ok"] * 3


def test_a_proofs_elapsed_deadline_is_its_life_on_the_monotonic_clock() -> None:
    # A monotonic clock counts from an arbitrary origin (boot), not the epoch: the life left
    # to a proof is added to it, never the proof's wall-clock expiry, or a key would be
    # held (and its holder's quota spent) for decades of elapsed time.
    elapsed = [5.0]
    ledger = MemoryProofLedger(100, holder_quota=1, monotonic=lambda: elapsed[0])
    assert ledger.remember_for("alice", "a-0", NOW + 60, NOW)
    elapsed[0] = 66.0  # 61 s elapsed, and as many on the clock
    assert ledger.remember_for("alice", "a-1", NOW + 121, NOW + 61)  # the quota came back
    assert len(ledger) == 1
