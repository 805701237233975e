"""The audit log: a pinned hash-chain format, tamper detection, sanitization, fail-closed
writes and group commit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tasklease.core.audit import AuditLog
from tasklease.core.auditformat import (
    GENESIS_HASH,
    MAX_DETAIL,
    AuditEntry,
    event_hash,
    sanitize,
    sanitized_entry,
    verify_chain,
)
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Conflict, InvalidRequest, Unavailable
from tasklease.core.kernel import with_denial
from tasklease.core.launch import launch_token_hash
from tasklease.core.store import AuditEvent, RevocationRecord
from tasklease.storage import MemoryStore

# --- known-answer vector ----------------------------------------------------------------

KAT_ENTRIES = [
    AuditEntry(
        "agent_registered",
        detail="Agent registered with scope [read:data:*]",
        agent_id="spiffe://tasklease.local/agent/o/t/0123456789abcdef",
        task_id="t",
        orch_id="o",
        request_id="req-1",
    ),
    AuditEntry(
        "delegation_created",
        detail="délégation → b",  # non-ASCII: UTF-8, not \\u escapes
        agent_id="spiffe://tasklease.local/agent/o/t/fedcba9876543210",
        task_id="t",
        orch_id="o",
        deleg_depth=1,
        deleg_chain_hash="ab" * 32,
        request_id="req-2",
    ),
    AuditEntry(
        "token_auth_failed",
        outcome="denied",
        detail='token verification failed: token expired | path=/v1/x "q"',
        resource="/v1/x",
    ),
]
KAT_TIMESTAMPS = ["2027-01-15T08:00:00Z", "2027-01-15T08:00:00.5Z", "2027-01-15T08:00:01.000001Z"]
KAT_HASHES = [
    "e649faf0353da97af3b13e3f5ac5e03987bce90a27e4174a5a11b5b34f96a338",
    "c9bc6679741c4e818b1d53b545c0067300b1793f3d3e73aad9ffb01fced11e48",
    "2cc6cbb3de4a03ec06094e4f045351a4e270d0e1c71fa52b9b40e4c5b1c79287",
]


def documented_hash(prev: str, seq: int, timestamp: str, e: AuditEntry) -> str:
    """The v1 layout, rebuilt from audit.py's module docstring alone."""
    fields = [
        seq,
        timestamp,
        e.event_type,
        e.agent_id,
        e.task_id,
        e.orch_id,
        e.detail,
        e.resource,
        e.outcome,
        e.deleg_depth,
        e.deleg_chain_hash,
        e.request_id,
    ]
    canonical = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(b"tasklease-audit-v1\n" + prev.encode() + b"\n" + canonical).hexdigest()


def test_known_answer_vector() -> None:
    prev = GENESIS_HASH
    assert prev == "0" * 64
    for seq, (entry, ts, expected) in enumerate(
        zip(KAT_ENTRIES, KAT_TIMESTAMPS, KAT_HASHES, strict=True), start=1
    ):
        assert event_hash(prev, seq, ts, entry, version=1) == expected
        assert documented_hash(prev, seq, ts, entry) == expected
        prev = expected


def test_known_answer_vector_v2_literal_bytes() -> None:
    """Format v2 adds the lineage (tenant, app, principal_ref, chain root) to the hashed array,
    under its own prefix: the exact bytes of one event, written out by hand."""
    entry = dataclasses.replace(
        KAT_ENTRIES[0], app_id="app-1", principal_ref="0123456789abcdef", chain_root="spiffe://r"
    )
    message = (
        b"tasklease-audit-v2\n"
        + b"0" * 64
        + b"\n"
        + b'[1,"2027-01-15T08:00:00Z","agent_registered",'
        + b'"spiffe://tasklease.local/agent/o/t/0123456789abcdef","t","o",'
        + b'"Agent registered with scope [read:data:*]","","success",0,"","req-1",'
        + b'"acme","app-1","0123456789abcdef","spiffe://r"]'
    )
    expected = hashlib.sha256(message).hexdigest()
    assert event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[0], entry, "acme") == expected
    assert event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[0], entry, "acme", 2) == expected
    # The same event in format v1 (what it was before lineage) hashes differently.
    assert event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[0], entry, "acme", 1) == KAT_HASHES[0]


def test_known_answer_vector_first_event_literal_bytes() -> None:
    """The exact bytes of the first event, written out by hand."""
    message = (
        b"tasklease-audit-v1\n"
        + b"0" * 64
        + b"\n"
        + b'[1,"2027-01-15T08:00:00Z","agent_registered",'
        + b'"spiffe://tasklease.local/agent/o/t/0123456789abcdef","t","o",'
        + b'"Agent registered with scope [read:data:*]","","success",0,"","req-1"]'
    )
    assert hashlib.sha256(message).hexdigest() == KAT_HASHES[0]


def kat_events() -> list[AuditEvent]:
    out = []
    prev = GENESIS_HASH
    for seq, (e, ts, h) in enumerate(zip(KAT_ENTRIES, KAT_TIMESTAMPS, KAT_HASHES), start=1):
        out.append(
            AuditEvent(
                seq=seq,
                timestamp=ts,
                event_type=e.event_type,
                agent_id=e.agent_id,
                task_id=e.task_id,
                orch_id=e.orch_id,
                detail=e.detail,
                resource=e.resource,
                outcome=e.outcome,
                deleg_depth=e.deleg_depth,
                deleg_chain_hash=e.deleg_chain_hash,
                request_id=e.request_id,
                prev_hash=prev,
                hash=h,
            )
        )
        prev = h
    return out


def test_every_field_is_covered_by_the_hash() -> None:
    entry = KAT_ENTRIES[1]
    base = event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[0], entry)
    for field in dataclasses.fields(AuditEntry):
        value = getattr(entry, field.name)
        changed = value + 1 if isinstance(value, int) else value + "x"
        other = dataclasses.replace(entry, **{field.name: changed})
        assert event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[0], other) != base, field.name
    assert event_hash(GENESIS_HASH, 2, KAT_TIMESTAMPS[0], entry) != base
    assert event_hash(GENESIS_HASH, 1, KAT_TIMESTAMPS[1], entry) != base
    assert event_hash("1" * 64, 1, KAT_TIMESTAMPS[0], entry) != base


def test_field_boundaries_cannot_be_shifted() -> None:
    """A delimiter-joined encoding would give these two the same bytes; JSON does not."""
    a = AuditEntry("e", agent_id="a|b", task_id="c")
    b = AuditEntry("e", agent_id="a", task_id="b|c")
    assert event_hash(GENESIS_HASH, 1, "t", a) != event_hash(GENESIS_HASH, 1, "t", b)


# --- verify_chain -----------------------------------------------------------------------


def test_verify_chain_accepts_the_vector() -> None:
    report = verify_chain(kat_events())
    assert report.ok
    assert report.checked == 3
    assert report.head_hash == KAT_HASHES[2]
    empty = verify_chain([])
    assert empty.ok
    assert empty.head_hash == GENESIS_HASH


def test_verify_chain_detects_edited_detail() -> None:
    events = kat_events()
    events[1] = dataclasses.replace(events[1], detail="nothing to see here")
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == "evt-000002"
    assert report.checked == 1
    assert "content" in report.reason


def test_verify_chain_detects_deleted_middle_event() -> None:
    events = kat_events()
    del events[1]
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == "evt-000003"
    assert "gap" in report.reason


def test_verify_chain_detects_deleted_and_renumbered_event() -> None:
    events = kat_events()
    del events[1]
    events[1] = dataclasses.replace(events[1], seq=2)
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == "evt-000002"


def test_verify_chain_detects_reordered_pair() -> None:
    events = kat_events()
    events[1], events[2] = events[2], events[1]
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == "evt-000003"
    # Even when the sequence numbers are swapped back into order.
    a, b = kat_events()[1:]
    swapped = [kat_events()[0], dataclasses.replace(b, seq=2), dataclasses.replace(a, seq=3)]
    report = verify_chain(swapped)
    assert not report.ok
    assert report.broken_at == "evt-000002"


def test_verify_chain_detects_wrong_prev_hash() -> None:
    events = kat_events()
    forged_prev = "f" * 64
    # Re-hash the event over the wrong prev_hash so its own content is consistent.
    e = events[2]
    events[2] = dataclasses.replace(
        e, prev_hash=forged_prev, hash=event_hash(forged_prev, e.seq, e.timestamp, e)
    )
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == "evt-000003"
    assert "prev_hash" in report.reason


def test_verify_chain_detects_an_edit_rehashed_from_there_on() -> None:
    """Rewriting one event and re-chaining all later ones still breaks at the edit's
    successor... unless the attacker rewrites to the head; then the head hash changes."""
    events = kat_events()
    edited = dataclasses.replace(events[0], detail="rewritten")
    prev = GENESIS_HASH
    rebuilt = []
    for e in [edited, *events[1:]]:
        h = event_hash(prev, e.seq, e.timestamp, e)
        rebuilt.append(dataclasses.replace(e, prev_hash=prev, hash=h))
        prev = h
    report = verify_chain(rebuilt)
    assert report.ok  # a full rewrite is self-consistent...
    assert report.head_hash != KAT_HASHES[2]  # ...but the anchored head no longer matches


def test_verify_chain_progress_callback() -> None:
    seen: list[int] = []
    assert verify_chain(kat_events(), progress=seen.append).ok
    assert seen == []  # only every 10 000 events


# --- sanitize -----------------------------------------------------------------------------


def test_sanitize_redacts_jwts(broker: Any, kit: Any) -> None:
    token = kit.admin(broker).token
    out = sanitize(f"presented {token} at /v1/x")
    assert token not in out
    assert token.split(".")[2] not in out
    assert "[REDACTED:jwt]" in out
    assert out.startswith("presented ")
    assert out.endswith(" at /v1/x")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("client_secret=s3cr3t-value", "s3cr3t-value"),
        ("client_secret = 's3cr3t value'", "s3cr3t value"),
        ('password: "hunter two"', "hunter two"),
        ("password: hunter2", "hunter2"),
        ("PASSWORD=Hunter2", "Hunter2"),
        ("api_key=AKIAIOSFODNN7", "AKIAIOSFODNN7"),
        ("x-admin-secret: letmein", "letmein"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("got bearer abcdefgh12345678 from client", "abcdefgh12345678"),
        ("DPoP zyxwvuts98765432", "zyxwvuts98765432"),
    ],
)
def test_sanitize_redacts_secret_values(text: str, secret: str) -> None:
    out = sanitize(text)
    assert secret not in out
    assert "REDACTED" in out


def test_sanitize_keeps_the_key_names() -> None:
    assert sanitize("client_secret=abc, next=1") == "client_secret=***REDACTED***, next=1"
    assert sanitize("password: abc") == "password: ***REDACTED***"
    assert sanitize("token bearer abcdefghij end") == "token bearer [REDACTED] end"


def test_sanitize_redacts_64_hex() -> None:
    secret = "0123456789abcdef" * 4
    assert sanitize(f"launch token {secret} used") == "launch token [REDACTED:hex] used"
    assert sanitize(f"id={secret}") == "id=[REDACTED:hex]"
    # Shorter ids (jtis, hash prefixes) are what audit events name things by: kept.
    jti = "0123456789abcdef" * 2
    assert sanitize(f"jti={jti}") == f"jti={jti}"
    # Glued to other text, in capitals or in a longer run: the secret all the same.
    for glued in (f"task_{secret}", f"{secret}x", secret.upper(), f"{secret}ab", f"T{secret}"):
        assert secret.upper() not in sanitize(glued).upper(), glued
        assert "[REDACTED:hex]" in sanitize(glued)


def test_sanitize_redacts_by_reference_tokens() -> None:
    handle = "tlr_" + "Ab3_-" * 8 + "xyz"
    for text in (handle, f"spiffe://td/agent/o/{handle}/1", f"delegate_to={handle}", f"x.{handle}"):
        out = sanitize(text)
        assert handle not in out and "[REDACTED:reference]" in out, text
    assert sanitize("tlr_short") == "tlr_short"  # not a handle's shape


def test_sanitize_redacts_pem_blocks() -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIGf1YkHgZ1Uf1C7H3pS8UyYuU2xRzN0q\n"
        "-----END PRIVATE KEY-----"
    )
    out = sanitize(f"key: {pem} done")
    assert "MC4CAQ" not in out
    assert "[REDACTED:pem]" in out
    truncated = sanitize("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI")
    assert "MHcCAQEEI" not in truncated


def test_sanitize_masks_emails() -> None:
    assert sanitize("principal alice.smith@example.com asked") == (
        "principal a***@example.com asked"
    )
    out = sanitize("to bob@corp.example.org")
    assert "bob@" not in out
    assert out == "to b***@corp.example.org"


def test_sanitize_strips_control_characters() -> None:
    out = sanitize("line1\nline2\r\x00\x1b[31mred\x7f\ttab")
    assert "\n" not in out
    assert "\r" not in out
    assert "\x00" not in out
    assert "\x1b" not in out
    assert "\t" in out
    assert out.startswith("line1 line2")


def test_sanitize_strips_non_printable_control_characters_only() -> None:
    # Text with no control character skips the search; a tab is not printable but stays.
    assert sanitize("plain text, a=b") == "plain text, a=b"
    assert sanitize("a\tb c") == "a\tb c"
    assert sanitize("a\u00a0b\x1fc") == "a\u00a0b c"  # NBSP is not one of ours; US is
    assert sanitize("a\u0085b\u2028c") == "a b c"  # NEL (C1) and U+2028 end lines


def test_the_length_cap_keeps_a_refusals_denial_id() -> None:
    """Redaction can lengthen a detail that ``with_denial`` cut to fit: the cap then cuts
    the middle, never the denial id the detail ends with."""
    exc = Unavailable("x")
    # Words apart: the cut to fit drops the word it goes through whole when it holds the
    # mark of a secret (``auditformat.clipped``), here one "secret=a," of many.
    entry = with_denial(exc, AuditEntry("token_auth_failed", detail="secret=a, " * 300))
    assert entry.detail.count("secret=a,") > 150
    out = sanitize(entry.detail)
    assert len(out) == MAX_DETAIL
    assert out.endswith(f"[truncated] | denial={exc.denial_id}")
    alone = sanitize("x" * MAX_DETAIL + f"denial={exc.denial_id}")
    assert len(alone) == MAX_DETAIL and alone.endswith("[truncated]")  # not at a boundary


def test_lineage_fields_are_sanitized_when_the_others_are_clean() -> None:
    # Every other field clean: the lineage fields are still sanitized, not passed as is.
    entry = AuditEntry(
        "token_issued",
        detail="Token issued",
        agent_id="spiffe://example.org/agent/o/t/i",
        app_id="app client_secret=hunter2",
        principal_ref="ada@example.com",
        chain_root=f"root {'ab' * 32}",
    )
    clean = sanitized_entry(entry)
    assert "hunter2" not in clean.app_id
    assert clean.principal_ref == "a***@example.com"
    assert "ab" * 32 not in clean.chain_root
    plain = AuditEntry("token_issued", agent_id="a", app_id="app-1", principal_ref="0123abcd")
    assert sanitized_entry(plain) is plain


def test_sanitize_caps_length() -> None:
    out = sanitize("z" * 10_000)  # not hex: a long hex run is redacted whole
    assert MAX_DETAIL - 16 < len(out) <= MAX_DETAIL
    assert out.endswith("[truncated]")
    assert sanitize("z" * MAX_DETAIL) == "z" * MAX_DETAIL


def test_details_are_sanitized_before_they_are_hashed_and_stored(broker: Any, kit: Any) -> None:
    # A short compact JWS (a whole one is longer than an agent name may be).
    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"
    broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name=f"x client_secret=hunter2 {token}",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    events = list(broker.store.iter_audit())
    detail = events[-1].detail
    assert "hunter2" not in detail
    assert token not in detail
    assert verify_chain(events).ok  # the hash is over the sanitized text


# --- no secret ever reaches the audit log ---------------------------------------------------


def all_text(store: Any) -> str:
    return "\n".join(repr(dataclasses.astuple(e)) for e in store.iter_audit())


