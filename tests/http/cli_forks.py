"""``python -m tasklease.cli.main`` as a real process, without a new interpreter's start.

A test of what the CLI prints and exits with runs ``tasklease`` as a process: its exit
code, its stderr (a traceback there is the interpreter's), its environment and working
directory are the process's own. What costs is not the process but the interpreter's
start and the CLI's imports (most of a second each). ``run`` forks each command from one
interpreter that has made those imports (a "zygote", started once per test process and
single-threaded, so a fork is safe): the child takes the command's environment, working
directory, stdin, stdout and stderr, runs ``tasklease.cli.main`` as ``__main__`` (as
``python -m`` does), and ends as the interpreter would (``SystemExit``'s code, or the
traceback of an uncaught exception and exit 1). The answer is a
``subprocess.CompletedProcess``, and a command that outlives its timeout is killed and
raises ``subprocess.TimeoutExpired``, as ``subprocess.run`` would.

What a new interpreter checks and a fork cannot (the entry point, the start-up's own
cost and imports) stays with real starts: tests/cli/test_entry_point.py and
test_cli_startup.py. A command that must run without some of root's capabilities
(as under ``setpriv``) asks for the fork to drop them: ``drop_capabilities``.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# The zygote: import what every command imports, then fork one child per request (one
# line of JSON on stdin) and answer, on stdout, the child's pid and then its exit code.
_ZYGOTE = r"""
import importlib, json, os, sys, threading

# What the commands import: the CLI's modules, and what they import when run (the SDK,
# the settings, the store, the broker for serve and init). No module reads the
# environment when imported; a child reads it when it runs.
for name in (
    "tasklease.cli.main", "tasklease.client", "tasklease.settings", "tasklease.keystore",
    "tasklease.storage", "tasklease.server", "tasklease.brokerstate", "tasklease.verify",
    "tasklease.core.auditcheck", "tasklease.rules.note", "tasklease.rules.witness",
    "tasklease.logs", "uvicorn", "httpcore", "h11", "typer._adapters", "pydantic", "zoneinfo",
    "sysconfig",
):
    importlib.import_module(name)
import typer.main

typer.main.get_command(sys.modules["tasklease.cli.main"].app)  # what typer imports to build it
if threading.active_count() != 1:  # a fork copies one thread: none may hold a lock
    raise SystemExit("the CLI's zygote would fork with threads running")

INHERITED_STDIN = int(sys.argv[1])  # the test process's stdin, which a child inherits


def drop_capabilities(numbers):
    # What ``setpriv --inh-caps=-X --bounding-set=-X`` leaves a root process started under
    # it: X in none of its bounding, inheritable, permitted and effective sets.
    import ctypes

    SETS = ("effective", "permitted", "inheritable")
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in SETS]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for number in numbers:
        if libc.prctl(24, number, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
        word, bit = divmod(number, 32)
        for name in SETS:
            setattr(data[word], name, getattr(data[word], name) & ~(1 << bit))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def child(request):
    if request["start_new_session"]:
        os.setsid()
    drop_capabilities(request["drop_capabilities"])
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["input"] is None:
        os.dup2(INHERITED_STDIN, 0)
    else:
        read, write = os.pipe()
        os.dup2(read, 0)
        os.close(read)
        os.write(write, request["input"].encode())
        os.close(write)
    os.close(INHERITED_STDIN)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    # What the interpreter makes of fds 0-2 at its start (not a terminal: block-buffered
    # stdout, line-buffered stderr that escapes what it cannot encode).
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
    sys.stderr = sys.__stderr__ = open(
        2, "w", buffering=1, closefd=False, errors="backslashreplace"
    )
    import runpy

    # As under ``python -m``: the package imported, the module itself not (it runs only as
    # __main__; the zygote imported it for the imports it makes).
    del sys.modules["tasklease.cli.main"]
    delattr(sys.modules["tasklease.cli"], "main")

    sys.argv = ["-m", *request["args"]]
    code = 0
    try:
        runpy.run_module("tasklease.cli.main", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        import atexit, threading

        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)

out = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    request = json.loads(line)
    out.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
        finally:
            os._exit(70)
    out.write(f"{pid}\n")
    out.flush()
    _, status = os.waitpid(pid, 0)
    out.write(f"{os.waitstatus_to_exitcode(status)}\n")
    out.flush()
"""


class _Zygote:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
        env.update({"COLUMNS": "200", "NO_COLOR": "1"})
        stdin = os.dup(0)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE, str(stdin)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=(stdin,),
            )
        finally:
            os.close(stdin)
        self.lock = threading.Lock()
        self.held = b""

    def send(self, request: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def line(self, deadline: float | None) -> str:
        """The zygote's next line, or "" if ``deadline`` (monotonic) passes first."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.held:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return ""
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the CLI's zygote ended")
            self.held += chunk
        line, self.held = self.held.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the zygote's loop ends
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


_zygote: _Zygote | None = None


def _started() -> _Zygote:
    global _zygote
    if _zygote is None or _zygote.proc.poll() is not None:
        _zygote = _Zygote()
        atexit.register(_zygote.close)
    return _zygote


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def run(
    args: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - subprocess.run's name
    timeout: float | None = None,
    umask: int = -1,
    start_new_session: bool = False,
    drop_capabilities: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-m", "tasklease.cli.main", *args],
    capture_output=True, text=True, ...)``, its other arguments as that call takes them
    (``cwd`` and ``env`` this process's if not given, stdin this process's if ``input``
    is None), forked from the zygote. ``drop_capabilities``: the numbers of the Linux
    capabilities the command runs without, as under ``setpriv --inh-caps=-...
    --bounding-set=-...`` (``CAP_DAC_OVERRIDE`` is 1, ``CAP_DAC_READ_SEARCH`` 2)."""
    if input is not None and len(input.encode()) >= 65536:
        raise ValueError("input is written to a pipe before the command starts: under 64 KiB")
    zygote = _started()
    command = [sys.executable, "-m", "tasklease.cli.main", *args]
    with tempfile.TemporaryDirectory() as held, zygote.lock:
        out, err = Path(held) / "stdout", Path(held) / "stderr"
        zygote.send(
            {
                "args": list(args),
                "cwd": str(cwd if cwd is not None else os.getcwd()),
                "env": dict(env if env is not None else os.environ),
                "input": input,
                "umask": umask if umask >= 0 else _umask(),
                "start_new_session": start_new_session,
                "drop_capabilities": list(drop_capabilities),
                "stdout": str(out),
                "stderr": str(err),
            }
        )
        pid = 0
        try:
            pid = int(zygote.line(None))
            answer = zygote.line(None if timeout is None else time.monotonic() + timeout)
        except BaseException:  # interrupted (pytest-timeout, ^C): the zygote is owed a reply
            if pid:
                os.kill(pid, signal.SIGKILL)
            zygote.proc.kill()
            zygote.close()
            raise
        if not answer:
            os.kill(pid, signal.SIGKILL)
            zygote.line(None)
            raise subprocess.TimeoutExpired(
                command, timeout or 0, output=out.read_text(), stderr=err.read_text()
            )
        return subprocess.CompletedProcess(
            command, int(answer), stdout=out.read_text(), stderr=err.read_text()
        )
