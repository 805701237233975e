"""Structured logs: one JSON object per line on standard error.

The broker's modules log through the standard library (``logging.getLogger``); this
installs one root handler whose formatter renders every record, uvicorn's included, as
JSON via structlog. Secrets never reach a log call in the first place: token failures
log their reason class, never the token.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["ACCESS_FIELDS", "LEVELS", "configure_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")
# The fields of an access record (tasklease.http.access); no other ``extra`` is rendered.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "request_id", "client")


def configure_logging(level: str) -> None:
    """Send every log record at ``level`` or above to stderr as one JSON line."""
    if level not in LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LEVELS)}")
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            # A record's ``extra`` fields (the access log's method, route, status...).
            structlog.stdlib.ExtraAdder(allow=ACCESS_FIELDS),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