def test_full_flow_leaks_no_secret(broker: Any, kit: Any, store: Any) -> None:
    ctx = kit.ctx
    secrets: list[str] = [kit.admin_secret]
    admin = broker.admin_auth(kit.admin_secret, ctx)
    secrets.append(admin.token)
    with pytest.raises(Exception):
        broker.admin_auth("wrong admin secret 0123", ctx)
    secrets.append("wrong admin secret 0123")

    app, client_secret = broker.register_app(
        admin.claims, name="data-pipe", scopes=["read:data:*"], token_ttl=None, ctx=ctx
    )
    secrets.append(client_secret)
    app_token = broker.app_auth(app.client_id, client_secret, ctx)
    secrets.append(app_token.token)
    with pytest.raises(Exception):
        broker.app_auth(app.client_id, "not-the-secret-" + client_secret[:10], ctx)
    secrets.append("not-the-secret-" + client_secret[:10])
    with pytest.raises(Exception):
        broker.app_auth(client_secret, client_secret, ctx)  # secret pasted as client_id

    admin_launch = kit.launch(broker, ["read:data:*"], single_use=False, ttl=600)
    app_launch, _ = broker.create_launch_token(
        app_token.claims,
        agent_name="worker",
        allowed_scope=["read:data:1"],
        max_ttl=None,
        single_use=True,
        ttl=None,
        ctx=ctx,
    )
    secrets += [admin_launch, app_launch]

    nonces: list[str] = []
    a_args, _ = kit.register_args(broker, admin_launch, ["read:data:*"])
    a = broker.register(**a_args)
    b_args, _ = kit.register_args(broker, app_launch, ["read:data:1"])
    b = broker.register(**b_args)
    nonces += [a_args["nonce"], b_args["nonce"]]
    # Failed registrations: replayed launch token and nonce, scope violation, bad signature.
    for args in (
        dict(b_args),
        dict(a_args),
        dict(kit.register_args(broker, admin_launch, ["write:data:1"])[0]),
        dict(kit.register_args(broker, admin_launch)[0], signature=a_args["signature"]),
    ):
        nonces.append(args["nonce"])
        with pytest.raises(Exception):
            broker.register(**args)
    secrets += [a.token, b.token]

    renewed = broker.renew(a.claims, ctx)
    delegated = broker.delegate(
        renewed.claims, delegate_to=b.claims.sub, scope=["read:data:1"], ttl=None, ctx=ctx
    )
    secrets += [renewed.token, delegated.token]
    with pytest.raises(Exception):
        broker.delegate(
            renewed.claims, delegate_to=b.claims.sub, scope=["write:data:1"], ttl=None, ctx=ctx
        )
    for header in (
        f"Bearer {a.token}",  # renewed: revoked
        f"Bearer {renewed.token}x",
        f"Basic {client_secret}",
        f"Bearer {admin_launch}",
    ):
        with pytest.raises(Exception):
            broker.authenticate(header, ctx)
    broker.authenticate(f"Bearer {delegated.token}", ctx)
    broker.release(delegated.claims, ctx)
    broker.revoke(admin.claims, level="agent", target=b.claims.sub, ctx=ctx)
    broker.revoke(admin.claims, level="task", target="task-1", ctx=ctx)
    broker.deregister_app(admin.claims, app.app_id, ctx)
    broker.clock.advance(5)
    with pytest.raises(Exception):
        broker.authenticate(f"Bearer {app_token.token}", ctx)

    text = all_text(store)
    assert len(list(store.iter_audit())) > 20
    for secret in secrets + nonces:
        assert secret not in text, secret[:16]
    for token in (admin.token, app_token.token, a.token, b.token, renewed.token, delegated.token):
        assert token.split(".")[2] not in text  # not even the signature
    for launch in (admin_launch, app_launch):
        assert launch_token_hash(launch) not in text  # the full hash is not needed either
    assert verify_chain(store.iter_audit()).ok


def test_revoke_target_that_is_a_token_does_not_reach_the_log(broker: Any, kit: Any) -> None:
    """An operator pasting a whole token as the revocation target must not log the token.

    A target holding a token is refused (400) at every level before anything is written:
    it would otherwise be stored and published in the revocation feed, not only audited.
    """
    victim = kit.register(broker)
    for level in ("token", "agent", "task", "chain"):
        with pytest.raises(InvalidRequest):
            broker.revoke(kit.admin(broker).claims, level=level, target=victim.token, ctx=kit.ctx)
    assert victim.token not in all_text(broker.store)
    assert broker.store.revocations_since(0) == []


# --- fail-closed ---------------------------------------------------------------------------


class _FailingTx:
    def __init__(self, tx: Any, store: FlakyStore) -> None:
        self._tx = tx
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def insert_agent(self, agent: Any) -> None:
        self._store.attempted_agents.append(agent.agent_id)
        self._tx.insert_agent(agent)

    def append_audit(self, events: Any) -> None:
        raise OSError("disk full")


