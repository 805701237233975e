"""Where a credential may go over plain HTTP: to this machine only, unless asked.

The one rule of every side that sends a credential to a broker (the agent SDK, the
verifier's feed, the ``tasklease`` CLI), of the SDK's ``auth`` objects that present a
token to resource servers and of its ``discover`` (``client._brokerurl``), and of what
``serve`` and ``doctor`` call local:
``https`` always; ``http`` only to a loopback host (``localhost``, 127.0.0.0/8, ``::1``),
since anything else crosses a network in clear. Beyond loopback, plain HTTP is an explicit
opt-in (``insecure_http=True``, or ``TASKLEASE_INSECURE_HTTP=1`` in the environment), and
each URL so used is announced once with an :class:`InsecureHTTPWarning` (decision 151).

The URL is parsed by the caller with the library that sends it (httpx), so the host judged
is the host connected to: this module parses no URL of its own.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Protocol

from tasklease import forksafe

__all__ = [
    "INSECURE_HTTP_ENV",
    "KEYS_ONLY",
    "InsecureHTTPWarning",
    "ParsedURL",
    "check_credential_url",
    "is_loopback_host",
    "may_carry_credentials",
]

INSECURE_HTTP_ENV = "TASKLEASE_INSECURE_HTTP"
"""The environment's opt-in, shared with the ``tasklease`` CLI's ``--insecure-http``."""

# The spellings the CLI's flag takes from the environment (click's booleans), so that one
# value means the same to the CLI and the SDK.
_YES = frozenset({"1", "true", "t", "yes", "y", "on"})
_NO = frozenset({"", "0", "false", "f", "no", "n", "off"})


class InsecureHTTPWarning(UserWarning):
    """Credentials go to a host beyond loopback over plain HTTP (a broker, or a resource
    server through an SDK ``auth``), as the caller asked.

    Issued once per URL and process. Silence it, once the choice is made for good, with
    ``warnings.filterwarnings("ignore", category=InsecureHTTPWarning)``.
    """


class ParsedURL(Protocol):
    """The parts of a parsed URL this rule reads (``httpx.URL`` has them)."""

    @property
    def scheme(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def netloc(self) -> bytes: ...

    @property
    def path(self) -> str: ...


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address to bind, ``[v6]`` brackets allowed, or ``localhost``)
    reaches this machine only. Any other name is not: it may resolve to anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def may_carry_credentials(scheme: str, host: str) -> bool:
    """Whether a credential may be sent to ``scheme://host`` without an opt-in: ``https``
    always, ``http`` to a loopback host only, no other scheme."""
    scheme = scheme.lower()
    return scheme == "https" or (scheme == "http" and is_loopback_host(host.lower()))


_warned: set[str] = set()
_warned_lock = forksafe.track_lock(threading.Lock())


_CREDENTIALS = ("credentials sent to it would cross the network in clear", "credentials go to")
KEYS_ONLY = (
    "the signing keys fetched from it, which decide what tokens are trusted, could be "
    "replaced in transit",
    "signing keys come from",
)
"""What is at stake for a client that sends no credentials but trusts the keys it fetches
(a verifier): the ``what`` of :func:`check_credential_url`."""


def check_credential_url(
    url: ParsedURL,
    *,
    insecure_http: bool | None,
    environ: Mapping[str, str],
    what: tuple[str, str] | None = None,
    named: str = "broker URL",
) -> None:
    """Refuse to send credentials to ``url`` over plain HTTP beyond loopback, unless the
    caller opted in; then warn, once per URL in this process.

    ``what``: what is at stake, as the refusal and the warning say it (None: the
    credentials sent; :data:`KEYS_ONLY` for a client that trusts the keys it fetches).
    ``named``: what the URL is, as the refusal names it (a broker's, by default).

    ``insecure_http``: True allows it, False refuses it whatever the environment says,
    None leaves it to ``environ[INSECURE_HTTP_ENV]`` (read only for such a URL). A URL of
    another scheme, or of none, is left to the HTTP client, which refuses it.

    Raises:
        ValueError: ``url`` is plain HTTP beyond loopback and no opt-in allows it, or the
            variable holds something other than a yes or a no (a typo must not decide).
    """
    scheme, host = url.scheme.lower(), url.host
    if scheme != "http" or may_carry_credentials(scheme, host):
        return
    stake = _CREDENTIALS if what is None else what
    shown = f"{scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}".rstrip("/")
    if insecure_http is None:
        value = environ.get(INSECURE_HTTP_ENV, "").strip().lower()
        if value not in _YES | _NO:
            raise ValueError(f"{INSECURE_HTTP_ENV} must be 1 or 0 (or empty), not {value!r}")
        source = f"{INSECURE_HTTP_ENV}={value}"
        allowed = value in _YES
    else:
        source, allowed = "insecure_http=True", insecure_http
    if not allowed:
        raise ValueError(
            f"{named} {shown} is plain HTTP to {host}, which is not a loopback address: "
            f"{stake[0]}. Use https://, or "
            "http://127.0.0.1 through a tunnel; on a network you trust, pass "
            f"insecure_http=True or set {INSECURE_HTTP_ENV}=1"
        )
    with _warned_lock:
        if shown in _warned:
            return
        warnings.warn(
            f"{stake[1]} {shown} over plain HTTP ({source})",
            InsecureHTTPWarning,
            stacklevel=_callers_level(),
        )
        _warned.add(shown)


# Frames passed over to find the program's line: the SDK's, and the HTTP client's when the
# check runs in an ``httpx.Auth`` flow (a request to a resource server).
_LIBRARIES = ("tasklease.", "httpx.", "httpx2.")


def _callers_level() -> int:
    """The ``stacklevel`` that names the first frame outside tasklease (and httpx): the
    line of the program that built the client or made the request, not a library's."""
    level, frame = 2, sys._getframe(2)  # the function that called warnings.warn's caller
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_LIBRARIES):
        frame = frame.f_back
        level += 1
    return level
