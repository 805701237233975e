"""The SDK's side of ``rules.cleartext``: a broker URL judged as httpx will send to it."""

from __future__ import annotations

import os

import httpx

from tasklease.rules.cleartext import check_credential_url

__all__ = ["check_broker_url"]


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
