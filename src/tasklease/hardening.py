"""Keep the memory of a process that holds the broker's secrets out of core files and
away from its user's other processes.

A serving process holds the signing keys and the audit log's key (decrypted), the nonce
secret, the key passphrase or the PKCS#11 PIN and, when the environment gave it, the
admin secret in plain text; the CLI holds the secrets it signs in with and, for ``init``
and the commands that open a broker, the keys. A core file (a crash in a C extension, an
``abort()``, or a SIGSEGV, SIGABRT or SIGQUIT sent to it) writes all of that to disk, in
the working directory or wherever the system's crash collector (systemd-coredump,
apport) keeps and forwards it: outside the data directory, its modes and its backup
rules.

:func:`protect` therefore, at the start of such a process:

* lowers the soft ``RLIMIT_CORE`` to 0 (the hard limit stays, so that the setting below
  can give it back); child processes inherit it;
* on Linux, marks the process not dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no core file
  whatever the limit or ``core_pattern`` says, and its ``/proc/<pid>/`` files (``environ``,
  ``mem``, ``maps``, ``fd``) belong to root, so other processes of the same user can
  neither read them nor attach a debugger (root, or ``CAP_SYS_PTRACE``, still can).
  ``execve`` resets the flag: every worker process makes the call itself.

``core_dumps = true`` (``TASKLEASE_CORE_DUMPS=1``) leaves the process dumpable and the
limit as it was, for debugging a crash or profiling (``py-spy``, ``gdb``) as the
broker's user. docs/operations.md, "Process hardening".
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Mapping

__all__ = ["CORE_DUMPS_ENV", "core_dumps_allowed", "is_dumpable", "protect"]

_log = logging.getLogger("tasklease.hardening")

CORE_DUMPS_ENV = "TASKLEASE_CORE_DUMPS"
"""The setting ``core_dumps`` in the environment; the CLI reads only this."""

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4

_saved: dict[str, int] = {}  # "core": the soft limit :func:`protect` lowered, to give back


def core_dumps_allowed(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``TASKLEASE_CORE_DUMPS`` says yes (``1``, ``true``, ``yes``, ``on``)."""
    value = (os.environ if env is None else env).get(CORE_DUMPS_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _prctl(option: int, value: int = 0) -> int | None:
    """``prctl(option, value)``'s result, or None where there is no such call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0))
    except (OSError, AttributeError):
        return None


def is_dumpable() -> bool | None:
    """Whether this process may dump core and be read by its user's other processes
    (None where the system cannot tell)."""
    answer = _prctl(_PR_GET_DUMPABLE)
    return None if answer is None or answer < 0 else answer != 0


def protect(*, allow_core_dumps: bool = False) -> None:
    """No core file from this process, and none of its memory readable by its user's
    other processes; with ``allow_core_dumps``, undo that (a limit :func:`protect`
    lowered is given back). Never raises: a system that refuses is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if allow_core_dumps:
        before = _saved.pop("core", None)
        if before is not None and soft == 0:
            resource.setrlimit(resource.RLIMIT_CORE, (before, hard))
        _prctl(_PR_SET_DUMPABLE, 1)
        return
    if soft != 0:
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # lowering is always allowed
        _saved["core"] = soft
    if _prctl(_PR_SET_DUMPABLE, 0) not in (0, None):
        _log.warning(
            "could not mark the process not dumpable (prctl PR_SET_DUMPABLE): its user's "
            "other processes may read its memory"
        )
