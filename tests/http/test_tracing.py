"""OpenTelemetry traces (the ``otel`` extra): a server span per request continuing the
caller's W3C trace context, and inside it spans for the broker's operations and its
storage calls, recorded with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import nacl.signing
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from tasklease.core.broker import Broker  # noqa: E402
from tasklease.core.config import Config  # noqa: E402
from tasklease.core.keys import KeyRing  # noqa: E402
from tasklease.core.passwords import hash_secret  # noqa: E402
from tasklease.http.app import create_app  # noqa: E402
from tasklease.http.tracing import uninstrument  # noqa: E402
from tasklease.storage import open_store  # noqa: E402

SECRET = "tracing-admin-secret-" + "x" * 16
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _traced_app(exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = Config(admin_secret_hash=hash_secret(SECRET))
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"x" * 32)
    return create_app(broker, background=False, tracer_provider=provider)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in memory; the broker's methods are unwrapped afterwards."""
    yield InMemorySpanExporter()
    uninstrument()


def test_spans_for_each_operation_continue_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    app = _traced_app(exporter)
    traced = {"traceparent": PARENT}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            admin = (await c.post("/v1/admin/auth", json={"secret": SECRET})).json()
            bearer = {"Authorization": f"Bearer {admin['access_token']}"}
            tokens = []
            for task in ("a", "b"):
                launch = await c.post(
                    "/v1/admin/launch-tokens",
                    json={"agent_name": "w", "allowed_scope": ["read:data:*"]},
                    headers=bearer,
                )
                nonce = (await c.get("/v1/challenge")).json()["nonce"]
                key = nacl.signing.SigningKey.generate()
                body = {
                    "launch_token": launch.json()["launch_token"],
                    "nonce": nonce,
                    "public_key": base64.b64encode(bytes(key.verify_key)).decode(),
                    "signature": base64.b64encode(
                        key.sign(bytes.fromhex(nonce)).signature
                    ).decode(),
                    "orch_id": "o",
                    "task_id": task,
                    "requested_scope": ["read:data:1"],
                }
                registered = await c.post("/v1/register", json=body, headers=traced)
                assert registered.status_code == 200, registered.text
                tokens.append(registered.json())
            first, second = tokens
            renewed = await c.post(
                "/v1/token/renew",
                headers={**traced, "Authorization": f"Bearer {first['access_token']}"},
            )
            token = renewed.json()["access_token"]
            delegated = await c.post(
                "/v1/delegate",
                json={"delegate_to": second["agent_id"], "scope": ["read:data:1"]},
                headers={**traced, "Authorization": f"Bearer {token}"},
            )
            assert delegated.status_code == 200, delegated.text
            await c.post("/v1/token/validate", json={"token": token}, headers=traced)
            revoked = await c.post(
                "/v1/revoke", json={"level": "task", "target": "a"}, headers={**bearer, **traced}
            )
            assert revoked.status_code == 200, revoked.text

    asyncio.run(scenario())
    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    names = {span.name for span in spans}
    for operation in ("register", "renew", "delegate", "validate", "revoke"):
        assert f"tasklease.{operation}" in names, names
    assert "POST /v1/register" in names and "POST /v1/delegate" in names
    assert "tasklease.storage.commit" in names or "tasklease.storage.acommit" in names
    assert any(name.startswith("tasklease.storage.get_") for name in names), names

    # The caller's trace continues: the server span's parent is the traceparent's span,
    # and the operation and storage spans are in the same trace, below it.
    [server] = [s for s in spans if s.name == "POST /v1/delegate"]
    assert server.context is not None and server.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/delegate"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["tasklease.request_id"]
    inside = [
        s
        for s in spans
        if s.context is not None
        and s.context.trace_id == server.context.trace_id
        and s.name.startswith("tasklease.")
    ]
    assert {"tasklease.delegate", "tasklease.register", "tasklease.revoke"} <= {
        s.name for s in inside
    }
    commits = [s for s in inside if s.name.startswith("tasklease.storage.")]
    assert commits, "storage spans are children in the caller's trace"
    # No token or secret is an attribute of any span.
    for span in spans:
        for value in (span.attributes or {}).values():
            assert "eyJ" not in str(value) and SECRET not in str(value)


def test_without_a_provider_nothing_is_wrapped() -> None:
    config = Config(admin_secret_hash=hash_secret(SECRET))
    broker = Broker(config, open_store("memory://"), KeyRing.generate(), nonce_secret=b"x" * 32)
    create_app(broker, background=False)
    assert not hasattr(Broker.renew, "__wrapped_by_tracing__")


def test_a_refusal_quoting_a_credential_leaves_it_out_of_every_span(
    exporter: InMemorySpanExporter,
) -> None:
    # Would fail if: a span recorded a refused operation's exception as raised (its
    # message in an `exception` event and the span's status), so that a launch token or
    # client secret pasted into a field the refusal quotes reached the trace exporter,
    # which the problem answer (redacted) does not let it reach.
    app = _traced_app(exporter)
    pasted = "5fa00b76f5fe81e10036a3afad9ceda1dee55b806aa4c3e49ca52632f2bc51c3"

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post("/v1/oauth/token", data={"grant_type": pasted})

    refused = asyncio.run(scenario())
    assert refused.status_code == 400 and pasted not in refused.text
    spans = list(exporter.get_finished_spans())
    [operation] = [s for s in spans if s.name == "tasklease.exchange_token"]
    assert operation.status.status_code.name == "ERROR"  # still marked as failed
    for span in spans:
        shown = [span.status.description or "", repr(dict(span.attributes or {}))]
        shown += [repr(dict(event.attributes or {})) for event in span.events]
        assert all(pasted not in text for text in shown), (span.name, shown)
    events = [e for e in operation.events if e.name == "exception"]
    assert events and (events[0].attributes or {}).get("exception.type") == "UnsupportedGrantType"
