"""Structured logs: one JSON object per line on standard error.

The broker's modules log through the standard library (``logging.getLogger``); this
installs one root handler whose formatter renders every record, uvicorn's included, as
one JSON object: the message as ``event``, the access record's fields
(:data:`ACCESS_FIELDS`, no other ``extra``), ``level``, ``logger``, ``timestamp`` (UTC,
microseconds) and, with an exception, its traceback as ``exception``. Secrets never reach
a log call in the first place: token failures log their reason class, never the token.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["ACCESS_FIELDS", "LEVELS", "JsonLineFormatter", "configure_logging"]

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
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
        line["timestamp"] = stamp.replace("+00:00", "Z")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            data: bytes | None = _encode(line)
        except (TypeError, msgspec.EncodeError):  # an extra no JSON type holds: its repr below
            data = None
        if data is not None and data.isascii():
            return data.decode("ascii")
        # Text beyond ASCII is escaped (\uXXXX): a raw U+2028 or U+0085 ends a line for
        # some readers, so a caller's text could otherwise forge a record.
        return json.dumps(line, separators=(",", ":"), default=repr)


def configure_logging(level: str) -> None:
    """Send every log record at ``level`` or above to stderr as one JSON line."""
    if level not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}")
    # No line holds the thread's or the process's name: not worth finding for each record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
