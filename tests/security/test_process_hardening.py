"""A process that holds the broker's secrets writes no core file and is not readable by
its user's other processes (tasklease.hardening; docs/operations.md, Process hardening).

A crash, or a SIGSEGV/SIGABRT/SIGQUIT sent to a broker, used to write a core file holding
the decrypted signing keys, the nonce secret, the key passphrase and the admin secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    from tasklease.hardening import is_dumpable, protect

    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    protect(allow_core_dumps=sys.argv[1] == "allow")
    soft, _ = resource.getrlimit(resource.RLIMIT_CORE)
    print(is_dumpable(), soft == 0, flush=True)
    if sys.argv[2] == "undo":
        protect(allow_core_dumps=True)
        soft, _ = resource.getrlimit(resource.RLIMIT_CORE)
        print(is_dumpable(), soft == 0, flush=True)
    secret = b"SECRET-IN-MEMORY-" * 4
    os.kill(os.getpid(), signal.SIGSEGV)
    """
)


def _run(tmp_path: Path, allow: str, undo: str) -> tuple[list[str], int]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, allow, undo],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return done.stdout.split("\n"), done.returncode


def _cores(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("core")]


def _core_pattern_writes_here() -> bool:
    try:
        pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        return False
    return not pattern.startswith("|") and "/" not in pattern


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_protected_process_is_not_dumpable_and_writes_no_core(tmp_path: Path) -> None:
    lines, code = _run(tmp_path, "protect", "keep")
    assert lines[0] == "False True", lines
    assert code == -signal.SIGSEGV
    assert _cores(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_core_dumps_true_gives_back_what_protect_took(tmp_path: Path) -> None:
    lines, code = _run(tmp_path, "protect", "undo")
    assert lines[:2] == ["False True", "True False"], lines
    assert code == -signal.SIGSEGV
    if _core_pattern_writes_here():  # the system's crash collector keeps it elsewhere
        assert _cores(tmp_path) != []
    for core in _cores(tmp_path):
        core.unlink()
