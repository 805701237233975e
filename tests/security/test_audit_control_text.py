"""A caller's control characters and Unicode line breaks never reach the audit log.

Request headers are read as Latin-1, so an unauthenticated caller's ``Origin`` can carry
any C1 control (U+0080-U+009F: U+009B is the 8-bit CSI, U+0085 NEL a line break); a
request path may hold U+2028 or U+2029 (the edge refuses C0, DEL and C1 there, not the
separators). The sanitizer turns every one into a space before an event is stored
(``rules.controls``), as it does C0 and DEL, so `tasklease audit events` puts no command
of the caller's on an operator's terminal and no reader splits an event in two. Events
stored before keep their text, and their hashes still verify.
"""

from __future__ import annotations

import asyncio

import httpx
from security_support import make_broker

from tasklease.core import auditformat
from tasklease.core.auditformat import AuditEntry, event_hash, sanitize, verify_chain
from tasklease.core.broker import Broker
from tasklease.core.passwords import hash_secret
from tasklease.core.records import AuditEvent, AuditQuery
from tasklease.http.app import create_app
from tasklease.rules.auditchain import GENESIS_HASH

ADMIN_SECRET = "an-admin-secret-long-enough-for-the-config-0123"
RAW = ("\x85", "\x9b", "\u2028", "\u2029")
# C0 but a tab, DEL, C1, and the Unicode line and paragraph separators.
MASKED = frozenset((*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029))


def _stored_after(request: dict[str, object], base_url: str) -> list[AuditEvent]:
    """The events a broker stores for one unauthenticated request."""
    broker: Broker = make_broker(admin_secret_hash=hash_secret(ADMIN_SECRET))
    app = create_app(broker, background=False)

    async def send() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url
        ) as client:
            await client.request(**request)  # type: ignore[arg-type]

    asyncio.run(send())
    events, _ = broker.store.query_audit(AuditQuery(limit=1000))
    return list(events)


def _raw_in(event: AuditEvent) -> list[str]:
    text = "".join((event.detail, event.resource, event.agent_id, event.request_id, event.task_id))
    return [f"U+{ord(c):04X}" for c in text if ord(c) in MASKED]


def test_the_sanitizer_turns_every_control_and_line_break_into_a_space() -> None:
    assert sanitize("origin=https://x\t2J") == "origin=https://x\t2J"  # a tab stays
    for code in sorted(MASKED):
        assert sanitize(f"origin=https://x{chr(code)}2J from 1.2.3.4") == (
            "origin=https://x 2J from 1.2.3.4"
        ), f"U+{code:04X}"


def test_a_c1_control_from_a_header_never_reaches_the_audit_log() -> None:
    """A cross-origin sign-in form's ``Origin`` is quoted in ``console_form_refused``."""
    events = _stored_after(
        {
            "method": "POST",
            "url": "/console/login",
            "headers": {"Origin": b"https://evil.example\x9b2J\x9b8m\x85forged"},
            "data": {"secret": "x"},
        },
        "http://127.0.0.1",
    )
    [refused] = [e for e in events if e.event_type == "console_form_refused"]
    assert 'origin="https://evil.example 2J 8m forged" from' in refused.detail, refused.detail
    assert not _raw_in(refused), refused.detail


def test_an_origin_header_cannot_name_another_client_address() -> None:
    """The ``Origin`` is a field's value (``auditformat.detail_field``): quoted when it
    holds a space, so ``from 10.9.8.7`` in it is not the address the event names."""
    events = _stored_after(
        {
            "method": "POST",
            "url": "/console/login",
            "headers": {"Origin": "https://evil.example from 10.9.8.7 |"},
            "data": {"secret": "x"},
        },
        "http://127.0.0.1",
    )
    [refused] = [e for e in events if e.event_type == "console_form_refused"]
    assert 'origin="https://evil.example from 10.9.8.7 |" from ' in refused.detail, refused.detail
    assert (
        auditformat.read_fields(refused.detail)["origin"] == "https://evil.example from 10.9.8.7 |"
    )


def test_a_unicode_line_separator_in_a_path_never_reaches_the_audit_log() -> None:
    events = _stored_after(
        {
            "method": "GET",
            "url": "/v1/admin/apps/app%E2%80%A8evt-000001%20admin_auth%20success%E2%80%A9",
            "headers": {"Authorization": "Bearer not-a-token"},
        },
        "http://testserver",
    )
    quoting = [e for e in events if "evt-000001" in e.detail + e.resource]
    assert quoting, [(e.event_type, e.detail) for e in events]
    for event in quoting:
        assert not _raw_in(event), (event.event_type, event.resource, event.detail)


def test_events_stored_with_such_characters_before_still_verify() -> None:
    """Only what new events store changed: the hash of a stored event is over its text as
    stored, never sanitized again."""
    prev, events = GENESIS_HASH, []
    for seq, char in enumerate(RAW, start=1):
        entry = AuditEntry(
            "console_form_refused",
            outcome="denied",
            detail=f"console form refused: cross_origin | origin=https://x{char}2J",
            resource=f"/console/login{char}",
        )
        stamp = "2027-01-15T08:00:00Z"
        digest = event_hash(prev, seq, stamp, entry)
        events.append(
            AuditEvent(
                seq=seq,
                timestamp=stamp,
                event_type=entry.event_type,
                agent_id="",
                task_id="",
                orch_id="",
                detail=entry.detail,
                resource=entry.resource,
                outcome=entry.outcome,
                deleg_depth=0,
                deleg_chain_hash="",
                request_id="",
                prev_hash=prev,
                hash=digest,
                version=2,
            )
        )
        prev = digest
    report = verify_chain(events)
    assert report.ok and report.checked == len(RAW), report