class FlakyStore(MemoryStore):
    """A MemoryStore whose audit appends fail while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.attempted_agents: list[str] = []

    @contextmanager
    def write(self) -> Iterator[Any]:
        with super().write() as tx:
            yield _FailingTx(tx, self) if self.failing else tx


@pytest.fixture
def flaky(make_broker: Any) -> Any:
    store = FlakyStore()
    return make_broker(store=store)


def test_register_fails_closed(flaky: Any, kit: Any) -> None:
    store = flaky.store
    launch = kit.launch(flaky)
    args, _ = kit.register_args(flaky, launch)
    head = store.audit_head()
    store.failing = True
    with pytest.raises(Unavailable) as info:
        flaky.register(**args)
    assert info.value.code == "service_unavailable"
    assert "disk full" in info.value.reason
    assert "disk full" not in info.value.detail
    assert len(store.attempted_agents) == 1
    assert store.get_agent(store.attempted_agents[0]) is None
    assert store.get_launch_token(launch_token_hash(launch)).consumed_at is None
    assert store.audit_head() == head
    # Once the log can be written again, the very same request succeeds: nothing was spent.
    store.failing = False
    issued = flaky.register(**args)
    assert store.get_agent(issued.claims.sub) is not None
    assert verify_chain(store.iter_audit()).ok


def test_revoke_fails_closed(flaky: Any, kit: Any) -> None:
    store = flaky.store
    agent = kit.register(flaky)
    store.failing = True
    with pytest.raises(Unavailable):
        flaky.revoke(kit.admin(flaky).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    assert len(flaky.revocations) == 0
    assert store.revocations_since(0) == []
    assert store.get_agent(agent.sub).status == "active"
    assert flaky.validate(agent.token).sub == agent.sub
    store.failing = False
    flaky.revoke(kit.admin(flaky).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    assert len(flaky.revocations) == 1


def test_time_to_recover_from_a_storage_outage_is_a_metric(flaky: Any, kit: Any) -> None:
    def recoveries() -> float:
        value = flaky.metrics.registry.get_sample_value("tasklease_storage_recovery_seconds_count")
        return value or 0.0

    agent = kit.register(flaky)
    assert recoveries() == 0
    flaky.store.failing = True
    for _ in range(2):
        with pytest.raises(Unavailable):
            flaky.revoke(kit.admin(flaky).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    assert recoveries() == 0  # still out
    failures = flaky.metrics.registry.get_sample_value("tasklease_audit_append_failures_total")
    assert failures == 2  # each failed batch, for the audit-append alert (deploy/)
    flaky.store.failing = False
    flaky.revoke(kit.admin(flaky).claims, level="agent", target=agent.sub, ctx=kit.ctx)
    assert recoveries() == 1
    assert flaky.metrics.registry.get_sample_value("tasklease_storage_recovery_seconds_sum") > 0


def test_renew_fails_closed(flaky: Any, kit: Any) -> None:
    agent = kit.register(flaky)
    flaky.store.failing = True
    with pytest.raises(Unavailable):
        flaky.renew(agent.claims, kit.ctx)
    flaky.store.failing = False
    assert flaky.validate(agent.token)  # the predecessor was not revoked
    assert flaky.renew(agent.claims, kit.ctx).claims.rnc == 1


def test_denials_fail_closed_too(flaky: Any, kit: Any) -> None:
    flaky.store.failing = True
    with pytest.raises(Unavailable):
        flaky.authenticate(None, kit.ctx)


# --- group commit -------------------------------------------------------------------------


def test_sixteen_threads_one_unbroken_chain(broker: Any, kit: Any, store: Any) -> None:
    n = 16
    launches = [kit.launch(broker, single_use=True) for _ in range(n)]
    prepared = [
        kit.register_args(broker, lt, task_id=f"task-{i}")[0] for i, lt in enumerate(launches)
    ]
    admin = kit.admin(broker).claims
    before = store.audit_head()[0]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            issued = broker.register(**prepared[i])
            renewed = broker.renew(issued.claims, kit.ctx)
            broker.authenticate(f"Bearer {renewed.token}", kit.ctx)
            broker.revoke(admin, level="token", target=renewed.claims.jti, ctx=kit.ctx)
            with pytest.raises(Exception):
                broker.authenticate(f"Bearer {renewed.token}", kit.ctx)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    events = list(store.iter_audit())
    # Per thread: agent_registered + token_issued, token_renewed, token_revoked, token_auth_failed.
    assert len(events) == before + 5 * n
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    report = verify_chain(events)
    assert report.ok, report
    assert report.head_hash == store.audit_head()[1]


def test_group_commit_batches_queued_units_into_one_transaction() -> None:
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(store, ManualClock(), on_batch=lambda size, _secs: batches.append(size))
    n = 16
    done: list[Any] = []
    with log._lock:  # take the leader's seat while everybody queues
        log._leading = True
    threads = [
        threading.Thread(target=lambda i=i: done.append(log.record(AuditEntry("e", detail=str(i)))))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(log._queue) < n and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(log._queue) == n
    with log._lock:  # hand the seat to the first waiter: it leads the whole queue
        log._queue[0].wake.set()
    for t in threads:
        t.join(timeout=10)
    assert batches == [n]
    assert len(done) == n
    assert sorted(events[0].seq for events in done) == list(range(1, n + 1))
    assert verify_chain(store.iter_audit()).ok


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt or SystemExit raised inside a unit."""


