"""One access log line and two metrics per HTTP request, by route template.

:class:`AccessMiddleware` wraps the whole application (every tenant's routes, the
envelope's own refusals included). When the answer is done it counts the request in
``tasklease_http_requests_total`` and times it in
``tasklease_http_request_duration_seconds``, labelled with the method, the route
*template* (``/v1/admin/apps/{app_id}``, ``/t/{tenant}/v1/register``; ``unmatched`` for
a path no route serves, so no label grows with what callers send) and the status; and
writes one ``access`` record to the ``tasklease.access`` logger: method, route template,
status, duration, request id and client address. Never the path as sent, the query
string or a header: a token can be in none of what is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tasklease.core.metrics import Metrics
from tasklease.logs import access_writer

__all__ = ["ANSWERED_BY_SERVER", "UNMATCHED", "AccessMiddleware", "route_template"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "unmatched"
# The scope key under which the server's protocol leaves the status it answered with
# itself, when the application ends without answering (a body that came too late).
ANSWERED_BY_SERVER = "tasklease.answered_by_server"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TENANT_MOUNT = "/t/{tenant}"
_log = logging.getLogger("tasklease.access")


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (after routing), or
    :data:`UNMATCHED`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    root = scope.get("root_path", "")
    if isinstance(root, str) and root.startswith("/t/") and not path.startswith(_TENANT_MOUNT):
        return _TENANT_MOUNT + path  # a tenant's route, served under its mount
    return path


class AccessMiddleware:
    """Counts, times and logs every HTTP request (module docstring)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.requests = metrics.http_requests
        self.seconds = metrics.http_request_seconds
        # Each (method, route template, status)'s two series, found once: the labels are
        # bounded (methods, templates, statuses), and looking a series up costs as much
        # as counting in it.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            if not status:  # what the server answered when the application did not
                status = int(scope.get(ANSWERED_BY_SERVER, 500))
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = route_template(scope)
            key = (method, route, status)
            series = self._series.get(key)
            if series is None:
                labels = (method, route, str(status))
                series = self.requests.labels(*labels), self.seconds.labels(*labels)
                self._series[key] = series
            series[0].inc()
            series[1].observe(elapsed)
            writer = access_writer(_log)
            if writer is not None or _log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                fields = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": scope.get("state", {}).get("request_id", ""),
                    "client": client[0] if client else "",
                }
                if writer is not None:  # the broker's own log handler alone: written directly
                    writer.write_info(_log.name, "access", fields)
                else:
                    # Made here rather than by ``_log.info``: no search of the stack for
                    # the caller, which is always this line.
                    record = logging.LogRecord(
                        _log.name, logging.INFO, __file__, 0, "access", None, None, "__call__"
                    )
                    record.__dict__.update(fields)
                    _log.handle(record)
