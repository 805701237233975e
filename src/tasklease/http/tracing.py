"""OpenTelemetry traces of the broker (the ``otel`` extra: ``pip install 'tasklease[otel]'``).

:func:`instrument` makes, for every HTTP request, a server span named after its route
template (``POST /v1/register``), continuing the caller's trace from its W3C
``traceparent``/``tracestate`` headers; inside it a span per broker operation
(``tasklease.register`` and ``tasklease.register.commit``, ``tasklease.renew``,
``tasklease.delegate`` and the rest, whose commit is ``tasklease.commit``,
``tasklease.validate``, ``tasklease.revoke`` and the rest of :data:`OPERATIONS`) and per
storage call (``tasklease.storage.commit`` for every durable write with its audit
events, ``tasklease.storage.<method>`` for reads). Spans carry the route, the status and
the request id; never a token, a secret or a claim. A span whose operation raised records
the exception's type (and a refusal's error code), never its message or traceback: a
refusal may quote what the caller sent (the problem answer redacts it, a span would not)
and a driver's error may quote a stored value (:func:`_failed`).

Spans go to the tracer provider given, else OpenTelemetry's global one: configure the
SDK and an exporter as usual (for example ``opentelemetry-instrument tasklease serve``
with ``OTEL_*`` variables, or ``trace.set_tracer_provider`` in an embedding program).
Without a provider the API's no-op tracer makes every span nearly free.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from tasklease.core.broker import Broker
from tasklease.core.errors import TaskleaseError
from tasklease.core.kernel import Kernel
from tasklease.http.access import route_template

__all__ = ["OPERATIONS", "TracingMiddleware", "instrument", "uninstrument"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

OPERATIONS = {
    "prepare_register": "register",
    "complete_register": "register.commit",
    "renew": "renew",
    "prepare_renew": "renew",
    "delegate": "delegate",
    "prepare_delegate": "delegate",
    "validate": "validate",
    "authenticate": "authenticate",
    "revoke": "revoke",
    "prepare_revoke": "revoke",
    "revoke_token": "revoke_token",
    "prepare_revoke_token": "revoke_token",
    "release": "release",
    "prepare_release": "release",
    "answer": "commit",
    "introspect": "introspect",
    "exchange_token": "exchange_token",
    "app_auth": "app_auth",
    "admin_auth": "admin_auth",
    "create_launch_token": "create_launch_token",
}
"""The :class:`~tasklease.core.broker.Broker` methods that get a span of their own, and
the span's name after ``tasklease.``."""

_SCOPE = "tasklease"
_lock = threading.Lock()
_provider: TracerProvider | None = None
_originals: dict[tuple[type, str], Any] = {}


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_SCOPE, tracer_provider=_provider)


def _failed(span: trace.Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: its type, and a refusal's code, only. OpenTelemetry's
    own recording (``record_exception``) writes the message and the traceback, whose last
    line is the message: caller text a refusal quotes, or a value a driver's error quotes."""
    what = type(exc).__name__
    attributes: dict[str, str] = {"exception.type": what}
    if isinstance(exc, TaskleaseError):
        attributes["tasklease.error_code"] = exc.code
    span.add_event("exception", attributes)
    span.set_status(Status(StatusCode.ERROR, what))


def _span(name: str, **kwargs: Any) -> Any:
    """A span ``name`` made current, recording no exception itself (:func:`_failed`)."""
    return _tracer().start_as_current_span(
        name, record_exception=False, set_status_on_exception=False, **kwargs
    )


def _spanned(name: str, function: F) -> F:
    """``function`` inside a span ``name`` (a coroutine function awaited inside it)."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            with _span(name) as span:
                try:
                    return await function(*args, **kwargs)
                except BaseException as exc:
                    _failed(span, exc)
                    raise

        awaited.__wrapped_by_tracing__ = True  # type: ignore[attr-defined]
        return awaited  # type: ignore[return-value]

    @functools.wraps(function)
    def called(*args: Any, **kwargs: Any) -> Any:
        with _span(name) as span:
            try:
                return function(*args, **kwargs)
            except BaseException as exc:
                _failed(span, exc)
                raise

    called.__wrapped_by_tracing__ = True  # type: ignore[attr-defined]
    return called  # type: ignore[return-value]


def _patch(cls: type, names: Mapping[str, str], prefix: str) -> None:
    """Wrap each method ``name`` of ``cls`` in a span ``<prefix><names[name]>``, once,
    where it is defined (``cls`` or the base it inherits it from)."""
    for name, span in names.items():
        owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
        method = None if owner is None else owner.__dict__[name]
        if owner is None or not callable(method):
            continue
        if not getattr(method, "__wrapped_by_tracing__", False):
            _originals[(owner, name)] = method
            setattr(owner, name, _spanned(prefix + span, method))


def _store_reads(cls: type) -> dict[str, str]:
    """The store's read methods: what a request may wait on besides the commit."""
    return {
        name: name
        for base in cls.__mro__
        if base is not object
        for name in vars(base)
        if name.startswith(("get_", "list_", "find_", "count_", "read_"))
        and callable(getattr(cls, name, None))
    }


def instrument(broker: Broker, *, tracer_provider: TracerProvider | None = None) -> None:
    """Give the broker's operations and storage calls spans (every broker of the
    process: the methods are wrapped on their classes, once). ``tracer_provider``:
    where spans go (default: OpenTelemetry's global provider)."""
    global _provider  # noqa: PLW0603 - one provider per process, as OpenTelemetry's own
    with _lock:
        if tracer_provider is not None:
            _provider = tracer_provider
        _patch(Broker, OPERATIONS, "tasklease.")
        _patch(Kernel, {"commit": "commit", "acommit": "commit"}, "tasklease.storage.")
        # Kernel.commit / acommit spans are named by the method; both are "the commit".
        store_class = type(broker.store)
        _patch(store_class, _store_reads(store_class), "tasklease.storage.")


def uninstrument() -> None:
    """Undo :func:`instrument`: the methods as they were, the global provider again."""
    global _provider  # noqa: PLW0603
    with _lock:
        for (cls, name), method in _originals.items():
            setattr(cls, name, method)
        _originals.clear()
        _provider = None


class TracingMiddleware:
    """A server span per HTTP request, continuing the caller's W3C trace context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name in (b"traceparent", b"tracestate")
        }
        parent = propagate.extract(carrier) if carrier else context.get_current()
        method = scope.get("method", "")
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with _span(f"{method} request", context=parent, kind=SpanKind.SERVER) as span:
            raised = False
            try:
                await self.app(scope, receive, sending)
            except BaseException as exc:
                raised = True
                _failed(span, exc)
                raise
            finally:
                route = route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute(
                    "tasklease.request_id", scope.get("state", {}).get("request_id", "")
                )
                span.set_attribute("tasklease.duration_ms", (time.perf_counter() - started) * 1e3)
                if status >= 500 and not raised:
                    span.set_status(Status(StatusCode.ERROR))
