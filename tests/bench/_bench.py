"""Running a benchmark module the way a user does: ``python -m <module> ...`` from the
repository's root, in its own process, its output captured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m args...``; whatever its exit status."""
    return subprocess.run(  # noqa: S603 - our own interpreter and modules
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(*args: str, timeout: float) -> dict[str, Any]:
    """The JSON document a benchmark prints as its last line; it must exit cleanly."""
    ran = run_module(*args, timeout=timeout)
    assert ran.returncode == 0, ran.stderr[-3000:]
    document: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    return document
