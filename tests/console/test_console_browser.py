"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real broker process. One walk through an operator's incident, then an auditor's
visit; a screenshot of each page goes to tests/artifacts/console/ (git-ignored).

Chromium comes from scripts/ensure-chromium.sh (make test runs it); if it cannot start,
the test fails saying so: it never skips.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import RunningBroker, launch_broker, stop_broker
from tests.federation.bundle_support import make_ca

CHROMIUM = os.environ.get("TASKLEASE_CHROMIUM", "/usr/bin/chromium")
ALIAS = "console-alias.test"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A name beyond loopback that reaches this machine, as a proxy's public name would.
    f"--host-resolver-rules=MAP {ALIAS} 127.0.0.1",
]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
SCOPE = ["read:data:*"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = launch_broker(tmp_path_factory.mktemp("console-broker"))
    yield running
    stop_broker(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        pytest.fail(f"Playwright for Python is not installed ({exc}): pip install -e '.[test]'")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure is the message
            pytest.fail(
                f"Chromium could not start from {CHROMIUM}: {exc}\n"
                "Install it with `sh scripts/ensure-chromium.sh` (Debian's `chromium` "
                "package) or point TASKLEASE_CHROMIUM at a Chromium binary."
            )
        yield chromium
        chromium.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _sign_in(page: Any, url: str, secret: str, operator: str = "") -> Any:
    response = page.goto(f"{url}/console/")
    assert page.url.endswith("/console/login")
    if operator:
        page.get_by_label("Operator name").fill(operator)
    page.get_by_label("Secret", exact=True).fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/console/")
    return response


def test_an_operator_watches_an_agent_appear_opens_its_tree_and_revokes_its_task(
    broker: RunningBroker, browser: Any
) -> None:
    url = broker.url
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )

    login = page.goto(f"{url}/console/login")
    csp = login.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    _shot(page, "01-login")
    _sign_in(page, url, broker.admin_secret)
    cookie = next(c for c in context.cookies() if c["name"] == "tasklease_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    page.wait_for_selector("#live-agents")
    _shot(page, "02-overview")

    # A registered agent appears in the agents table without a reload.
    page.goto(f"{url}/console/agents")
    page.evaluate("window.__sameDocument = true")
    task = f"incident-{secrets.token_hex(4)}"
    launch = broker.launch_token(SCOPE, single_use=False, max_uses=3, ttl=300)
    first = broker.register(SCOPE, launch_token=launch, task_id=task)
    second = broker.register(SCOPE, launch_token=launch, task_id=task)
    bystander = broker.register(SCOPE)
    row = page.wait_for_selector(f'tr[data-agent="{first.agent_id}"]', timeout=15_000)
    assert row.get_attribute("data-state") == "active"
    assert page.evaluate("window.__sameDocument") is True  # the page was not reloaded
    hop = broker.delegate(first.access_token, second.agent_id, ["read:data:7"])
    assert hop.status_code == 200, hop.text
    _shot(page, "03-agents")

    # Its page draws the delegation tree up to the principal.
    page.click(f'a[href$="/agents/{first.agent_id.replace(":", "%3A").replace("/", "%2F")}"]')
    page.wait_for_selector("#tree")
    tree = page.locator("ul.tree").first.inner_text()
    assert "register" in tree and "delegate" in tree and second.agent_id in tree
    assert "Principal: admin" in page.content()
    _shot(page, "04-agent")
    page.locator('ul.tree a[href*="/tokens/"]').nth(1).click()
    page.wait_for_selector("text=Chain above it")
    assert "delegate" in page.content()
    _shot(page, "05-token")
    page.go_back()

    # Revoke its task: the confirmation says what will die, then the agents are revoked.
    page.get_by_role("link", name="Revoke its task").click()
    page.wait_for_selector("#will-die")
    doomed = page.locator("#will-die").inner_text()
    assert first.agent_id in doomed and second.agent_id in doomed
    assert bystander.agent_id not in doomed
    _shot(page, "06-revoke-confirm")
    page.get_by_role("button", name="Revoke task").click()
    page.wait_for_selector("#tree")
    page.goto(f"{url}/console/agents")
    for agent in (first, second):
        page.wait_for_selector(f'tr[data-agent="{agent.agent_id}"][data-state="revoked"]')
    live = page.locator(f'tr[data-agent="{bystander.agent_id}"]').get_attribute("data-state")
    assert live == "active"
    assert not broker.is_valid(first.access_token)
    _shot(page, "07-agents-after-revoke")

    page.goto(f"{url}/console/tasks/{task}")
    assert page.locator("tr[data-state=revoked]").count() == 2
    _shot(page, "08-task")
    for name, path in (
        ("09-launch-tokens", "launch-tokens"),
        ("10-apps", "apps"),
        ("11-revocations", "revocations"),
        ("12-audit", "audit"),
    ):
        page.goto(f"{url}/console/{path}")
        _shot(page, name)
    assert "Audit log intact" in page.locator("#chain-status").inner_text()
    assert violations == []
    context.close()


def test_an_auditor_sees_no_revoke_button_and_cannot_revoke(
    broker: RunningBroker, browser: Any
) -> None:
    name = f"auditor-{secrets.token_hex(3)}"
    made = broker.post(
        "/v1/admin/operators",
        json={"name": name, "role": "auditor"},
        headers=broker.admin_headers(),
    )
    assert made.status_code == 201, made.text
    alive = broker.register(SCOPE)
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, broker.url, made.json()["secret"], operator=name)
    page.goto(f"{broker.url}/console/agents")
    page.wait_for_selector(f'tr[data-agent="{alive.agent_id}"]')
    assert page.locator(".button.danger").count() == 0
    assert "(read only)" in page.content()
    _shot(page, "13-auditor-agents")

    # The server refuses anyway: the confirmation page, and the action with a valid form.
    confirm = page.goto(f"{broker.url}/console/revoke?level=agent&target={alive.agent_id}")
    assert confirm.status == 403
    csrf = page.goto(f"{broker.url}/console/agents") and page.locator(
        "input[name=csrf]"
    ).first.get_attribute("value")
    refused = context.request.post(
        f"{broker.url}/console/revoke",
        form={"csrf": csrf, "level": "agent", "target": alive.agent_id},
        max_redirects=0,
    )
    assert refused.status == 403
    assert broker.is_valid(alive.access_token)
    forged = context.request.post(
        f"{broker.url}/console/revoke",
        form={"csrf": "0" * 64, "level": "agent", "target": alive.agent_id},
        max_redirects=0,
    )
    assert forged.status == 403
    context.close()


def test_the_console_shows_a_role_no_more_than_the_api_does(
    broker: RunningBroker, browser: Any
) -> None:
    """Each page is guarded with the scope of the API route it mirrors: the app registry
    (``GET /v1/admin/apps``, ``admin:launch-tokens:*``) is not the auditor's, so the
    console neither links nor shows it to one; its refusal names an audited denial."""
    made_app = broker.post(
        "/v1/admin/apps",
        json={"name": f"ledger-{secrets.token_hex(3)}", "scopes": SCOPE},
        headers=broker.admin_headers(),
    )
    assert made_app.status_code == 201, made_app.text
    client_id = made_app.json()["client_id"]
    for role in ("auditor", "operator"):
        name = f"{role}-{secrets.token_hex(3)}"
        made = broker.post(
            "/v1/admin/operators",
            json={"name": name, "role": role},
            headers=broker.admin_headers(),
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        signed = broker.post("/v1/operator/auth", json={"name": name, "secret": secret})
        api = broker.get(
            "/v1/admin/apps", headers={"Authorization": f"Bearer {signed.json()['access_token']}"}
        )
        context = browser.new_context()
        page = context.new_page()
        _sign_in(page, broker.url, secret, operator=name)
        links = page.locator("nav[aria-label=Console] a").all_inner_texts()
        shown = page.goto(f"{broker.url}/console/apps")
        html = page.content()
        if role == "operator":
            assert api.status_code == 200 and shown.status == 200
            assert "Apps" in links and client_id in html
        else:
            assert api.status_code == 403 and shown.status == 403
            assert "Apps" not in links and {"Agents", "Audit"} <= set(links)
            assert client_id not in html
            (denial,) = set(re.findall(r"den_[0-9a-f]{16}", html))
            found = broker.get(
                "/v1/audit/events",
                params={"event_type": "scope_violation", "limit": "1000"},
                headers=broker.admin_headers(),
            )
            hits = [e for e in found.json()["events"] if e["detail"].endswith(f"denial={denial}")]
            assert len(hits) == 1 and f"by=operator:{name}" in hits[0]["detail"]
            _shot(page, "14-auditor-apps-refused")
        context.close()


class _LocalProxy:
    """A reverse proxy on this machine in front of ``upstream``, speaking plain HTTP to
    browsers and sending the upstream's own ``Host`` (what nginx's ``proxy_pass`` does by
    default): to the broker every request is a loopback client asking for 127.0.0.1."""

    def __init__(self, upstream: str) -> None:
        import threading

        import httpx
        import uvicorn
        from starlette.requests import Request
        from starlette.responses import Response

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            request = Request(scope, receive)
            headers = [(k, v) for k, v in request.headers.items() if k not in ("host",)]
            async with httpx.AsyncClient(base_url=upstream) as client:
                answer = await client.request(
                    request.method,
                    request.url.path,
                    params=request.query_params,
                    headers=headers,
                    content=await request.body(),
                )
            out = [(k, v) for k, v in answer.headers.multi_items() if k != "content-encoding"]
            response = Response(answer.content, answer.status_code)
            response.raw_headers = [(k.encode(), v.encode()) for k, v in out]
            await response(scope, receive, send)

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def test_the_console_is_refused_for_a_name_beyond_loopback_over_plain_http(
    broker: RunningBroker, browser: Any
) -> None:
    """A proxy on the broker's machine, not in trusted_proxies, relays a browser elsewhere
    over plain HTTP and keeps its ``Host``: every client looks local, but the name asked
    for is not. The sign-in page itself is refused (403, saying why), so no secret is
    typed; from the broker's own machine it is served."""
    port = broker.url.rsplit(":", 1)[1]
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"http://{ALIAS}:{port}/console/login")
    assert answer is not None and answer.status == 403
    assert "Turn TLS on" in page.content()
    assert page.get_by_label("Secret", exact=True).count() == 0
    _shot(page, "15-login-plain-http-name-beyond-loopback")
    page.goto(f"{broker.url}/console/login")
    assert page.get_by_label("Secret", exact=True).is_enabled()
    context.close()


def test_the_sign_in_form_sends_no_secret_from_a_plain_http_page_beyond_loopback(
    broker: RunningBroker, browser: Any
) -> None:
    """The same proxy, rewriting ``Host`` to the broker's own address (nginx's default):
    the sign-in page is served (nothing in its GET names the page), but a secret typed
    into it would cross the network in clear. The page turns its form off."""
    proxy = _LocalProxy(broker.url)
    try:
        context = browser.new_context()
        page = context.new_page()
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
        page.goto(f"http://{ALIAS}:{proxy.port}/console/login")
        warning = page.locator("#clear-text")
        warning.wait_for(state="visible")
        assert "plain HTTP" in warning.inner_text()
        assert page.get_by_label("Secret", exact=True).is_disabled()
        assert page.get_by_role("button", name="Sign in").is_disabled()
        page.get_by_label("Secret", exact=True).press("Enter")  # no form is sent either way
        page.wait_for_timeout(300)
        assert sent == []
        _shot(page, "16-login-plain-http-behind-a-local-proxy")
        context.close()
    finally:
        proxy.stop()


def test_the_sign_in_form_stays_on_over_https_at_a_host_beyond_loopback(
    browser: Any, tmp_path: Path
) -> None:
    """TLS ended at the broker (or at a proxy in front of it) under a public name: the
    page is https, its form stays on."""
    ca = make_ca(tmp_path, "console test CA")
    cert, key = ca.server("127.0.0.1", ALIAS, label="console")
    env = {
        "TASKLEASE_TLS_MODE": "tls",
        "TASKLEASE_TLS_CERT": str(cert),
        "TASKLEASE_TLS_KEY": str(key),
    }
    running = launch_broker(
        tmp_path / "tls-broker", env, tls=ssl.create_default_context(cafile=str(ca.path))
    )
    try:
        port = running.url.rsplit(":", 1)[1]
        context = browser.new_context(ignore_https_errors=True)  # the test's own CA
        page = context.new_page()
        page.goto(f"https://{ALIAS}:{port}/console/login")
        page.get_by_label("Secret", exact=True).wait_for()
        assert page.locator("#clear-text").is_hidden()
        assert page.get_by_label("Secret", exact=True).is_enabled()
        assert page.get_by_role("button", name="Sign in").is_enabled()
        context.close()
    finally:
        stop_broker(running)


# In a table cell, no word up to this long is split across lines (a state, an event id, a
# time, a header); longer ones may wrap, and so may any in a cell of identifiers or free
# text (an agent's SPIFFE ID, a task id, an event's detail), which would otherwise widen
# the page.
_SHORT_WORD = 27
_SPLIT_WORDS = """(limit) => {
  const split = [];
  for (const cell of document.querySelectorAll("th, td")) {
    if (cell.matches("td.long, td.mono:not(.nowrap)")) continue;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g;
      let m;
      while ((m = re.exec(node.data)) !== null) {
        if (m[0].length > limit) continue;
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set(Array.from(range.getClientRects(), (r) => Math.round(r.top)));
        if (lines.size > 1) split.push(m[0]);
      }
    }
  }
  return split;
}"""


def test_the_tables_read_on_a_laptop_screen_without_splitting_short_words(
    broker: RunningBroker, browser: Any
) -> None:
    """docs/console.md: pages read on a 1366x768 screen. A long SPIFFE ID wraps, but a
    header, a state, an event id, a time or an app name is never cut in the middle, and
    no page is wider than the screen; every column has a header that says what it is."""
    long_task = "t" * 120
    launch = broker.launch_token(SCOPE, single_use=False, max_uses=2, ttl=300)
    agent = broker.register(SCOPE, launch_token=launch, task_id=long_task)
    broker.register(SCOPE, launch_token=launch, task_id=long_task)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    _sign_in(page, broker.url, broker.admin_secret)
    quoted = agent.agent_id.replace(":", "%3A").replace("/", "%2F")
    for path in (
        "agents",
        "audit",
        f"agents/{quoted}",
        f"tasks/{long_task}",
        "apps",
        "launch-tokens",
        "revocations",
        "keys",
    ):
        page.goto(f"{broker.url}/console/{path}")
        split = page.evaluate(_SPLIT_WORDS, _SHORT_WORD)
        assert split == [], f"/console/{path} splits {sorted(set(split))[:10]}"
        assert page.locator("th:empty").count() == 0, f"/console/{path}: a header says nothing"
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 1366, f"/console/{path} is {wide} px wide"
    context.close()