def test_an_interrupted_batch_acknowledges_nobody() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    outcomes: dict[str, Any] = {}

    def call(name: str, fn: Any) -> None:
        try:
            outcomes[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test sorts them out below
            outcomes[name] = exc

    def interrupted(_tx: Any) -> list[AuditEntry]:
        raise _Interrupt

    with log._lock:  # take the leader's seat while everybody queues
        log._leading = True
    callers = [
        ("leader", lambda: log.record(AuditEntry("first"))),
        ("follower", lambda: log.record(AuditEntry("second"))),
        ("interrupted", lambda: log.commit(interrupted)),
    ]
    threads = []
    for name, fn in callers:
        thread = threading.Thread(target=call, args=(name, fn))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(log._queue) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)
    with log._lock:  # hand the seat to the first caller: it leads all three
        log._queue[0].wake.set()
    for thread in threads:
        thread.join(timeout=10)
    assert isinstance(outcomes["leader"], _Interrupt)  # raised in the thread that led
    assert isinstance(outcomes["follower"], Unavailable)  # not acknowledged: rolled back
    assert isinstance(outcomes["interrupted"], Unavailable)
    assert store.audit_head()[0] == 0
    assert log.record(AuditEntry("after"))[0].seq == 1  # the log goes on


@pytest.mark.parametrize("handed_the_lead", [False, True])
def test_a_caller_interrupted_while_waiting_does_not_stall_the_queue(
    handed_the_lead: bool,
) -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    with log._lock:  # someone else holds the leader's seat
        log._leading = True

    def interrupt(_signum: int, _frame: Any) -> None:
        if handed_the_lead:
            with log._lock:
                log._queue[0].wake.set()  # the seat is handed to us ...
        raise _Interrupt  # ... and we are interrupted before we can take it

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(_Interrupt):
            log.record(AuditEntry("never answered"))  # waits in the main thread
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert log._queue == []
    if not handed_the_lead:
        with log._lock:  # the seat's holder finishes with nothing left to do
            log._leading = False
    assert log._leading is False
    assert log.record(AuditEntry("next"))[0].seq == 1  # nothing stalls, nothing was kept


