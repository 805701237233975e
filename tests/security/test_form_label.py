"""A body is read as a form only when the edge read it as one.

The edge refuses a control character in a form body by its percent-escapes (``%0A``,
``%1B``), and in a JSON body by its strings; it tells the two apart by ``Content-Type``.
Every reader of a form must tell them apart the same way, or a form the edge judged as
something else (and so never looked at for escapes) is decoded by a route with its
control characters in it:

- the token routes compared the media type after Python's ``str.strip``, which also
  strips a trailing NBSP (``0xA0``) or NEL (``0x85``) that the edge's byte comparison
  kept: ``application/x-www-form-urlencoded\\xa0`` was JSON to the edge, a form to them;
- the console's forms were decoded whatever the type said: ``text/plain`` (or none) put
  a line break and an escape sequence into a stored revocation target, the revocation
  feed and the admin API's answers.

Against a real broker, over loopback HTTP.
"""

from __future__ import annotations

import re

import httpx
import pytest
from e2e_support import RunningBroker

FORM = b"application/x-www-form-urlencoded"
# Bytes a header value may hold (obs-text) that ``str.strip`` removes and RFC 9110's OWS
# (space, tab) is not.
ODD_ENDINGS = [b"\xa0", b"\x85", b" \xa0", b"\xa0; charset=utf-8"]
TOKEN_ROUTES = ["/v1/oauth/token", "/v1/token/revoke", "/v1/introspect"]
POISONED = b"grant_type=client_credentials&client_id=app%0Aforged%1B%5B31m&client_secret=s"


def _post(
    broker: RunningBroker, path: str, body: bytes, content_type: bytes | None
) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return httpx.post(broker.url + path, content=body, headers=headers, timeout=10)  # type: ignore[arg-type]


@pytest.mark.parametrize("ending", ODD_ENDINGS)
@pytest.mark.parametrize("path", TOKEN_ROUTES)
def test_a_form_type_with_an_odd_ending_is_no_form_to_the_token_routes(
    broker: RunningBroker, path: str, ending: bytes
) -> None:
    """No control character gets past the edge to a form decoder: the request is a 400
    either way (the edge's, or the route's "not JSON"), never a route's 401 that read
    the form."""
    resp = _post(broker, path, POISONED.replace(b"client_id", b"token", 1), FORM + ending)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "invalid_request"
    assert "denial_id" not in resp.json()  # refused as malformed, before any caller


def test_the_plain_form_type_and_its_parameters_still_are_forms(broker: RunningBroker) -> None:
    """Case, OWS and parameters do not change what the type is (RFC 9110 section 8.3.1)."""
    for content_type in (FORM, b"Application/X-WWW-Form-URLEncoded", FORM + b" ; charset=utf-8"):
        resp = _post(broker, "/v1/oauth/token", POISONED, content_type)
        assert resp.status_code == 400, resp.text
        assert "control character" in resp.json()["detail"]
        clean = POISONED.replace(b"%0Aforged%1B%5B31m", b"")
        resp = _post(broker, "/v1/oauth/token", clean, content_type)
        assert resp.status_code == 401, resp.text  # read as a form: an unknown client
        assert resp.json()["error"] == "invalid_client"


def _console(broker: RunningBroker) -> tuple[httpx.Client, str]:
    """A signed-in console session (the admin's) and the revoke page's CSRF value."""
    client = httpx.Client(base_url=broker.url, timeout=10)
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    signed_in = client.post(
        "/console/login",
        data={"csrf": csrf.group(1), "operator": "", "secret": broker.admin_secret},
        headers={"Origin": broker.url},
    )
    assert signed_in.status_code == 303, signed_in.text
    confirm = client.get("/console/revoke", params={"level": "task", "target": "t"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', confirm.text)
    assert csrf is not None
    return client, csrf.group(1)


@pytest.mark.parametrize("content_type", [b"text/plain", None, b"application/json", FORM + b"\xa0"])
def test_a_console_form_of_another_type_revokes_nothing(
    broker: RunningBroker, content_type: bytes | None
) -> None:
    client, csrf = _console(broker)
    target = "task-" + (content_type or b"none").hex()[:12]
    body = f"csrf={csrf}&level=task&target={target}%0Aforged%1B%5B31m&back=/console/".encode()
    headers = {"Origin": broker.url}
    if content_type is not None:
        headers["Content-Type"] = content_type  # type: ignore[assignment]
    try:
        resp = client.post("/console/revoke", content=body, headers=headers)
    finally:
        client.close()
    assert resp.status_code == 403, resp.text  # no form, so no CSRF value: a stale form
    assert "den_" in resp.text  # audited, its refusal named
    listed = broker.get("/v1/admin/revocations", headers=broker.admin_headers())
    assert target not in listed.text, listed.text


def test_a_console_form_sent_as_a_form_still_revokes(broker: RunningBroker) -> None:
    client, csrf = _console(broker)
    try:
        resp = client.post(
            "/console/revoke",
            data={"csrf": csrf, "level": "task", "target": "task-plain-form", "back": "/console/"},
            headers={"Origin": broker.url},
        )
    finally:
        client.close()
    assert resp.status_code == 303, resp.text
    listed = broker.get("/v1/admin/revocations", headers=broker.admin_headers())
    assert "task-plain-form" in listed.text
