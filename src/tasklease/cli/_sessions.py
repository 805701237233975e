"""The cached operator sessions of ``tasklease login`` (docs/cli.md): where they are
kept, and reading one back. Imported by every remote command, so it imports nothing of
the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasklease.localfiles import foreign_owner, open_regular

__all__ = ["Session", "cached_session", "config_dir", "session_path", "session_subject"]


@dataclass(frozen=True, slots=True)
class Session:
    """A cached operator token, the seconds it has left, and whose it is."""

    token: str
    expires_in: float
    subject: str | None  # session_subject(); None in a file written before it was kept


def session_subject(operator: str | None) -> str:
    """Who signs in, as the broker's operator tokens name it: ``operator:<name>``, or
    ``admin`` for the admin secret (the built-in admin)."""
    return f"operator:{operator}" if operator is not None else "admin"


def config_dir() -> Path:
    """The user's tasklease configuration directory (``$XDG_CONFIG_HOME/tasklease``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tasklease"


def session_path(url: str) -> Path:
    """The file that holds the cached session for the broker (and tenant) at ``url``."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:24]
    return config_dir() / "sessions" / f"{digest}.json"


def cached_session(url: str) -> Session | None:
    """The session cached for ``url``, if its token is still good."""
    path = session_path(url)
    try:
        fd = open_regular(path, follow_symlinks=False)
    except OSError:  # absent, a symbolic link, a named pipe: no session
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_mode & 0o077 or foreign_owner(st):
            return None  # not ours alone: ignore it (login rewrites it, 0600 and ours)
        try:
            data: Any = json.loads(fh.read())
        except ValueError:
            return None
    if not isinstance(data, dict) or data.get("url") != url.rstrip("/"):
        return None
    token, expires_at = data.get("access_token"), data.get("expires_at")
    if not isinstance(token, str) or not isinstance(expires_at, int | float):
        return None
    left = float(expires_at) - time.time() - 10.0
    subject = data.get("subject")
    return Session(token, left, subject if isinstance(subject, str) else None) if left > 0 else None
