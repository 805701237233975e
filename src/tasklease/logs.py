"""Structured logs: one JSON object per line on standard error.

The broker's modules log through the standard library (``logging.getLogger``); this
installs one root handler whose formatter renders every record, uvicorn's included, as
one JSON object: the message as ``event``, the access record's fields
(:data:`ACCESS_FIELDS`, no other ``extra``), ``level``, ``logger``, ``timestamp`` (UTC,
microseconds) and, with an exception, its traceback as ``exception``. Secrets never reach
a log call in the first place: token failures log their reason class, never the token;
a URL the configuration holds is named without its user and password; and the HTTP
client's per-request lines, which name whole URLs, are not kept.

The access log writes a line per request on the event loop. When its records would reach
only the handler installed here, :func:`access_writer` lets it write that line directly,
rendered by the same code, without building a record: the standard path costs several
times as much per request. Any other handler, filter or level in the way and the record
goes through :mod:`logging` as usual.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

__all__ = [
    "ACCESS_FIELDS",
    "LEVELS",
    "JsonLineFormatter",
    "JsonLineHandler",
    "access_writer",
    "configure_logging",
    "json_line",
]

LEVELS = ("debug", "info", "warning", "error", "critical")
# The fields of an access record (tasklease.http.access); no other ``extra`` is rendered.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "request_id", "client")

_encode = msgspec.json.Encoder().encode


class JsonLineFormatter(logging.Formatter):
    """A record as one line of JSON (module docstring); one object per record, built
    directly: the access log writes a line per request, on the event loop."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"event": record.getMessage()}
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            if name in fields:
                line[name] = fields[name]
        line["level"] = record.levelname.lower()
        line["logger"] = record.name
        line["timestamp"] = _timestamp(record.created)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json_line(line)


# The last second a timestamp was made for, and its text up to the seconds: most records
# of a busy broker share their second with the one before.
_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) in UTC, to the microsecond (truncated)."""
    global _second  # noqa: PLW0603 - a cache; replaced whole, so threads see either value
    whole = int(created)
    second, text = _second
    if whole != second:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{text}.{int((created - whole) * 1_000_000):06d}Z"


def json_line(line: Any) -> str:
    """One JSON line's text, ASCII only: the rule of every JSON-lines output (the log
    records here, ``tasklease audit export``, the CLI's ``--json`` lines). A value no
    JSON type holds is written as its ``repr``."""
    try:
        data: bytes | None = _encode(line)
    except (TypeError, msgspec.EncodeError):  # an extra no JSON type holds: its repr below
        data = None
    if data is not None and data.isascii():
        return data.decode("ascii")
    # Text beyond ASCII is escaped (\uXXXX): a raw U+2028 or U+0085 ends a line for
    # some readers, so a caller's text could otherwise forge a record.
    return json.dumps(line, separators=(",", ":"), default=repr)


class JsonLineHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs: JSON lines on a stream."""

    def write_info(self, logger: str, event: str, fields: dict[str, Any]) -> None:
        """Write an ``info`` record of ``logger`` with ``fields`` (the access fields) as
        :class:`JsonLineFormatter` renders it, without a :class:`logging.LogRecord`."""
        line = {"event": event, **fields, "level": "info", "logger": logger}
        line["timestamp"] = _timestamp(time.time())
        text = json_line(line) + self.terminator
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            try:
                self.stream.write(text)
                self.stream.flush()
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - what logging does with a failed write
                self.handleError(logging.makeLogRecord({"msg": event, "name": logger}))


def access_writer(logger: logging.Logger) -> JsonLineHandler | None:
    """The handler an ``info`` record of ``logger`` would reach if it is the only one and
    nothing on the way filters or holds back such a record; otherwise ``None``.

    Checked for every record, so a handler or filter added later (a test's log capture,
    an embedding application's own logging) takes the records from then on.
    """
    # What Logger.handle and callHandlers would do with the record: the logger's own
    # filters, then every handler up the chain of propagation, each with its level and
    # filters (the ancestors' own filters and levels are not consulted).
    if logger.disabled or logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    found: JsonLineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not JsonLineHandler
                or handler.filters
                or handler.level > logging.INFO
                or type(handler.formatter) is not JsonLineFormatter
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def configure_logging(level: str) -> None:
    """Send every log record at ``level`` or above to stderr as one JSON line."""
    if level not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}")
    # No line holds the thread's or the process's name: not worth finding for each record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = JsonLineHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client's line for each request the broker makes (to witnesses, federated
    # domains' feeds, attestation issuers' keys) names the whole URL, a user and password
    # in it included: only its warnings and errors are kept, whatever the level.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
