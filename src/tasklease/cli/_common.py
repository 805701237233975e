"""What every remote command shares: consoles, exit codes, where the broker is, errors,
and the one way a command writes a file.

Exit codes (documented in ``tasklease --help`` and docs/cli.md):

    0  success
    1  a check failed, or the thing asked for does not exist (404)
    2  usage or configuration error (bad flags, no URL or secret, unsafe profile file)
    3  the broker refused the request (a 4xx answer other than 404)
    4  the broker is unreachable or failed (network error, 5xx, an answer no broker gives)
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import sys
import tomllib
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment

from tasklease.cli._sessions import cached_session, config_dir, session_subject
from tasklease.core.tenantids import tenant_id_error
from tasklease.localfiles import foreign_owner, open_regular, read_regular
from tasklease.rules.cleartext import InsecureHTTPWarning, may_carry_credentials
from tasklease.rules.controls import escaped

# Every command imports this module, and `tasklease --help` loads every command: what
# only some use (the SDK and httpx, cryptography for key files) is imported where used.
if TYPE_CHECKING:
    import ssl

    from tasklease.client import AdminClient, TaskleaseError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "AdminSecretOpt",
    "ConfigOpt",
    "Connection",
    "DataDirOpt",
    "ForceOpt",
    "JsonOpt",
    "ProfileOpt",
    "UrlOpt",
    "address_default_tenant",
    "admin_client",
    "allow_insecure_http",
    "broker_errors",
    "config_dir",
    "err",
    "error_line",
    "exit_code_for",
    "fail",
    "out",
    "present_client_certificate",
    "print_json",
    "private_output",
    "raw_base64",
    "read_public_key",
    "resolve_connection",
    "select_tenant",
    "selected_tenant",
    "write_private",
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


class _Screen(Console):
    """A console that writes no terminal control: every piece of text it renders (a
    line, a table's cell, a tree's label) has each character of ``rules.controls`` but
    tab and line feed shown escaped (``\\u001b``), as it renders, whichever call
    printed it. The CLI's own text holds none; a value a broker returned (an id, a name,
    a status) could hold any (an ESC sequence, an 8-bit CSI, a bidi override), and
    would drive the operator's terminal. Text escaped already is unchanged: the escape
    holds no control. The styles rich writes are its control segments, kept."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and not segment.text.isprintable():
                yield segment._replace(text=escaped(segment.text))
            else:
                yield segment


# The only consoles of the CLI. Text printed is data (a path, a name, a broker's answer)
# and shown as written, controls escaped (_Screen): rich markup is off unless a call opts
# in with ``markup=True``, and such a call escapes every value it interpolates
# (rich.markup.escape).
out = _Screen(soft_wrap=True, markup=False)
err = _Screen(stderr=True, soft_wrap=True, markup=False)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        envvar="TASKLEASE_URL",
        help="Broker URL, e.g. http://127.0.0.1:8080 (or TASKLEASE_URL, or the profile).",
        show_envvar=False,
    ),
]
AdminSecretOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-secret",
        metavar="SECRET",
        envvar="TASKLEASE_ADMIN_SECRET",
        help="Admin secret (prefer TASKLEASE_ADMIN_SECRET or the profile: flags show in ps).",
        show_envvar=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="FILE",
        envvar="TASKLEASE_PROFILE",
        help="Profile TOML with `url`, and `admin_secret` or `operator` with "
        "`operator_secret` or `operator_key_file`, and for mTLS `client_cert` and "
        "`client_key` (default ~/.config/tasklease/profile.toml; must be mode 0600).",
        show_envvar=False,
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML config file (default: <data-dir>/config.toml).",
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Directory for the database and keys.",
        envvar="TASKLEASE_DATA_DIR",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Replace an existing --output file (with a new 0600 file)."),
]


def fail(message: str, code: int = EXIT_USAGE, hint: str | None = None) -> NoReturn:
    """Print ``error: message`` (and the hint) to stderr and exit with ``code``."""
    error_line(message, hint)
    raise typer.Exit(code)


