"""The console's session over plain HTTP (no browser): signing out ends the session's
token on the broker, sign-ins share one limit with the API's, and a page's numbers are
bounded as the API's are."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, launch_broker, stop_broker

pytestmark = pytest.mark.slow

COOKIE = "tasklease_console"
WRONG = "wrong-secret-0123456789"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("console-session"), dict(SHARED_ENV))
    yield running
    stop_broker(running)


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None, text[:500]
    return found.group(1)


def _sign_in(broker: RunningBroker, secret: str, name: str = "") -> httpx.Response:
    with httpx.Client(base_url=broker.url, timeout=15.0, follow_redirects=False) as client:
        form = client.get("/console/login")
        return client.post(
            "/console/login",
            data={"csrf": _csrf(form.text), "operator": name, "secret": secret},
            headers={"origin": broker.url},
        )


@contextlib.contextmanager
def _session(broker: RunningBroker) -> Iterator[httpx.Client]:
    """A client signed in to the console as a new admin operator."""
    name = f"admin-{secrets.token_hex(3)}"
    made = broker.post(
        "/v1/admin/operators", json={"name": name, "role": "admin"}, headers=broker.admin_headers()
    )
    assert made.status_code == 201, made.text
    with httpx.Client(base_url=broker.url, timeout=15.0, follow_redirects=False) as client:
        form = client.get("/console/login")
        signed = client.post(
            "/console/login",
            data={"csrf": _csrf(form.text), "operator": name, "secret": made.json()["secret"]},
            headers={"origin": broker.url},
        )
        assert signed.status_code == 303, signed.text
        yield client


def test_signing_out_revokes_the_sessions_token(broker: RunningBroker) -> None:
    with _session(broker) as client:
        token = client.cookies.get(COOKIE)
        assert token
        home = client.get("/console/")
        assert home.status_code == 200
        out = client.post(
            "/console/logout", data={"csrf": _csrf(home.text)}, headers={"origin": broker.url}
        )
    assert out.status_code == 303 and out.headers["location"].endswith("/console/login")
    # A copy of the cookie no longer opens the console, nor the API.
    with httpx.Client(base_url=broker.url, timeout=15.0, follow_redirects=False) as copy:
        copy.cookies.set(COOKIE, token, domain="127.0.0.1", path="/console")
        again = copy.get("/console/")
    # ... and the sign-in page it is sent to names the refusal of the revoked token.
    assert again.status_code == 303
    assert re.fullmatch(r"/console/login\?denial=den_[0-9a-f]{16}", again.headers["location"])
    api = broker.get("/v1/admin/operators", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "token_revoked", "limit": "1000"},
        headers=broker.admin_headers(),
    ).json()["events"]
    assert any(e["detail"].startswith("signed out: level=token") for e in events)


def test_a_huge_audit_offset_is_an_empty_page_not_an_error(broker: RunningBroker) -> None:
    with _session(broker) as client:
        for offset in ("99999999999999999999999999", "9223372036854775808", "-5", "x"):
            page = client.get("/console/audit", params={"offset": offset})
            assert page.status_code == 200, (offset, page.text[:300])


def test_console_and_api_sign_ins_share_one_limit(tmp_path: Path) -> None:
    """Three guesses per address in all, whichever door: switching between the console
    and the API buys no attempts. The console's refusal is audited as the API's, in the
    same run: its page names the run's one event (docs/decisions.md 148)."""
    env = {**SHARED_ENV, "TASKLEASE_ADMIN_AUTH_RATE": "0.01", "TASKLEASE_ADMIN_AUTH_BURST": "3"}
    broker = launch_broker(tmp_path, env)
    try:
        api = [broker.post("/v1/admin/auth", json={"secret": WRONG}).status_code for _ in range(2)]
        console = [_sign_in(broker, WRONG) for _ in range(2)]
        after = broker.post("/v1/operator/auth", json={"name": "nobody", "secret": WRONG})
        statuses = [r.status_code for r in console]
        assert (api, statuses, after.status_code) == ([401, 401], [401, 429], 429)
        limited = console[1]
        assert int(limited.headers["retry-after"]) >= 1
        shown = re.findall(r"den_[0-9a-f]{16}", limited.text)
        assert shown and set(shown) == {after.json()["denial_id"]}, limited.text
    finally:
        stop_broker(broker)
