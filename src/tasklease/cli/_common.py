"""What every remote command shares: consoles, exit codes, where the broker is, errors.

Exit codes (documented in ``tasklease --help`` and docs/cli.md):

    0  success
    1  a check failed, or the thing asked for does not exist (404)
    2  usage or configuration error (bad flags, no URL or secret, unsafe profile file)
    3  the broker refused the request (a 4xx answer other than 404)
    4  the broker is unreachable or failed (network error, 5xx)
"""

from __future__ import annotations

import base64
import binascii
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

import httpx
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rich.console import Console
from rich.markup import escape

from tasklease.cli._sessions import cached_session, config_dir
from tasklease.client import AdminClient, NotFound, TaskleaseError, TransportError
from tasklease.core.tenants import tenant_id_error

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
    "config_dir",
    "err",
    "exit_code_for",
    "fail",
    "out",
    "print_json",
    "read_public_key",
    "resolve_connection",
    "select_tenant",
    "selected_tenant",
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
        help="Profile TOML with `url`, and `admin_secret` or `operator` with "
        "`operator_secret` or `operator_key_file` "
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
    """Where the broker is, and who signs in: a named operator, else the admin secret."""

    url: str
    admin_secret: str | None
    operator: str | None = None
    operator_secret: str | None = None
    operator_key: bytes | None = None  # the 32-byte Ed25519 private key seed


def _default_profile() -> Path:
    return config_dir() / "profile.toml"


def _read_private(path: Path, what: str, *, explicit: bool = True) -> bytes | None:
    """The bytes of a file only its owner may read (None if absent and not ``explicit``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if explicit:
            fail(f"{what} {path} does not exist")
        return None
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}")
    with os.fdopen(fd, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if mode & 0o077:
            fail(
                f"{what} {path} is accessible by group or others (mode {mode:04o}); "
                "it may hold a secret",
                hint=f"chmod 600 {path}",
            )
        return fh.read()


def _read_profile(path: Path, *, explicit: bool) -> dict[str, Any]:
    raw = _read_private(path, "profile", explicit=explicit)
    if raw is None:
        return {}
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"profile {path} is not valid TOML: {exc}")
    keys = ("url", "admin_secret", "operator", "operator_secret", "operator_key_file", "tenant")
    for key in keys:
        if key in document and not isinstance(document[key], str):
            fail(f"profile {path}: {key} must be a string")
    return document


# The tenant the remote commands address (``tasklease --tenant NAME ...``, or
# TASKLEASE_TENANT, or ``tenant`` in the profile); None or "default": the default tenant.
_tenant: list[str | None] = [None]


def select_tenant(name: str | None) -> None:
    """Address the tenant ``name`` in every remote command of this invocation."""
    if name is not None and name != "default" and tenant_id_error(name) is not None:
        fail(f"invalid tenant name {name!r}", hint=tenant_id_error(name))
    _tenant[0] = name


def selected_tenant() -> str | None:
    """The tenant chosen for this invocation (None: the default tenant)."""
    name = _tenant[0]
    return None if name in (None, "", "default") else name


def _tenant_url(url: str, tenant: str | None) -> str:
    """The base URL of ``tenant``'s API on the broker at ``url``."""
    base = url.rstrip("/")
    return base if tenant in (None, "", "default") else f"{base}/t/{tenant}"


def _check_broker_url(url: str) -> None:
    """Exit 2 unless ``url`` is an http(s) URL with a host that httpx can use: a mistyped
    port or address is the user's input to correct, not a stack trace from the SDK."""
    if not url.startswith(("http://", "https://")):
        fail(f"broker URL must start with http:// or https://, got {url!r}")
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as exc:
        fail(f"broker URL {url!r} is malformed: {exc}")
    if not host:
        fail(f"broker URL {url!r} names no host")


