"""Feed entries into the broker's own revocation index.

The verifier keeps a ``tasklease.core.revocation.RevocationIndex`` (standard library only),
so a resource server matches revocations by exactly the broker's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklease.core.revocation import LEVELS, RevocationIndex, feed_time
from tasklease.core.store import RevocationRecord

__all__ = ["LEVELS", "RevocationIndex", "parse_entry"]


def parse_entry(data: Mapping[str, Any]) -> RevocationRecord:
    """The revocation record of one feed entry; ValueError if it is malformed."""
    level, target = data.get("level"), data.get("target")
    revoked_at, expires_at, seq = data.get("revoked_at"), data.get("expires_at"), data.get("seq")
    if type(level) is not str or type(target) is not str or not target:
        raise ValueError("revocation entry without level or target")
    if type(revoked_at) is not int or type(seq) is not int:
        raise ValueError("revocation entry with a bad revoked_at or seq")
    expiry = feed_time(expires_at)
    if expiry is None:
        raise ValueError("revocation entry with a bad expires_at")
    return RevocationRecord(level, target, revoked_at, expiry, seq)