def error_line(message: str, hint: str | None = None) -> None:
    """Print ``error: message`` (and ``hint: ...``) to stderr, both shown as written: a
    message may quote what a server answered (a refusal's detail and hint), whose
    terminal controls the console escapes (``_Screen``)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", highlight=False, markup=True)


def exit_code_for(error: TaskleaseError) -> int:
    from tasklease.client import NotFound, TransportError

    if isinstance(error, TransportError):
        return EXIT_UNAVAILABLE
    if error.code == "bad_response" and (error.status is None or error.status < 300):
        # An answer no broker gives (not JSON, not an object, without what was asked):
        # the broker failed, or what answered is no broker. Not a refusal (3), and not
        # the user's input to correct (2).
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
    from tasklease.client import TaskleaseError

    try:
        yield
    except TaskleaseError as exc:
        where = f" ({exc.code}, HTTP {exc.status})" if exc.status is not None else ""
        hint = exc.hint or _tenant_hint(exc) or _certificate_hint(exc)
        fail(f"{exc.detail}{where}", exit_code_for(exc), hint)


# What a broker answers for every path under /t/<name>/ when it serves no tenant <name>
# (never created, removed): the answer of a path it does not know.
_NO_ROUTE = "no such endpoint"


def _tenant_hint(error: TaskleaseError) -> str | None:
    """What to do when the tenant addressed is not served (a 404 for a route every
    tenant has), or when a command of the tenant registry was refused a sign-in with
    another tenant's credentials; None otherwise."""
    aside = _set_aside[0].strip()
    if aside and error.status == 401:
        return (
            f"tenant commands sign in to the default tenant, not to tenant {aside} (named "
            "by --tenant, TASKLEASE_TENANT or the profile): use the default tenant's admin "
            "secret or one of its admin operators; a tenant's own operators manage "
            "everything in it but not the tenant registry"
        )
    tenant = selected_tenant()
    if tenant is None or error.status != 404 or error.detail != _NO_ROUTE:
        return None
    return (
        f"the broker serves no tenant {tenant}: a misspelt name, or a tenant removed "
        "(names are never given again). The default tenant's admins see every tenant "
        "with `tasklease tenant list`"
    )


# What OpenSSL reports when the server refused the client's certificate, or its absence,
# with an alert (a proxy in front may; uvicorn closes the connection without one).
_CERTIFICATE_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)


