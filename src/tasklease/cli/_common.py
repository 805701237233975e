"""What every remote command shares: consoles, exit codes, where the broker is, errors.

Exit codes (documented in ``tasklease --help`` and docs/cli.md):

    0  success
    1  a check failed, or the thing asked for does not exist (404)
    2  usage or configuration error (bad flags, no URL or secret, unsafe profile file)
    3  the broker refused the request (a 4xx answer other than 404)
    4  the broker is unreachable or failed (network error, 5xx)
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from tasklease.client import AdminClient, NotFound, TaskleaseError, TransportError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "AdminSecretOpt",
    "Connection",
    "JsonOpt",
    "ProfileOpt",
    "UrlOpt",
    "admin_client",
    "broker_errors",
    "err",
    "exit_code_for",
    "fail",
    "out",
    "print_json",
    "resolve_connection",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a check failed or not found; 2 usage or configuration "
    "error; 3 the broker refused the request (4xx); 4 the broker is unreachable or "
    "failed (5xx)."
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TASKLEASE_URL",
        help="Broker URL, e.g. http://127.0.0.1:8080 (or TASKLEASE_URL, or the profile).",
        show_envvar=False,
    ),
]
AdminSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-secret",
        envvar="TASKLEASE_ADMIN_SECRET",
        help="Admin secret (prefer TASKLEASE_ADMIN_SECRET or the profile: flags show in ps).",
        show_envvar=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        envvar="TASKLEASE_PROFILE",
        help="Profile TOML with `url` and `admin_secret` "
        "(default ~/.config/tasklease/profile.toml; must be mode 0600).",
        show_envvar=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = EXIT_USAGE, hint: str | None = None) -> NoReturn:
    """Print ``error: message`` (and the hint) to stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", highlight=False)
    raise typer.Exit(code)


def exit_code_for(error: TaskleaseError) -> int:
    if isinstance(error, TransportError):
        return EXIT_UNAVAILABLE
    if isinstance(error, NotFound):
        return EXIT_FAILED
    if error.status is None:
        return EXIT_USAGE
    if error.status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


@contextmanager
def broker_errors() -> Iterator[None]:
    """Turn SDK errors into the problem's detail and hint on stderr and an exit code."""
    try:
        yield
    except TaskleaseError as exc:
        where = f" ({exc.code}, HTTP {exc.status})" if exc.status is not None else ""
        fail(f"{exc.detail}{where}", exit_code_for(exc), exc.hint)


def print_json(value: Any) -> None:
    """One JSON document on one line (JSON lines when called repeatedly)."""
    sys.stdout.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


# -- where the broker is ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connection:
    url: str
    admin_secret: str | None


def _default_profile() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tasklease" / "profile.toml"


def _read_profile(path: Path, *, explicit: bool) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if explicit:
            fail(f"profile {path} does not exist")
        return {}
    except OSError as exc:
        fail(f"cannot read profile {path}: {exc.strerror}")
    with os.fdopen(fd, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if mode & 0o077:
            fail(
                f"profile {path} is accessible by group or others (mode {mode:04o}); "
                "it may hold the admin secret",
                hint=f"chmod 600 {path}",
            )
        try:
            document = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            fail(f"profile {path} is not valid TOML: {exc}")
    for key in ("url", "admin_secret"):
        if key in document and not isinstance(document[key], str):
            fail(f"profile {path}: {key} must be a string")
    return document


def resolve_connection(
    url: str | None,
    admin_secret: str | None,
    profile: str | None,
    *,
    need_secret: bool = True,
) -> Connection:
    """Flags (and their environment variables) win over the profile file.

    Exits 2 when no URL (or, with ``need_secret``, no admin secret) can be found, or
    the profile file is unsafe or malformed.
    """
    if url is None or (need_secret and admin_secret is None):
        path = Path(profile).expanduser() if profile else _default_profile()
        document = _read_profile(path, explicit=profile is not None)
        url = url or document.get("url")
        admin_secret = admin_secret or document.get("admin_secret")
    if not url:
        fail(
            "no broker URL",
            hint="pass --url, set TASKLEASE_URL, or put url in ~/.config/tasklease/profile.toml",
        )
    if not url.startswith(("http://", "https://")):
        fail(f"broker URL must start with http:// or https://, got {url!r}")
    if need_secret and not admin_secret:
        fail(
            "no admin secret",
            hint="set TASKLEASE_ADMIN_SECRET, pass --admin-secret, or put admin_secret in "
            "the profile file",
        )
    return Connection(url.rstrip("/"), admin_secret)


def admin_client(
    url: str | None, admin_secret: str | None, profile: str | None, *, need_secret: bool = True
) -> AdminClient:
    connection = resolve_connection(url, admin_secret, profile, need_secret=need_secret)
    return AdminClient(connection.url, connection.admin_secret)
