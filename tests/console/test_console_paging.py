"""The console's lists as an operator pages through them, in process over the app's ASGI
interface: the agents page reaches agents past its first hundred, the agent and audit
pages open on the latest events (what their captions say they show), a page past the
end says so, and an error page says what went wrong."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from tests.console.console_support import ADMIN_SECRET, CTX, in_process_broker, run, sign_in
from tests.console.test_console_audit import _register

from tasklease.core.broker import Broker
from tasklease.core.records import AuditQuery

AGENTS = 105  # past a page of 100
REVOKED = 105  # events about the first agent, past a page of 100


@pytest.fixture(scope="module")
def broker() -> Broker:
    # Each page below is fetched by a sign-in of its own.
    broker = in_process_broker(admin_auth_burst=1000)
    agents = [_register(broker, f"task-{i}") for i in range(AGENTS)]
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    for _ in range(REVOKED):
        broker.revoke(admin, level="agent", target=agents[0], ctx=CTX)
    return broker


def _signed_in(broker: Broker, *paths: str) -> list[httpx.Response]:
    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        signed = await sign_in(client)
        assert signed.status_code == 303, signed.text
        return [await client.get(path) for path in paths]

    pages: list[httpx.Response] = run(broker, go)
    for page in pages:
        assert page.status_code == 200, page.text
    return pages


def _link(page: httpx.Response, label: str) -> str:
    found = re.search(rf'<a href="([^"]+)">{label}</a>', page.text)
    assert found is not None, f"no {label} link"
    return html.unescape(found.group(1))


def _agent_rows(page: httpx.Response) -> list[str]:
    return re.findall(r'<tr data-agent="([^"]+)"', page.text)


def test_the_agents_page_links_to_the_agents_past_its_first_hundred(broker: Broker) -> None:
    (first,) = _signed_in(broker, "/console/agents")
    shown = _agent_rows(first)
    assert len(shown) == 100
    older = _link(first, "Older")
    (second,) = _signed_in(broker, older)
    rest = _agent_rows(second)
    assert len(rest) == _count(broker) - 100 and not set(rest) & set(shown)
    # The table's own refresh keeps to this page, not the newest one.
    refresh = re.search(r'data-refresh="([^"]+)"', second.text)
    assert refresh is not None and "cursor=" in html.unescape(refresh.group(1))
    (refreshed,) = _signed_in(broker, html.unescape(refresh.group(1)))
    assert _agent_rows(refreshed) == rest
    assert _link(second, "Newest").endswith("/console/agents")


def _count(broker: Broker) -> int:
    return len(broker.inventory.agents(limit=1000).items)


def test_the_agents_page_leads_past_the_rows_its_refresh_pushed_off(broker: Broker) -> None:
    """The table refreshes itself; agents registered since the page was drawn push its
    last rows off: its link to the next page, drawn with the rows, leads to those."""
    (first,) = _signed_in(broker, "/console/agents")
    last = _agent_rows(first)[-1]
    _register(broker, "task-late")
    (refreshed,) = _signed_in(broker, "/console/live/agents")
    assert last not in _agent_rows(refreshed)  # pushed off by the newcomer
    (older,) = _signed_in(broker, _link(refreshed, "Older"))
    assert _agent_rows(older)[0] == last


def test_the_agents_page_pages_within_its_filter(broker: Broker) -> None:
    (first,) = _signed_in(broker, "/console/agents?state=active")
    older = _link(first, "Older")
    assert "state=active" in older
    (second,) = _signed_in(broker, older)
    assert 'data-state="revoked"' not in second.text


def _event_ids(page: httpx.Response) -> list[str]:
    return re.findall(r'<td class="mono[^"]*">(evt-\d{6})', page.text)


def test_the_agent_page_lists_its_latest_events(broker: Broker) -> None:
    agent_id = broker.inventory.agents(limit=1000).items[-1].agent.agent_id
    events, total = broker.audit_events(AuditQuery(agent_id=agent_id, limit=1000))
    assert total > 100
    (page,) = _signed_in(broker, f"/console/agents/{agent_id}")
    shown = _event_ids(page)
    assert shown == [e.id for e in events[-100:]]
    assert f"{total} events; the latest 100 shown" in page.text


def _offset(link: str) -> int:
    found = re.search(r"offset=(\d+)", link)
    assert found is not None, link
    return int(found.group(1))


def test_the_audit_page_opens_on_the_latest_events_and_pages_to_the_first(
    broker: Broker,
) -> None:
    (latest,) = _signed_in(broker, "/console/audit")
    events, total = broker.audit_events(AuditQuery(limit=100_000))
    assert _event_ids(latest) == [e.id for e in events[-100:]]  # its own sign-in the last
    assert "Later" not in latest.text and "the latest)" in latest.text
    earlier = _link(latest, "Earlier")
    assert _offset(earlier) == total - 200
    (page,) = _signed_in(broker, earlier)
    assert _event_ids(page) == [e.id for e in events[total - 200 : total - 100]]
    (oldest,) = _signed_in(broker, _link(latest, "Oldest"))
    assert _event_ids(oldest) == [e.id for e in events[:100]]
    assert "Earlier" not in oldest.text
    assert _link(oldest, "Latest").endswith("/console/audit")
    # Past the end: nothing shown, and a way back to the last events.
    (beyond,) = _signed_in(broker, f"/console/audit?offset={total + 500}")
    assert _event_ids(beyond) == [] and "none at this offset" in beyond.text
    assert _offset(_link(beyond, "Earlier")) >= total - 100


def test_the_audit_page_keeps_its_filter_across_pages(broker: Broker) -> None:
    (latest,) = _signed_in(broker, "/console/audit?event_type=token_revoked")
    (earlier,) = _signed_in(broker, _link(latest, "Earlier"))
    assert "event_type=token_revoked" in _link(latest, "Earlier")
    types = re.findall(r"</td><td>([a-z_]+)</td><td>", earlier.text)
    assert types and set(types) == {"token_revoked"}


def test_a_page_that_is_not_there_says_so_in_a_page(broker: Broker) -> None:
    """A mistyped or stale link under the console: a page saying what is wrong (not the
    API's problem body, nor "Refused" for what nobody refused)."""

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        signed = await sign_in(client)
        assert signed.status_code == 303, signed.text
        return [
            await client.get(path)
            for path in (
                "/console/no-such-page",
                "/console/agents/spiffe://tasklease.local/agent/o/t/none",
                "/console/agents?cursor=not-a-cursor",
            )
        ]

    unknown, missing, malformed = run(broker, go)
    for page, status, heading in (
        (unknown, 404, "Not found"),
        (missing, 404, "Not found"),
        (malformed, 400, "Not understood"),
    ):
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert f"<h1>{heading}</h1>" in page.text and f"<title>{heading} ·" in page.text


def test_the_overview_says_when_there_are_more_than_it_counts() -> None:
    """The overview counts up to 500 of each; past that it says "500+", not "500"."""
    broker = in_process_broker()
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    for _ in range(501):
        broker.create_launch_token(
            admin,
            agent_name="many",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=600,
            ctx=CTX,
        )
    (page,) = _signed_in(broker, "/console/")
    assert re.search(
        r'<div class="value">500\+</div><div class="label"><a href="[^"]+/launch-tokens"', page.text
    )


def test_a_page_past_the_last_says_so_and_leads_back_to_the_newest(broker: Broker) -> None:
    """A cursor past every entry (a bookmark kept while entries were pruned, or one from
    another list): the page says there are no older ones, not that there are none, and
    links back to the newest."""
    cursor = broker.inventory.agents(limit=1).next_cursor  # the agents list's
    assert cursor
    tokens, revocations = _signed_in(
        broker,
        f"/console/launch-tokens?cursor={cursor}",
        f"/console/revocations?level=task&cursor={cursor}",
    )
    assert "No older ones outstanding." in tokens.text
    assert _link(tokens, "Newest").endswith("/console/launch-tokens")
    assert "No older entries at this level." in revocations.text
    assert _link(revocations, "Newest").endswith("/console/revocations?level=task")


def _title(page: httpx.Response) -> str:
    found = re.search(r"<title>(.*?)</title>", page.text)
    assert found is not None, page.text[:500]
    return html.unescape(found.group(1))


def test_an_agents_a_tasks_and_a_tokens_page_title_names_which(broker: Broker) -> None:
    """Browser tabs and history tell these pages apart: each title names its agent (its
    task and the start of its instance), task or token, not only "Agent"."""
    views = broker.inventory.agents(limit=1000).items[:2]
    ids = [v.agent.agent_id for v in views]
    tasks = [v.agent.task_id for v in views]
    first, second, task = _signed_in(
        broker,
        f"/console/agents/{ids[0]}",
        f"/console/agents/{ids[1]}",
        f"/console/tasks/{tasks[0]}",
    )
    titles = [_title(first), _title(second)]
    for agent_id, task_id, title in zip(ids, tasks, titles, strict=True):
        instance = agent_id.rsplit("/", 1)[1]
        assert title == f"Agent {task_id}/{instance[:8]} · tasklease console", title
    assert _title(task) == f"Task {tasks[0]} · tasklease console"
    jti = re.search(r'href="/console/tokens/([^"]+)"', first.text)
    assert jti is not None
    (token,) = _signed_in(broker, f"/console/tokens/{jti.group(1)}")
    assert _title(token) == f"Token {jti.group(1)[:12]} · tasklease console"


@pytest.mark.parametrize(
    ("template", "view", "title"),
    [
        (
            "agent.html",
            {"agent": {"agent_id": "<b>&x" + "y" * 80}},
            "Agent &lt;b&gt;&amp;x" + "y" * 42 + "…",
        ),
        ("task.html", None, "Task &lt;i&gt;"),
        ("token.html", {"token": {"jti": "<s>" + "0" * 20}}, "Token &lt;s&gt;000000000"),
    ],
    ids=["agent", "task", "token"],
)
def test_a_page_title_is_escaped_and_shortened(
    template: str, view: dict[str, object] | None, title: str
) -> None:
    """An id that is no SPIFFE ID (say, from another broker's records) is shortened, and
    escaped as the rest of the page is."""
    from tasklease.http.console import _templates

    page = _templates().get_template(template)
    context = {"view": view, "task": {"task_id": "<i>"}}
    assert "".join(page.blocks["title"](page.new_context(context))) == title
