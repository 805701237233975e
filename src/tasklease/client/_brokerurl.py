"""The SDK's side of ``rules.cleartext``: a broker URL judged as httpx will send to it,
and each request an ``auth`` of the SDK is asked to put a credential on."""

from __future__ import annotations

import os

import httpx

from tasklease.client._errors import InsecureHTTP
from tasklease.rules.cleartext import check_credential_url

__all__ = ["METADATA", "check_broker_url", "check_request_url"]

METADATA = (
    "the authorization servers named there, which the agent would trust and send its "
    "tokens to, could be chosen by anyone on the path",
    "resource metadata comes from",
)
"""What is at stake when a resource's metadata is fetched (:func:`discover`): the
``what`` of :func:`check_request_url`."""

_HINT = (
    "pass insecure_http=True where the agent was made (register, resume, from_oidc, ...) "
    "or the OfflineCredential, or set TASKLEASE_INSECURE_HTTP=1"
)


def check_broker_url(
    broker_url: str,
    insecure_http: bool | None,
    client: httpx.Client | httpx.AsyncClient | None = None,
) -> None:
    """Refuse a broker URL that would carry credentials over plain HTTP beyond loopback,
    unless ``insecure_http`` (or, when it is None, ``TASKLEASE_INSECURE_HTTP``) allows it;
    warn once per URL when it does.

    Judged is where the requests go: ``broker_url``, or the ``base_url`` of ``client``
    when ``broker_url`` is relative (httpx then sends to the client's base URL).

    Raises:
        ValueError: as :func:`tasklease.rules.cleartext.check_credential_url`.
        httpx.InvalidURL: ``broker_url`` is not a URL httpx could send to.
    """
    url = httpx.URL(broker_url)
    if client is not None and url.is_relative_url:
        url = client.base_url
    check_credential_url(url, insecure_http=insecure_http, environ=os.environ)


def check_request_url(
    url: object,
    insecure_http: bool | None,
    *,
    what: tuple[str, str] | None = None,
    named: str = "request URL",
) -> None:
    """Refuse a request to ``url`` (a request's ``url``, httpx's or httpx2's, or a string)
    that would carry a credential over plain HTTP beyond loopback, unless ``insecure_http``
    (or, when it is None, ``TASKLEASE_INSECURE_HTTP``) allows it; warn once per origin when
    it does. Every ``auth`` of the SDK calls this before it attaches anything, and
    :func:`discover` before it fetches a resource's metadata (``what``: :data:`METADATA`;
    ``named``: what the URL is, as the refusal says).

    The origin is judged and named (scheme, host, port): never the path or query, which
    a program may not want in a log, and one warning per server rather than per path.

    Raises:
        InsecureHTTP: the rule refused (or ``TASKLEASE_INSECURE_HTTP`` holds neither a yes
            nor a no); nothing has been sent.
    """
    # Every request an ``auth`` is given comes here: one over ``https`` (or any scheme but
    # ``http``, which the rule passes at once) is decided by its scheme, parsed already.
    scheme = getattr(url, "scheme", None)
    if isinstance(scheme, str) and scheme and scheme.lower() != "http":
        return
    parsed = httpx.URL(str(url))  # an httpx2.URL too: the same parts, as httpx reads them
    origin = parsed.copy_with(path="/", query=None, fragment=None)
    try:
        check_credential_url(
            origin,
            insecure_http=insecure_http,
            environ=os.environ,
            what=what,
            named=named,
        )
    except ValueError as exc:
        raise InsecureHTTP(str(exc), hint=_HINT) from None
