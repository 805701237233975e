"""A database password is never printed: neither the one in a URL's user part nor the one
a libpq URL may carry in its query string (``?password=...``), in the command's errors
and the broker's start-up lines."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from e2e_support import TASKLEASE

from tasklease.storage import redact_url

SECRET = "s3cretPW-never-shown"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=verify-full",
            "postgresql://u@h/db?password=***&sslmode=verify-full",
        ),
        ("postgresql://u@h/db?PassWord=pw", "postgresql://u@h/db?PassWord=***"),
        (
            "postgresql://u@h/db?sslpassword=pw&sslkey=k",
            "postgresql://u@h/db?sslpassword=***&sslkey=k",
        ),
        (
            "postgresql://u:a@h/db?password=b",
            "postgresql://u:***@h/db?password=***",
        ),
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("postgresql://h/db", "postgresql://h/db"),
        # libpq reads the user part up to the first @ before any /: # and ? belong to it.
        ("postgresql://u:s3cr#et@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cr?et@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:a?password=b@h/db?password=c", "postgresql://u:***@h/db?password=***"),
        ("postgres://u:p%40w@h:5432/db", "postgres://u:***@h:5432/db"),
        ("sqlite:///var/lib/tasklease/x.db", "sqlite:///var/lib/tasklease/x.db"),
        ("postgresql://h/db@x", "postgresql://h/db@x"),
        # A password with an unencoded / or @: libpq reads another user part (or none),
        # but it is the operator's password all the same and is never shown.
        ("postgresql://u:Xy7/Qz9@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p/s@s@h/db?password=c", "postgresql://u:***@h/db?password=***"),
    ],
)
def test_every_password_in_a_url_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("where", ["query", "user part with #"])
def test_a_password_is_not_printed_by_the_cli(tmp_path: Path, where: str) -> None:
    port = _closed_port()
    if where == "query":
        url = f"postgresql://tasklease@127.0.0.1:{port}/tl?password={SECRET}&connect_timeout=1"
    else:
        url = f"postgresql://tasklease:{SECRET}#x@127.0.0.1:{port}/tl?connect_timeout=1"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "NO_COLOR": "1",
        "TASKLEASE_DATABASE": url,
        "TASKLEASE_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [TASKLEASE, "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert ("password=***" if where == "query" else "tasklease:***@") in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr
