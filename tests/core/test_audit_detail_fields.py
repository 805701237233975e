"""A caller's text in an audit detail is one field: it cannot plant a field of its own.

Details are ``key=value`` fields. A value a caller chose (a launch token's agent name, an
app's name, a reason, an ``Origin`` header...) is written bare only when it holds nothing
but visible ASCII without a space, quote, backslash or ``=``; else it is double-quoted
with ``"`` and ``\\`` escaped (``core.auditformat.detail_field``). A reader then cannot take any
part of it for a field the broker wrote; the views read it back as the one value.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasklease.core import auditformat
from tasklease.core.auditformat import sanitize
from tasklease.core.store import AuditQuery
from tasklease.rules.controls import CONTROLS, escaped

BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def test_a_launch_token_name_cannot_plant_a_field_before_the_real_one(
    broker: Any, kit: Any
) -> None:
    name = "x created_by=mallory"
    broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name=name,
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    (issued,) = events(broker, "launch_token_issued")
    assert 'agent="x created_by=mallory" ' in issued.detail, issued.detail
    found = auditformat.read_fields(issued.detail)
    assert found["agent"] == name
    assert found["created_by"] == "admin"  # the real one, the admin that made it
    assert issued.detail.count("created_by=") == 2  # the name's, inside its quotes, and ours


@pytest.mark.parametrize(
    "value",
    ['a" by=root', "a\\", 'x\\" by=root', "", "a=b", "it's", "a b", "x\u202eb", "é"],
)
def test_every_value_reads_back_as_itself(value: str) -> None:
    detail = f"{auditformat.detail_field('name', value)} by=admin"
    # Control characters (bidi ones among them) become spaces, as everywhere in the log.
    assert auditformat.read_fields(detail) == {"name": value.replace("\u202e", " "), "by": "admin"}
    assert auditformat.read_fields(sanitize(detail))["by"] == "admin"


def test_a_plain_value_is_written_as_it_is() -> None:
    assert auditformat.detail_field("jti", "0123abcd") == "jti=0123abcd"
    assert (
        auditformat.detail_field("target", "spiffe://example.org/agent/x")
        == "target=spiffe://example.org/agent/x"
    )


@pytest.mark.parametrize(
    "value",
    [
        "a password=hunter2",
        'a password="hun ter"2',
        "a password='hun ter'2",
        "a password='hunter2''",
        "a password='hunter2'\"",
        'a password="hunter2',
        "a password=***REDACTED***hunter2",
        "a -----BEGIN KEY-----hunter2",
    ],
)
@pytest.mark.parametrize("after", [" by=admin", ": by=admin", "; by=admin"])
def test_a_redacted_secret_keeps_the_quotes_closed(value: str, after: str) -> None:
    detail = f"{auditformat.detail_field('name', value)}{after}"
    cleaned = sanitize(detail)
    assert "hunter2" not in cleaned and "hun ter" not in cleaned, cleaned
    assert cleaned.endswith(f'"{after}'), cleaned
    assert auditformat.read_fields(cleaned)["by"] == "admin", cleaned


def test_the_bidi_controls_are_controls() -> None:
    for code in BIDI:
        assert code in CONTROLS, f"U+{code:04X}"
        assert escaped(f"a{chr(code)}b") == f"a\\u{code:04x}b"
        assert sanitize(f"name=a{chr(code)}b by=admin") == "name=a b by=admin"


def test_a_bidi_override_in_a_name_reaches_no_audit_detail(broker: Any, kit: Any) -> None:
    broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="report\u202enimda=yb_detaerc",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    (issued,) = events(broker, "launch_token_issued")
    assert not any(ord(c) in BIDI for c in issued.detail), issued.detail
    assert auditformat.read_fields(issued.detail)["agent"] == "report nimda=yb_detaerc"


@pytest.mark.parametrize(
    "name", ["x -----BEGIN A-----", "x password='", 'x secret="', "x password=", "api_key:"]
)
def test_a_name_shaped_like_a_secret_erases_none_of_the_fields_after_it(
    broker: Any, kit: Any, name: str
) -> None:
    """The sanitizer redacts a PEM block to its end, a quoted secret to its closing quote:
    in a name written bare, to the end of the detail, the broker's own fields gone."""
    broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name=name,
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    (issued,) = events(broker, "launch_token_issued")
    assert " created_by=admin " in issued.detail, issued.detail
    assert " scope=[read:data:*] " in issued.detail, issued.detail
    assert " policy=allow[" in issued.detail, issued.detail


@pytest.mark.parametrize(
    "why",
    [
        "kid 'k by=mallory' not among the issuer's keys",
        "payload: `x password='` is given twice in one object",
        'kid "x password="',
        "name x -----BEGIN A-----",
        "ends in password:",
        "ends in DPoP",
        "x\u202e by=mallory",
        "a" * 3000,
    ],
)
def test_a_refusal_reason_plants_and_erases_no_field(why: str) -> None:
    """``auditformat.reason_text``: a reason that quotes a caller's text is one value."""
    detail = sanitize(f"app=x refused: {auditformat.reason_text(why)} by=admin")
    assert auditformat.read_fields(detail) == {"app": "x", "by": "admin"}, detail
    assert re.sub(r'"(?:[^"\\]|\\.)*"', "", detail).count("by=") == 1, detail


@pytest.mark.parametrize(
    "why", ["nonce expired", "wrong secret", "subject too long for its agents' ancestor"]
)
def test_a_reason_of_the_brokers_own_is_written_as_it_is(why: str) -> None:
    assert auditformat.reason_text(why) == why
