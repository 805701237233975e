"""Deeply nested JSON bodies: a 400 problem before any decoder recurses, never a 500.

A ~2 KB body of a thousand nested objects or arrays, sent without credentials, used to
exhaust the decoder's recursion limit and answer 500. Every JSON body now has its nesting
depth bounded before it is decoded (``MAX_JSON_DEPTH`` levels).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.http.middleware import MAX_JSON_DEPTH, json_nesting_error
from tasklease.rules.jsonnames import MAX_JSON_CONTAINERS
from tasklease.storage import MemoryStore

LEVELS = 1000


def _objects(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def _arrays(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _arrays_in_field(levels: int) -> bytes:
    return b'{"launch_token":"x","extra":' + _arrays(levels) + b"}"


DEEP_BODIES = {
    "objects": _objects(LEVELS),
    "arrays": _arrays(LEVELS),
    "arrays in an unknown field": _arrays_in_field(LEVELS),
}

# Every route that decodes a JSON body; none needs credentials to reach the decoder.
JSON_ROUTES = [
    ("POST", "/v1/register"),
    ("POST", "/v1/admin/auth"),
    ("POST", "/v1/app/auth"),
    ("POST", "/v1/token/validate"),
    ("POST", "/v1/token/revoke"),
    ("POST", "/v1/introspect"),
    ("POST", "/v1/delegate"),
    ("POST", "/v1/revoke"),
    ("POST", "/v1/admin/launch-tokens"),
    ("POST", "/v1/app/launch-tokens"),
    ("POST", "/v1/admin/apps"),
    ("PUT", "/v1/admin/apps/app-1"),
    ("POST", "/v1/mutual/initiate"),
    ("POST", "/v1/mutual/respond"),
    ("POST", "/v1/mutual/complete"),
    ("POST", "/v1/heartbeat"),
    ("POST", "/v1/resume"),
    ("POST", "/v1/discovery/bind"),
]


# --- over real HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(DEEP_BODIES))
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_deep_json_is_a_400_on_every_json_route(
    broker: RunningBroker, method: str, path: str, shape: str
) -> None:
    body = DEEP_BODIES[shape]
    assert len(body) < 8200
    resp = broker.client.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(resp, 400, "invalid_request")
    assert "nest" in problem["detail"] or problem["detail"].startswith("malformed JSON body")


def test_deep_json_without_content_type_is_a_400(broker: RunningBroker) -> None:
    for body in DEEP_BODIES.values():
        resp = broker.post("/v1/register", content=body, headers={"Content-Type": ""})
        assert_problem(resp, 400, "invalid_request")


def test_the_broker_still_serves_after_deep_bodies(broker: RunningBroker) -> None:
    for body in DEEP_BODIES.values():
        assert broker.post("/v1/admin/auth", content=body).status_code == 400
    agent = broker.register(["read:data:edge"])
    assert broker.is_valid(agent.access_token)


def test_a_body_of_countless_small_containers_is_a_400_before_any_decoder(
    broker: RunningBroker,
) -> None:
    """Shallow but holding hundreds of thousands of arrays: checking its nesting and
    names, on the event loop, cost a tenth of a second or more a megabyte, for an
    unaudited 400 anyone may send again at once. Refused by count instead."""
    body = b'{"x":[' + b",".join([b"[" * 30 + b"]" * 30] * 16000) + b"]}"
    assert len(body) < 1_000_000
    for path in ("/v1/register", "/v1/admin/auth"):
        problem = assert_problem(broker.post(path, content=body), 400, "invalid_request")
        assert problem["detail"] == (
            f"malformed JSON body: more than {MAX_JSON_CONTAINERS} arrays and objects"
        )
    agent = broker.register(["read:data:edge"])
    assert broker.is_valid(agent.access_token)


def test_ordinary_nesting_still_reaches_the_route(broker: RunningBroker) -> None:
    # Depth 3, and brackets inside strings are data, not nesting.
    body = {"secret": "[" * 200 + "{" * 200, "extra": [[{"a": 1}]]}
    resp = broker.post("/v1/admin/auth", content=json.dumps(body).encode())
    assert_problem(resp, 401, "unauthorized")


def test_form_bodies_are_not_taken_for_json(broker: RunningBroker) -> None:
    resp = broker.post(
        "/v1/token/revoke",
        content=b"token=" + b"%5B" * 50 + b"&token_type_hint=" + b"[" * 50,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 401  # reached the route: no credentials


# --- the depth check itself ----------------------------------------------------------------


def test_depth_limit_is_exact() -> None:
    assert json_nesting_error(_arrays(MAX_JSON_DEPTH)) is None
    assert json_nesting_error(_objects(MAX_JSON_DEPTH)) is None
    assert json_nesting_error(_arrays(MAX_JSON_DEPTH + 1)) is not None
    assert json_nesting_error(_objects(MAX_JSON_DEPTH + 1)) is not None
    assert json_nesting_error(_arrays(5), limit=4) is not None
    assert json_nesting_error(_arrays(4), limit=4) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"a": [1, 2, {"b": [3]}]}',
        json.dumps({"s": "[" * 5000}).encode(),
        json.dumps({"s": '"[' * 500 + "\\" * 3}).encode(),
        json.dumps({"s": '\\"' + "[" * 100, "t": "\\" * 5 + "{" * 100}).encode(),
        json.dumps({"k" + "{" * 100: ["]" * 100, "[" * 100]}).encode(),
        # Wide, not deep: many siblings.
        b"[" + b",".join([b"[[1],{}]"] * 5000) + b"]",
        # Invalid but shallow: left for the decoder to refuse with its own message.
        b"]]]]" + b"[]" * 100,
    ],
)
def test_shallow_bodies_pass(body: bytes) -> None:
    assert json_nesting_error(body) is None


@pytest.mark.parametrize(
    "body",
    [
        _arrays(LEVELS),
        _objects(LEVELS),
        b"[" * 100_000,  # never closed
        b"[" * 40 + b"}" * 40,  # mismatched brackets
        b"[[]" * 40,  # each step one level deeper, never a long run of openers
        # An escaped backslash ends with the string's closing quote: what follows counts.
        b'{"a":"\\\\","b":' + _arrays(40) + b"}",
        # An escaped quote does not end the string; the nesting after it counts.
        b'{"a":"\\"","b":' + _objects(100) + b"}",
        b'["' + b"x" * 10 + b'"' + b",[" * 60 + b"]" * 60 + b"]",
    ],
)
def test_deep_bodies_are_refused(body: bytes) -> None:
    assert json_nesting_error(body) is not None


def test_the_count_of_containers_is_exact_and_skips_strings() -> None:
    most = b"[" + b",".join([b"{}"] * (MAX_JSON_CONTAINERS - 1)) + b"]"
    assert json_nesting_error(most) is None
    one_more = b"[" + b",".join([b"{}"] * MAX_JSON_CONTAINERS) + b"]"
    assert json_nesting_error(one_more) == (
        f"malformed JSON body: more than {MAX_JSON_CONTAINERS} arrays and objects"
    )
    # Brackets inside strings are data (a Cedar policy's sets, say), however many.
    text = json.dumps({"policy": "[1, {}]" * MAX_JSON_CONTAINERS, "x": [[1], {}]}).encode()
    assert json_nesting_error(text) is None


def test_an_unterminated_string_hides_what_follows() -> None:
    # Everything after an unclosed quote is string to the decoder too.
    assert json_nesting_error(b'{"a": "' + b"[" * 1000) is None


def test_the_wide_and_the_deep_worst_cases_are_refused() -> None:
    wide = b"[" + b",".join([b"[]"] * 300_000) + b"]"  # ~900 KB, depth 2
    deep = b"[" * 500_000 + b"]" * 500_000
    assert json_nesting_error(wide) == (
        f"malformed JSON body: more than {MAX_JSON_CONTAINERS} arrays and objects"
    )
    assert json_nesting_error(deep) is not None


# --- in process: the application refuses before any route decodes ------------------------


def _app_client() -> httpx.AsyncClient:
    clock = ManualClock(1_800_000_000.0)
    broker = Broker(
        Config(), MemoryStore(), KeyRing.generate(), clock=clock, nonce_secret=b"n" * 32
    )
    app = create_app(broker, background=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def test_the_application_answers_400_in_process() -> None:
    async def run() -> list[httpx.Response]:
        async with _app_client() as client:
            answers = []
            for method, path in JSON_ROUTES:
                for body in DEEP_BODIES.values():
                    answers.append(await client.request(method, path, content=body))
            # A route that ignores its body refuses a deep one too (nothing is decoded).
            answers.append(await client.post("/v1/token/renew", content=_objects(LEVELS)))
            return answers

    for resp in asyncio.run(run()):
        assert_problem(resp, 400, "invalid_request")