def _closed_unanswered(error: BaseException) -> bool:
    """Whether ``error`` is a TLS connection the server closed before answering (during
    or right after the handshake: an EOF, a certificate alert, a disconnect without a
    response), what a broker with ``tls_mode = "mtls"`` does to a client without an
    acceptable certificate."""
    import ssl

    import httpx

    seen: set[int] = set()
    cause: BaseException | None = error.__cause__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLEOFError):
            return True
        if isinstance(cause, ssl.SSLError) and cause.reason in _CERTIFICATE_ALERTS:
            return True
        if isinstance(cause, httpx.RemoteProtocolError) and "without sending a response" in str(
            cause
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _certificate_hint(error: TaskleaseError) -> str | None:
    """How to present a client certificate, when an https:// broker closed the connection
    unanswered (``_closed_unanswered``); None otherwise."""
    from tasklease.client import TransportError

    https, presented = _presented[0]
    if not https or not isinstance(error, TransportError) or not _closed_unanswered(error):
        return None
    if presented is None:
        return (
            'a broker with tls_mode = "mtls" closes the connection of a client that '
            "presents no certificate: present one issued by its tls_client_ca, with "
            f"{_HOW_TO_PRESENT}"
        )
    return (
        f'a broker with tls_mode = "mtls" closes the connection of a client whose '
        f"certificate its tls_client_ca did not issue, or that has expired: check "
        f"{presented}"
    )


def print_json(value: Any) -> None:
    """One JSON document on one line (JSON lines when called repeatedly), ASCII only as
    every JSON line is: no character of it ends a line or drives a terminal."""
    from tasklease.logs import json_line

    sys.stdout.write(json_line(value) + "\n")
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
    # What the client trusts and presents (a client certificate, for a broker with
    # tls_mode = "mtls"), or None: the SDK's default trust, and no certificate.
    tls: ssl.SSLContext | None = None

    @property
    def subject(self) -> str | None:
        """Who these credentials name, as the broker's tokens do (``admin`` for the admin
        secret, ``operator:<name>``); None when they name no one."""
        if self.operator is not None:
            return session_subject(self.operator)
        return session_subject(None) if self.admin_secret else None

    @property
    def insecure_http(self) -> bool:
        """Whether the user opted in to plain HTTP beyond loopback, for the SDK's client."""
        return _insecure_http[0]

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """The ``verify=`` for the SDK's client."""
        return True if self.tls is None else self.tls


def _default_profile() -> Path:
    return config_dir() / "profile.toml"


def _read_private(path: Path, what: str, *, explicit: bool = True) -> bytes | None:
    """The bytes of a file only its owner may read (None if absent and not ``explicit``).

    A regular file, not a symbolic link (``localfiles.open_regular``): a named pipe with
    no writer would make the command wait for ever. Owned by this user or root
    (``localfiles.foreign_owner``): another user's would choose the broker the secret
    goes to, or whom the command acts as."""
    try:
        fd = open_regular(path, follow_symlinks=False)
    except FileNotFoundError:
        if explicit:
            fail(f"{what} {path} does not exist")
        return None
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if foreign_owner(st):
            fail(
                f"{what} {path} is owned by uid {st.st_uid}, not by this user "
                f"(uid {os.geteuid()}) or root: its owner chose what it holds",
                hint=f"use a {what} of your own",
            )
        mode = stat.S_IMODE(st.st_mode)
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
    keys = (
        "url",
        "admin_secret",
        "operator",
        "operator_secret",
        "operator_key_file",
        "tenant",
        "client_cert",
        "client_key",
    )
    for key in keys:
        if key in document and not isinstance(document[key], str):
            fail(f"profile {path}: {key} must be a string")
    return document


# The tenant the remote commands address (``tasklease --tenant NAME ...``, or
# TASKLEASE_TENANT, or ``tenant`` in the profile); None or "default": the default tenant.
_tenant: list[str | None] = [None]


# The tenant addressed by --tenant, TASKLEASE_TENANT or the profile, when this invocation
# runs a command of the tenant registry, which is the default tenant's whatever they say
# (``address_default_tenant``): "" when none was addressed.
_set_aside: list[str] = [""]


def select_tenant(name: str | None) -> None:
    """Address the tenant ``name`` in every remote command of this invocation."""
    if name is not None and name != "default" and tenant_id_error(name) is not None:
        fail(f"invalid tenant name {name!r}", hint=tenant_id_error(name))
    _tenant[0] = name


def address_default_tenant() -> None:
    """Address the default tenant in this invocation, whatever --tenant,
    TASKLEASE_TENANT or the profile's ``tenant`` name (for the tenant registry's
    commands): the tenant they name is kept only to say why a sign-in was refused."""
    _set_aside[0] = selected_tenant() or " "  # " ": the profile's is not read yet
    _tenant[0] = "default"


def selected_tenant() -> str | None:
    """The tenant chosen for this invocation (None: the default tenant)."""
    name = _tenant[0]
    return None if name in (None, "", "default") else name


def _tenant_url(url: str, tenant: str | None) -> str:
    """The base URL of ``tenant``'s API on the broker at ``url``."""
    base = url.rstrip("/")
    return base if tenant in (None, "", "default") else f"{base}/t/{tenant}"


# Plain HTTP beyond loopback (``tasklease --insecure-http ...`` or TASKLEASE_INSECURE_HTTP),
# and the URLs already warned about in this invocation.
_insecure_http: list[bool] = [False]
_warned: set[str] = set()


def allow_insecure_http(allowed: bool) -> None:
    """Let this invocation send credentials over plain HTTP to a host beyond loopback."""
    _insecure_http[0] = allowed


# The client certificate and its key given by ``tasklease --client-cert FILE --client-key
# FILE ...`` (or TASKLEASE_CLIENT_CERT and TASKLEASE_CLIENT_KEY); the profile's
# ``client_cert`` and ``client_key`` when neither is given.
_client_certificate: list[tuple[str | None, str | None]] = [(None, None)]

# Whether this invocation's broker URL is https://, and the client certificate it presents
# (None: none), for the hint when the broker closes a connection unanswered.
_presented: list[tuple[bool, Path | None]] = [(False, None)]


def present_client_certificate(cert: str | None, key: str | None) -> None:
    """Present this client certificate (a PEM file) and its private key (a PEM file only
    this user may read) to the broker in every remote command of this invocation."""
    _client_certificate[0] = (cert or None, key or None)
    _presented[0] = (False, None)


class _EncryptedKey(Exception):
    """OpenSSL asked for the passphrase of the client key (raised from its callback)."""


def _encrypted_key() -> str:
    raise _EncryptedKey


_HOW_TO_PRESENT = (
    "`tasklease --client-cert FILE --client-key FILE COMMAND ...`, TASKLEASE_CLIENT_CERT "
    "and TASKLEASE_CLIENT_KEY, or client_cert and client_key in the profile"
)


def _client_tls(cert: str | None, key: str | None, where: str) -> tuple[ssl.SSLContext, Path]:
    """The TLS context of the CLI's client that presents the certificate ``cert`` with
    its private key ``key`` (both PEM), trusting what the SDK's clients trust (the default
    bundle, or ``SSL_CERT_FILE``), and the certificate's path. ``where``: who named them.

    The key is a secret file (:func:`_read_private`: a regular file, not a link, this
    user's or root's, mode 0600 or stricter); the certificate a regular file, a link to one
    followed. One without the other, an encrypted key, or a pair that does not load is
    one error line, exit 2, before anything is sent."""
    import ssl

    import httpx

    if key is None:
        fail(
            f"client certificate {cert} ({where}) is given without its private key",
            hint=f"name both: {_HOW_TO_PRESENT}",
        )
    if cert is None:
        fail(
            f"client key {key} ({where}) is given without its certificate",
            hint=f"name both: {_HOW_TO_PRESENT}",
        )
    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    try:
        read_regular(cert_path)
    except OSError as exc:
        fail(f"cannot read client certificate {cert_path}: {exc.strerror or exc}")
    _read_private(key_path, "client key file")
    context = httpx.create_ssl_context()
    try:
        # OpenSSL opens both by name again: the key is the file just checked, unless this
        # user replaced it in between (which this user may do anyway).
        context.load_cert_chain(cert_path, key_path, password=_encrypted_key)
    except _EncryptedKey:
        fail(
            f"client key file {key_path} is encrypted",
            hint="give the key unencrypted, in a file only you can read (chmod 600)",
        )
    except (OSError, ssl.SSLError) as exc:
        fail(
            f"client certificate {cert_path} and key {key_path} do not load as a "
            f"certificate and its private key: {getattr(exc, 'reason', None) or exc}"
        )
    return context, cert_path


def _check_broker_url(url: str, *, connects: bool = True) -> None:
    """Exit 2 unless ``url`` is an http(s) URL with a host that httpx can use: a mistyped
    port or address is the user's input to correct, not a stack trace from the SDK.

    ``connects``: the command will talk to it, so plain ``http://`` is refused unless the
    host is loopback (``localhost``, 127.0.0.0/8, ``::1``) or the user opted in: the admin
    secret, an operator's secret and tokens would cross the network in clear. Refused
    before any connection is made.
    """
    import httpx

    if not url.startswith(("http://", "https://")):
        fail(f"broker URL must start with http:// or https://, got {url!r}")
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as exc:
        fail(f"broker URL {url!r} is malformed: {exc}")
    if not host:
        fail(f"broker URL {url!r} names no host")
    if not connects or may_carry_credentials(url.partition("://")[0], host):
        return
    if not _insecure_http[0]:
        fail(
            f"broker URL {url} is plain HTTP to {host}, not a loopback address: the secret "
            "and tokens would cross the network in clear",
            hint="use https://, or 127.0.0.1 through an SSH tunnel; on a network you trust, "
            "pass `tasklease --insecure-http ...` or set TASKLEASE_INSECURE_HTTP=1",
        )
    # Said once below, in the CLI's words; the SDK's own warning would repeat it.
    warnings.filterwarnings("ignore", category=InsecureHTTPWarning)
    if url not in _warned:
        _warned.add(url)
        err.print(
            f"warning: credentials go to {url} over plain HTTP (--insecure-http)",
            highlight=False,
        )


def resolve_connection(
    url: str | None,
    admin_secret: str | None,
    profile: str | None,
    *,
    need_secret: bool = True,
    credentials: bool = True,
    connects: bool = True,
) -> Connection:
    """Flags (and their environment variables) win over the profile file: its
    credentials are taken only when neither names one.

    A named operator (``TASKLEASE_OPERATOR`` with ``TASKLEASE_OPERATOR_SECRET`` or
    ``TASKLEASE_OPERATOR_KEY_FILE``, or ``operator`` with ``operator_secret`` or
    ``operator_key_file`` in the profile) signs in rather than the admin secret. Without
    ``need_secret`` an operator may be named without its secret (``login`` asks for it;
    a cached session of that operator serves). ``credentials`` false: only the URL is
    wanted, and the profile is read only when no URL is given.

    A client certificate with its key (``tasklease --client-cert FILE --client-key FILE``,
    their variables, else the profile's ``client_cert`` and ``client_key`` when it is
    read) is loaded into the connection's TLS context when the URL is ``https://`` and the
    command ``connects`` (:func:`_client_tls`).

    Exits 2 when no URL (or, with ``need_secret``, no credential) can be found, the URL
    is malformed or plain HTTP beyond loopback (unless ``connects`` is false, or the user
    opted in), or the profile, key file or client certificate is unsafe or malformed.
    """
    operator = os.environ.get("TASKLEASE_OPERATOR") or None
    operator_secret = os.environ.get("TASKLEASE_OPERATOR_SECRET") or None
    key_file = os.environ.get("TASKLEASE_OPERATOR_KEY_FILE") or None
    explicit = operator is not None or bool(admin_secret)  # by flag or environment
    client_cert, client_key = _client_certificate[0]
    certificate_from = "by --client-cert, --client-key or their variables"
    if url is None or (credentials and not explicit):
        path = Path(profile).expanduser() if profile else _default_profile()
        document = _read_profile(path, explicit=profile is not None)
        url = url or document.get("url")
        if client_cert is None and client_key is None:
            client_cert, client_key = document.get("client_cert"), document.get("client_key")
            certificate_from = f"in the profile {path}"
        if _tenant[0] is None and document.get("tenant"):
            select_tenant(str(document["tenant"]))
        elif _set_aside[0] == " " and document.get("tenant"):
            _set_aside[0] = str(document["tenant"])
        if not explicit:
            admin_secret = document.get("admin_secret")
            if document.get("operator"):
                operator = document["operator"]
                operator_secret = document.get("operator_secret")
                key_file = document.get("operator_key_file")
    if not url:
        fail(
            "no broker URL",
            hint="pass --url, set TASKLEASE_URL, or put url in ~/.config/tasklease/profile.toml",
        )
    _check_broker_url(url, connects=connects)
    tls, presented = None, None
    https = url.startswith("https://")
    if connects and https and (client_cert or client_key):
        tls, presented = _client_tls(client_cert, client_key, certificate_from)
    if connects:
        _presented[0] = (https, presented)
    if operator is not None:
        if not (operator_secret or key_file):
            if not need_secret:
                return Connection(_tenant_url(url, _tenant[0]), None, operator, tls=tls)
            fail(
                f"no secret or key for operator {operator}",
                hint="set TASKLEASE_OPERATOR_SECRET or TASKLEASE_OPERATOR_KEY_FILE, or put "
                "operator_secret or operator_key_file in the profile file",
            )
        key = _read_private_key(Path(key_file).expanduser()) if key_file else None
        return Connection(
            _tenant_url(url, _tenant[0]), None, operator, operator_secret, key, tls=tls
        )
    if need_secret and not admin_secret:
        fail(
            "no admin secret",
            hint="run `tasklease login`, set TASKLEASE_ADMIN_SECRET (or TASKLEASE_OPERATOR "
            "and its secret), pass --admin-secret, or put admin_secret in the profile file",
        )
    return Connection(_tenant_url(url, _tenant[0]), admin_secret, tls=tls)


def admin_client(
    url: str | None, admin_secret: str | None, profile: str | None, *, need_secret: bool = True
) -> AdminClient:
    """A client for the broker, signed in as the operator the credentials found name
    (flags, environment, profile; docs/cli.md), with the session ``tasklease login``
    cached for the broker when it is that operator's (or when no credential names anyone)
    and still lasts, else with the credential itself.

    A session never stands in for another operator than the one named: the broker, and
    so the audit log, must see who the user said acts.
    """
    from tasklease.client import AdminClient

    connection = resolve_connection(url, admin_secret, profile, need_secret=False)
    session = cached_session(connection.url)
    if session is not None and connection.subject not in (None, session.subject):
        session = None  # someone else's: sign in as the one named
    if session is None and (need_secret or connection.operator is not None):
        connection = resolve_connection(url, admin_secret, profile, need_secret=True)
    return AdminClient(
        connection.url,
        connection.admin_secret,
        operator=connection.operator,
        operator_secret=connection.operator_secret,
        operator_key=connection.operator_key,
        access_token=session.token if session is not None else None,
        token_expires_in=session.expires_in if session is not None else 0.0,
        insecure_http=connection.insecure_http,
        verify=connection.verify,
    )


# -- files a command writes -------------------------------------------------------------


@contextmanager
def private_output(
    path: Path, *, force: bool, force_flag: str | None = "--force"
) -> Iterator[BinaryIO]:
    """A handle on a new file at ``path`` that only this user may read (0600), which
    appears there whole when the block ends (tasklease.keystore.private_file_writer).

    An existing file is refused (exit 2) unless ``force`` (the command's ``force_flag``),
    and then replaced by a new file, never written into; a symbolic link or anything but a
    regular file at ``path`` is refused even then, so nothing is written through a link.
    A missing directory is an error, not made.
    """
    from tasklease.keystore import private_file_writer

    try:
        st = os.lstat(path)
    except OSError:
        pass  # absent (or unreachable: the write says why)
    else:
        if stat.S_ISLNK(st.st_mode):
            fail(f"{path} is a symbolic link: not written through it", hint="name a new file")
        if not stat.S_ISREG(st.st_mode):
            fail(f"{path} exists and is not a regular file", hint="name a new file")
    try:
        with private_file_writer(path, replace=force, make_directory=False) as fh:
            yield fh
    except FileExistsError:
        fail(
            f"{path} already exists",
            hint=f"pass {force_flag} to replace it" if force_flag else None,
        )
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def write_private(
    path: Path, text: str, *, force: bool, force_flag: str | None = "--force"
) -> None:
    """``text`` (UTF-8) as a new 0600 file at ``path``, as :func:`private_output` says."""
    with private_output(path, force=force, force_flag=force_flag) as fh:
        fh.write(text.encode("utf-8"))


# -- Ed25519 key files ----------------------------------------------------------------------


def raw_base64(text: str, size: int) -> bytes | None:
    """``size`` bytes from standard base64 (surrounding space ignored), or None."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def _read_private_key(path: Path) -> bytes:
    """An operator's Ed25519 private key (the 32-byte seed) from a 0600 file: PKCS#8 PEM
    (``openssl genpkey -algorithm ed25519``, unencrypted) or the seed in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    seed = raw_base64(data.decode("ascii", "replace"), 32)
    if seed is None:
        fail(f"operator key file {path} is neither a PEM Ed25519 key nor a base64 seed")
    return seed


def read_public_key(path: Path) -> bytes:
    """A raw 32-byte Ed25519 public key from a file: PEM (``openssl pkey -pubout``) or base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = read_regular(path)
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
    raw = raw_base64(data.decode("ascii", "replace"), 32)
    if raw is None:
        fail(f"{path} is neither a PEM Ed25519 public key nor 32 bytes in base64")
    return raw
