"""The console's sign-in session: the operator's own short-lived token in a cookie, and
the CSRF token every form carries.

The cookie holds the access token that ``POST /v1/operator/auth`` (or the admin secret's
``POST /v1/admin/auth``) would have given: each page authenticates it with the broker
exactly as the API authenticates a bearer token, so roles, revocation and expiry are the
broker's own (an operator's removal or rotation ends its console session at once), and
the session lasts as long as the token (``admin_token_ttl``, 5 minutes by default).

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it) and ``Secure`` whenever the console is served over TLS, or the browser's
page is an ``https`` one (its ``Origin``: TLS ended at a proxy). Over plain HTTP the console
serves loopback clients only, where the browser and the broker share a machine, and not
when the browser says (``Origin``) its page is plain HTTP on a host beyond loopback: a proxy
on the broker's machine that is not a trusted proxy makes every client look local.

CSRF: every form of a session carries ``HMAC-SHA256(session token, "tasklease-console-
csrf")``, which a page of another origin cannot compute (it cannot read the cookie);
the sign-in form carries a random value also set in a cookie of its own (double submit).
The ``Origin`` header, when sent, must be the console's own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tasklease.rules.cleartext import may_carry_credentials

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "csrf_for",
    "login_csrf",
    "plain_http_refused",
    "same_origin",
    "set_cookie",
    "valid_csrf",
]

SESSION_COOKIE = "tasklease_console"
LOGIN_COOKIE = "tasklease_console_login"
_CSRF_LABEL = b"tasklease-console-csrf"


def csrf_for(session_token: str) -> str:
    """The CSRF token of the forms of the session whose cookie holds ``session_token``."""
    return hmac.new(session_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def login_csrf() -> str:
    """A fresh value for the sign-in form and its cookie."""
    return secrets.token_urlsafe(24)


def valid_csrf(expected: str, given: str) -> bool:
    """Constant-time comparison; an empty expected value never matches."""
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page_scheme(request: Request) -> tuple[str, str]:
    """The scheme and host of the page the request came from (its ``Origin``; "" for
    none or one that does not parse)."""
    try:
        parts = urlsplit(request.headers.get("origin", ""))
        return parts.scheme, parts.hostname or ""
    except ValueError:
        return "", ""


def _asked_host(request: Request) -> str:
    """The host name the browser asked for (its ``Host``), "" when there is none that
    parses."""
    try:
        return urlsplit("//" + request.headers.get("host", "")).hostname or ""
    except ValueError:
        return ""


def plain_http_refused(request: Request) -> bool:
    """True when the console is asked over plain HTTP by a client beyond loopback, or by
    a page that is plain HTTP on a host beyond loopback, or for a host beyond loopback
    (each relayed by a proxy on this machine): its cookie would cross the network in
    clear, and a secret typed into its sign-in page would have."""
    if _secure(request):
        return False
    host = request.client.host if request.client else ""
    try:
        if not ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        return True
    if not may_carry_credentials("http", _asked_host(request)):
        # The browser asked for a name beyond loopback, and a proxy on this machine that
        # is not in trusted_proxies relayed it over plain HTTP: the page itself is plain
        # HTTP there. Its GET names no page (no Origin), so only Host says so.
        return True
    scheme, page_host = _page_scheme(request)
    return scheme == "http" and not may_carry_credentials(scheme, page_host)


def same_origin(request: Request, origins: Sequence[str]) -> bool:
    """False when the request names an ``Origin`` other than the broker's own ``origins``
    (its ``public_url``, or the addresses it serves on: never taken from ``Host``)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return any(hmac.compare_digest(origin.encode(), own.encode()) for own in origins)


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, path: str, max_age: int
) -> None:
    """Set (``max_age`` > 0) or clear a console cookie with its flags."""
    response.set_cookie(
        name,
        value,
        max_age=max_age if max_age > 0 else 0,
        path=path,
        httponly=True,
        secure=_secure(request) or _page_scheme(request)[0] == "https",
        samesite="strict",
    )
