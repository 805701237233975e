"""Launch tokens: one-time (or bounded multi-use) tickets an orchestrator hands a new agent.

A launch token is 32 random bytes shown once as 64 hex characters; only its SHA-256 is
stored, so a database leak does not leak usable launch tokens.

A launch token is never a standing secret: it admits a counted number of registrations
(one unless it is created multi-use, then :data:`DEFAULT_MULTI_USES` unless it names
``max_uses``, at most :data:`MAX_USES`) within a validity the broker caps
(``launch_token_max_ttl``); a multi-use token created without a ``ttl`` lives at most
:data:`MULTI_USE_DEFAULT_TTL` seconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = [
    "DEFAULT_MULTI_USES",
    "LAUNCH_TOKEN_PATTERN",
    "MAX_USES",
    "MULTI_USE_DEFAULT_TTL",
    "launch_token_hash",
    "new_launch_token",
]

LAUNCH_TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")
DEFAULT_MULTI_USES = 10
MAX_USES = 10_000
MULTI_USE_DEFAULT_TTL = 3600


def new_launch_token() -> tuple[str, str]:
    """Return ``(token, sha256_hex)``."""
    token = secrets.token_hex(32)
    return token, launch_token_hash(token)


def launch_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