def _queued(log: AuditLog, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(log._queue) < n and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(log._queue) == n


def test_a_thread_interrupted_inside_a_batch_does_not_stop_the_wake_up_chain() -> None:
    # A batch's threads are woken one after another, each by the one before it. The main
    # thread waits in the middle of a batch, is interrupted while the batch is written,
    # and leaves: the thread after it must still be woken, and the batch kept.
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    writing, release = threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}

    def slow(_tx: Any) -> list[AuditEntry]:
        writing.set()
        release.wait(10)
        return [AuditEntry("first")]

    def call(name: str, fn: Any) -> None:
        try:
            outcomes[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test sorts them out below
            outcomes[name] = exc

    def choreograph() -> None:
        _queued(log, 2)  # the leader-to-be, then the main thread
        last.start()
        _queued(log, 3)
        with log._lock:  # hand the seat to the first caller: it leads all three
            log._queue[0].wake.set()
        writing.wait(10)
        os.kill(os.getpid(), signal.SIGUSR1)  # the batch is being written

    def interrupt(_signum: int, _frame: Any) -> None:
        raise _Interrupt

    with log._lock:  # take the leader's seat while everybody queues
        log._leading = True
    leader = threading.Thread(target=call, args=("leader", lambda: log.commit(slow)), daemon=True)
    third = lambda: log.record(AuditEntry("third"))  # noqa: E731
    last = threading.Thread(target=call, args=("last", third), daemon=True)
    helper = threading.Thread(target=choreograph, daemon=True)
    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        leader.start()
        _queued(log, 1)
        helper.start()
        with pytest.raises(_Interrupt):
            log.record(AuditEntry("second"))  # waits in the main thread, second in line
    finally:
        signal.signal(signal.SIGUSR1, previous)
    release.set()
    for thread in (helper, leader, last):
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert outcomes["leader"][0].seq == 1
    assert outcomes["last"][0].seq == 3  # woken past the thread that left
    # The interrupted caller's event is kept all the same: only its answer was lost.
    assert [e.event_type for e in store.iter_audit()] == ["first", "second", "third"]


def test_a_thread_leading_waits_for_the_threads_the_last_batch_woke() -> None:
    # Eight threads write twice each. Their first writes are one batch; the first of them
    # back leads the second batch, and waits for the other seven instead of writing alone.
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(
        store,
        ManualClock(),
        on_batch=lambda size, _secs: batches.append(size),
        return_window=30.0,  # this test's threads come back, however slow the host
    )
    n = 8
    seqs: list[int] = []

    def twice(i: int) -> None:
        for k in range(2):
            seqs.extend(e.seq for e in log.record(AuditEntry("e", detail=f"{i}.{k}")))

    with log._lock:  # take the leader's seat while everybody queues
        log._leading = True
    threads = [threading.Thread(target=twice, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    _queued(log, n)
    with log._lock:
        log._queue[0].wake.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert batches == [n, n]
    assert sorted(seqs) == list(range(1, 2 * n + 1))


def test_a_thread_leading_waits_no_longer_than_the_window() -> None:
    # Two threads were woken by a batch; only one writes again. It leads, waits for the
    # other until the window closes, then writes alone.
    store = MemoryStore()
    batches: list[int] = []
    log = AuditLog(
        store, ManualClock(), on_batch=lambda size, _s: batches.append(size), return_window=0.2
    )
    again: list[Any] = []

    def once(k: int) -> None:
        log.record(AuditEntry("e", detail=str(k)))
        if k == 0:
            again.extend(log.record(AuditEntry("again")))

    with log._lock:
        log._leading = True
    threads = [threading.Thread(target=once, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    _queued(log, 2)
    with log._lock:
        log._queue[0].wake.set()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert batches == [2, 1]
    assert again[0].seq == 3
    # Long after the window, a lone writer waits for nobody (no gate is left behind).
    assert log._gate is None
    assert log.record(AuditEntry("later"))[0].seq == 4


def test_a_failing_unit_undoes_only_its_own_writes() -> None:
    store = MemoryStore()
    log = AuditLog(store, ManualClock())

    def bad(tx: Any) -> list[AuditEntry]:
        tx.insert_revocation(RevocationRecord("token", "bad", 1, 10**10))
        raise Conflict("no")

    def good(tx: Any) -> list[AuditEntry]:
        tx.insert_revocation(RevocationRecord("token", "good", 1, 10**10))
        return [AuditEntry("ok")]

    with pytest.raises(Conflict):
        log.commit(bad)
    events = log.commit(good)
    assert [r.target for r in store.revocations_since(0)] == ["good"]
    assert [e.seq for e in events] == [1]
    assert verify_chain(store.iter_audit()).ok


def test_events_carry_the_clock_time(broker: Any, kit: Any, clock: Any) -> None:
    clock.set(1_800_000_000.25)
    broker.release(kit.register(broker).claims, kit.ctx)
    last = list(broker.store.iter_audit())[-1]
    assert last.timestamp == "2027-01-15T08:00:00.25Z"


def test_a_lone_surrogate_is_replaced_not_fatal_to_the_batch() -> None:
    """Text that is not valid Unicode must not make the batch unencodable."""
    store = MemoryStore()
    log = AuditLog(store, ManualClock())
    events = log.record(AuditEntry("odd", detail="agent=\ud800 name", agent_id="a\udfff"))
    assert events[0].detail == "agent=? name"
    assert events[0].agent_id == "a?"
    assert verify_chain(store.iter_audit()).ok


def test_canonical_encoding_is_compact_utf8_json() -> None:
    entry = AuditEntry("e", detail='quote " backslash \\ tab\t é ✓', agent_id="spiffe://x/a")
    stamp = "2026-01-01T00:00:00Z"
    expected = json.dumps(
        [7, stamp, "e", "spiffe://x/a", "", "", entry.detail, "", "success", 0, "", ""],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    digest = hashlib.sha256(b"tasklease-audit-v1\n" + GENESIS_HASH.encode() + b"\n" + expected)
    assert event_hash(GENESIS_HASH, 7, stamp, entry, version=1) == digest.hexdigest()
