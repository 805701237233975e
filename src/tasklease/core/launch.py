"""Launch tokens: one-time (or bounded multi-use) tickets an orchestrator hands a new agent.

A launch token is 32 random bytes shown once as 64 hex characters; only its SHA-256 is
stored, so a database leak does not leak usable launch tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["LAUNCH_TOKEN_PATTERN", "launch_token_hash", "new_launch_token"]

LAUNCH_TOKEN_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def new_launch_token() -> tuple[str, str]:
    """Return ``(token, sha256_hex)``."""
    token = secrets.token_hex(32)
    return token, launch_token_hash(token)


def launch_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
