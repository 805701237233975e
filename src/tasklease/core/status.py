"""What the broker reports about itself: its version and its health."""

from __future__ import annotations

import time
from typing import Any

from tasklease.core.freshness import Freshness
from tasklease.core.kernel import Kernel
from tasklease.core.signing import SigningKeys

__all__ = ["VERSION", "health", "public_health"]

VERSION = "0.1.0"

# What anyone may read of the health report: whether the broker is alive and serving, and
# if not why. The AgentWrit SDK requires version, uptime and audit_events_count, so they
# are there, with neutral values: a version names the vulnerabilities to try, uptime
# dates restarts (and patches), counts measure traffic, and a key id tells rotations.
_PUBLIC_FIELDS = ("status", "reason", "db_connected", "revocations_current")
_NEUTRAL = {"version": "", "uptime": 0, "audit_events_count": 0}


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


def public_health(report: dict[str, Any]) -> dict[str, Any]:
    """What an anonymous caller sees of a :func:`health` report (see ``_PUBLIC_FIELDS``):
    ``status`` (and ``reason``), ``db_connected`` and ``revocations_current`` as they
    are; ``version`` ``""``, ``uptime`` and ``audit_events_count`` 0; nothing else."""
    public = {name: report[name] for name in _PUBLIC_FIELDS if name in report}
    return {"status": public.pop("status", "degraded"), **_NEUTRAL, **public}