def resolve_connection(
    url: str | None,
    admin_secret: str | None,
    profile: str | None,
    *,
    need_secret: bool = True,
) -> Connection:
    """Flags (and their environment variables) win over the profile file.

    A named operator (``TASKLEASE_OPERATOR`` with ``TASKLEASE_OPERATOR_SECRET`` or
    ``TASKLEASE_OPERATOR_KEY_FILE``, or ``operator`` with ``operator_secret`` or
    ``operator_key_file`` in the profile) signs in rather than the admin secret.

    Exits 2 when no URL (or, with ``need_secret``, no credential) can be found, the URL
    is malformed, or the profile or key file is unsafe or malformed.
    """
    operator = os.environ.get("TASKLEASE_OPERATOR") or None
    operator_secret = os.environ.get("TASKLEASE_OPERATOR_SECRET") or None
    key_file = os.environ.get("TASKLEASE_OPERATOR_KEY_FILE") or None
    named = operator is not None and (operator_secret or key_file)
    if url is None or (need_secret and admin_secret is None and not named):
        path = Path(profile).expanduser() if profile else _default_profile()
        document = _read_profile(path, explicit=profile is not None)
        url = url or document.get("url")
        admin_secret = admin_secret or document.get("admin_secret")
        if _tenant[0] is None and document.get("tenant"):
            select_tenant(str(document["tenant"]))
        if operator is None and document.get("operator"):
            operator = document["operator"]
            operator_secret = document.get("operator_secret")
            key_file = document.get("operator_key_file")
    if not url:
        fail(
            "no broker URL",
            hint="pass --url, set TASKLEASE_URL, or put url in ~/.config/tasklease/profile.toml",
        )
    _check_broker_url(url)
    if operator is not None:
        if not (operator_secret or key_file):
            fail(
                f"no secret or key for operator {operator}",
                hint="set TASKLEASE_OPERATOR_SECRET or TASKLEASE_OPERATOR_KEY_FILE, or put "
                "operator_secret or operator_key_file in the profile file",
            )
        key = _read_private_key(Path(key_file).expanduser()) if key_file else None
        return Connection(_tenant_url(url, _tenant[0]), None, operator, operator_secret, key)
    if need_secret and not admin_secret:
        fail(
            "no admin secret",
            hint="run `tasklease login`, set TASKLEASE_ADMIN_SECRET (or TASKLEASE_OPERATOR "
            "and its secret), pass --admin-secret, or put admin_secret in the profile file",
        )
    return Connection(_tenant_url(url, _tenant[0]), admin_secret)


def admin_client(
    url: str | None, admin_secret: str | None, profile: str | None, *, need_secret: bool = True
) -> AdminClient:
    """A client for the broker, signed in with the session ``tasklease login`` cached for
    it while that lasts, else with the credential found (flags, environment, profile)."""
    connection = resolve_connection(url, admin_secret, profile, need_secret=False)
    cached = cached_session(connection.url)
    if cached is None and need_secret:
        connection = resolve_connection(url, admin_secret, profile, need_secret=True)
    token, left = cached if cached is not None else (None, 0.0)
    return AdminClient(
        connection.url,
        connection.admin_secret,
        operator=connection.operator,
        operator_secret=connection.operator_secret,
        operator_key=connection.operator_key,
        access_token=token,
        token_expires_in=left,
    )


# -- Ed25519 key files ----------------------------------------------------------------------


def _raw_base64(text: str, size: int) -> bytes | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def _read_private_key(path: Path) -> bytes:
    """An operator's Ed25519 private key (the 32-byte seed) from a 0600 file: PKCS#8 PEM
    (``openssl genpkey -algorithm ed25519``, unencrypted) or the seed in base64."""
    data = _read_private(path, "operator key file") or b""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            fail(f"operator key file {path} is not an unencrypted PEM private key: {exc}")
        if not isinstance(key, Ed25519PrivateKey):
            fail(f"operator key file {path} does not hold an Ed25519 key")
        return key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    seed = _raw_base64(data.decode("ascii", "replace"), 32)
    if seed is None:
        fail(f"operator key file {path} is neither a PEM Ed25519 key nor a base64 seed")
    return seed


def read_public_key(path: Path) -> bytes:
    """A raw 32-byte Ed25519 public key from a file: PEM (``openssl pkey -pubout``) or base64."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read public key {path}: {exc.strerror}")
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            fail(f"{path} is not a PEM public key: {exc}")
        if not isinstance(key, Ed25519PublicKey):
            fail(f"{path} does not hold an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raw = _raw_base64(data.decode("ascii", "replace"), 32)
    if raw is None:
        fail(f"{path} is neither a PEM Ed25519 public key nor 32 bytes in base64")
    return raw
