"""What the broker reports about itself: its version and its health."""

from __future__ import annotations

import time
from typing import Any

from tasklease.core.freshness import Freshness
from tasklease.core.kernel import Kernel
from tasklease.core.signing import SigningKeys

__all__ = ["VERSION", "health"]

VERSION = "0.1.0"


def health(kernel: Kernel, keys: SigningKeys, freshness: Freshness) -> dict[str, Any]:
    """``status`` ``ok``, or ``degraded`` with a ``reason``: the database is unreachable,
    or the revocation index is not confirmed current (protected requests fail closed)."""
    try:
        count, _ = kernel.store.audit_head()
        connected = True
    except Exception:  # noqa: BLE001 - a health check reports, it does not raise
        count, connected = 0, False
    current = freshness.current()
    reason = (
        ""
        if connected and current
        else "database unreachable"
        if current
        else "revocation state not confirmed current within "
        f"{kernel.config.revocation_staleness_bound:g}s: protected requests fail closed"
    )
    return {
        "status": "degraded" if reason else "ok",
        **({"reason": reason} if reason else {}),
        "revocations_current": current,
        "version": VERSION,
        "uptime": int(time.monotonic() - kernel.started_at),
        "db_connected": connected,
        "audit_events_count": count,
        "revocation_entries": len(kernel.revocations),
        "signing_kid": keys.ring.active_kid,
    }
