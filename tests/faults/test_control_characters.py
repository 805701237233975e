"""Control characters are refused at the HTTP edge, once, for every route.

Seen under faults: on PostgreSQL a NUL in any identifier (an app's ``client_id`` at
``POST /v1/app/auth``, unauthenticated; an ``agent_id`` in an audit query) made the
driver fail and the broker answer 503 "storage error" (and, inside a unit, failed every
other write of its group-commit batch), while SQLite stored it and answered 200. Now
every backend answers 400 ``invalid_request`` before any route runs.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote_to_bytes

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.http.app import create_app
from tasklease.http.middleware import (
    _CONTROL_BYTES,
    MAX_WALKED_VALUES,
    control_character_error,
)
from tasklease.storage import MemoryStore

ADMIN_SECRET = "a" * 40
PEM_FIELDS = frozenset({"client_cert"})

# Every control character class, as JSON escapes and (DEL, C1) as raw UTF-8.
ESCAPED = ["\\u0000", "\\u0001", "\\u001f", "\\t", "\\n", "\\r", "\\b", "\\f", "\\u007f"]
ESCAPED += ["\\u0080", "\\u0085", "\\u009f"]
RAW = ["\x7f", "\x85", "\x9f"]
# Pieces of percent-encoded text, raw and escaped, around the control ranges.
_PIECES = [b"a", b"%", b"2", b"c", b"C", b"8", b"9", b"0", b"1", b"7", b"f", b"\xc2", b"\x80"]
_PIECES += [b"\x9f", b"\x7f", b"\x05", b"+", b"%c2", b"%C2", b"%80", b"%9f", b"%7f", b"%1f", b"%20"]
_PIECES += [b"%a0", b"%c3", b"\xc3"]


def _json(value: str) -> bytes:
    return ('{"client_id":"abc' + value + 'def","client_secret":"x"}').encode()


@pytest.mark.parametrize("escape", ESCAPED)
def test_an_escaped_control_character_in_a_json_string_is_refused(escape: str) -> None:
    problem = control_character_error("/v1/app/auth", b"", _json(escape), form=False)
    assert problem is not None and "`client_id`" in problem


@pytest.mark.parametrize("raw", RAW)
def test_a_raw_del_or_c1_character_is_refused(raw: str) -> None:
    assert control_character_error("/p", b"", _json(raw), form=False) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"client_id":"plain","client_secret":"x"}',
        b'{"client_id":"a\\\\u0000","client_secret":"x"}',  # a backslash, then text
        b'{"name":"caf\\u00e9 \\u2028","scopes":["read:a:b"]}',  # not controls
        b'{"client_id":"\\"quoted\\"","client_secret":"x\\/y"}',
        '{"name":"Gr\u00fc\u00dfe \u00a0"}'.encode(),  # U+00A0 follows the C1 block
    ],
)
def test_text_without_control_characters_passes(body: bytes) -> None:
    assert control_character_error("/v1/app/auth", b"", body, form=False) is None


def test_nested_strings_and_field_names_are_checked() -> None:
    nested = b'{"scopes":["read:a:b","read:\\u0000:c"]}'
    assert "`scopes`[1]" in (control_character_error("/", b"", nested, form=False) or "")
    key = b'{"na\\u0000me":"x"}'
    assert "field name" in (control_character_error("/", b"", key, form=False) or "")


def test_line_breaks_only_in_pem_fields() -> None:
    pem = b'{"token":"t","client_cert":"-----BEGIN CERTIFICATE-----\\r\\nMIIB\\n-----END"}'
    assert control_character_error("/", b"", pem, form=False, multiline=PEM_FIELDS) is None
    nul_in_pem = b'{"client_cert":"-----BEGIN\\u0000"}'
    refused = control_character_error("/", b"", nul_in_pem, form=False, multiline=PEM_FIELDS)
    assert refused is not None
    elsewhere = b'{"token":"a\\nb"}'
    assert control_character_error("/", b"", elsewhere, form=False, multiline=PEM_FIELDS)


def test_path_query_and_form_are_checked() -> None:
    assert control_character_error("/v1/admin/apps/a\x00", b"", b"", form=False)
    assert control_character_error("/v1/audit/events", b"agent_id=%00", b"", form=False)
    assert control_character_error("/v1/audit/events", b"task_id=a%0Ab", b"", form=False)
    assert control_character_error("/v1/audit/events", b"task_id=%C2%85", b"", form=False)
    assert control_character_error("/x", b"", b"token=a%00b", form=True)
    assert control_character_error("/x", b"", b"token=a\x00b", form=True)
    assert control_character_error("/x", b"agent_id=spiffe%3A%2F%2Fx", b"", form=False) is None
    assert control_character_error("/x", b"", b"token=abc&token_type_hint=x", form=True) is None


def test_a_form_labelled_body_that_is_json_is_checked_as_json() -> None:
    hidden = b'{"target": "t\\u001b[2J"}'
    assert "U+001B" in (control_character_error("/v1/revoke", b"", hidden, form=True) or "")
    assert control_character_error("/v1/revoke", b"", b'{"target": "t"}', form=True) is None


def test_invalid_json_is_left_for_the_route_decoder() -> None:
    assert control_character_error("/", b"", b'{"a":"\\u00', form=False) is None


# --- the application: every route, before anything else runs ------------------------------


def _client() -> httpx.AsyncClient:
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET))
    broker = Broker(
        config,
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )
    app = create_app(broker, background=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _run(calls: list[tuple[str, str, dict[str, object]]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with _client() as client:
            admin = await client.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
            bearer = {"Authorization": f"Bearer {admin.json()['access_token']}"}
            return [
                await client.request(
                    method,
                    url,
                    **{**kwargs, "headers": {**bearer, **kwargs.get("headers", {})}},  # type: ignore[dict-item]
                )
                for method, url, kwargs in calls
            ]

    return asyncio.run(go())


POISONED = [
    ("POST", "/v1/app/auth", {"json": {"client_id": "app\x00", "client_secret": "s"}}),
    ("POST", "/v1/admin/auth", {"json": {"secret": "a\x00" + "b" * 20}}),
    ("POST", "/v1/admin/apps", {"json": {"name": "demo", "scopes": ["read:a:\x00"]}}),
    (
        "POST",
        "/v1/admin/launch-tokens",
        {"json": {"agent_name": "bot\tone", "allowed_scope": ["read:a:b"]}},
    ),
    ("POST", "/v1/revoke", {"json": {"level": "task", "target": "t\x85"}}),
    # JSON labelled as a form: the JSON routes decode it all the same, so it is checked
    # as JSON (its escapes hide the characters from a check of the raw bytes).
    (
        "POST",
        "/v1/revoke",
        {
            "content": b'{"level": "task", "target": "t\\u001b[2J\\u0000"}',
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    ),
    ("POST", "/v1/token/validate", {"json": {"token": "x\x00"}}),
    ("POST", "/v1/token/introspect", {"data": {"token": "x\x00"}}),
    ("GET", "/v1/audit/events?agent_id=%00", {}),
    ("GET", "/v1/audit/events?task_id=a%7Fb", {}),
    ("GET", "/v1/admin/apps/app%00x", {}),
]


def test_every_poisoned_request_is_a_400_before_any_route() -> None:
    for resp, (method, url, _) in zip(_run(POISONED), POISONED, strict=True):
        assert resp.status_code == 400, (method, url, resp.text)
        body = resp.json()
        assert body["error_code"] == "invalid_request", body
        assert "control character" in body["detail"], body


def test_the_same_requests_without_the_control_character_pass_the_edge() -> None:
    clean = [
        ("POST", "/v1/admin/apps", {"json": {"name": "demo", "scopes": ["read:a:b"]}}),
        ("GET", "/v1/audit/events?agent_id=spiffe%3A%2F%2Fx%2Fy", {}),
    ]
    statuses = [resp.status_code for resp in _run(clean)]
    assert statuses == [201, 200]


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(_PIECES), max_size=10))
def test_percent_encoded_text_is_judged_as_if_it_were_decoded(pieces: list[bytes]) -> None:
    # Would fail if: the check read percent-encoded text (a query string, a form body)
    # without decoding it (decoding a megabyte of escapes took 100 ms of the event loop)
    # and so missed a control character that decoding would have shown, or saw one where
    # there is none.
    text = b"".join(pieces)
    decoded = _CONTROL_BYTES.search(unquote_to_bytes(text)) is not None
    assert (control_character_error("/", text, b"", form=False) is not None) == decoded
    refused = control_character_error("/", b"", text, form=True)
    assert (refused is not None) == decoded


def test_a_crafted_body_is_walked_only_so_far() -> None:
    # Would fail if: a body holding one escape behind a million values had every value
    # walked before any route ran (150 ms of the event loop per request, unauthenticated).
    values = b",".join([b"0"] * (MAX_WALKED_VALUES + 1))
    body = b'{"client_id":[' + values + b'],"x":"a\\nb"}'
    assert control_character_error("/", b"", body, form=False) == (
        f"the body holds more than {MAX_WALKED_VALUES} values and an escape"
    )
    # Below the bound the control character is found and named, at its place.
    few = b'{"client_id":[' + b",".join([b"0"] * 100) + b',"a\\nb"]}'
    assert control_character_error("/", b"", few, form=False) == (
        "`client_id`[100] holds a control character (U+000A)"
    )
    # An escape that puts no control character in a string walks nothing.
    slashes = b'{"client_id":[' + values + b'],"x":"a\\/b\\\\nc"}'
    assert control_character_error("/", b"", slashes, form=False) is None


class _Refusing:
    """A pattern that must not be searched."""

    def search(self, _text: bytes) -> None:
        raise AssertionError("the pattern was searched")


def test_plain_bodies_and_queries_are_passed_without_the_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Would fail if: a body with no backslash, DEL or 0xC2 (every token a resource server
    # sends to validate) or printable ASCII without a % went through the patterns, whose
    # search at every byte cost a validation about a fifth of its CPU (decision 163).
    from tasklease.http import middleware

    monkeypatch.setattr(middleware, "_JSON_CONTROL", _Refusing())
    monkeypatch.setattr(middleware, "_ENCODED_CONTROL", _Refusing())
    token = b"eyJhbGciOiJFZERTQSJ9." + b"x" * 900 + b".sig_-"
    body = b'{"token": "' + token + b'", "audience": "https://api.example"}'
    assert control_character_error("/v1/token/validate", b"", body, form=False) is None
    form = b"token=" + token + b"&audience=https://api.example"
    assert control_character_error("/v1/introspect", b"a=1&b=x.y", form, form=True) is None
    # Anything the patterns could match still reaches them.
    with pytest.raises(AssertionError, match="searched"):
        control_character_error("/", b"", b'{"a": "\\n"}', form=False)
    with pytest.raises(AssertionError, match="searched"):
        control_character_error("/", b"a=%0a", b"", form=False)


def test_a_form_body_under_two_content_types_is_still_checked() -> None:
    """The token routes read the first ``Content-Type`` (Starlette's ``headers.get``): a
    form sent with a second, JSON one must not pass the edge as JSON, which has no
    percent-escapes to check, and reach the route's form decoder with a NUL or an ESC.
    A ``Content-Type`` given twice is refused: no two readers need agree on which counts."""
    twice = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Type", "application/json"),
    ]
    poisoned = b"grant_type=client_credentials&client_id=app%1b%00&client_secret=s"

    async def go() -> list[httpx.Response]:
        async with _client() as client:
            return [
                await client.post("/v1/oauth/token", content=body, headers=headers)
                for body, headers in (
                    (poisoned, twice),
                    (poisoned.replace(b"%1b%00", b""), twice),
                    (poisoned, twice[:1]),
                )
            ]

    for resp in asyncio.run(go()):
        assert resp.status_code == 400, resp.text
        assert resp.json()["error_code"] == "invalid_request"
        assert "denial_id" not in resp.json()  # refused before any route ran
