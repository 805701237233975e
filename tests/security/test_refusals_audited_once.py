# Would fail if: any route answered a 401 or 403 without a denial_id, or a refusal's
# denial_id led to no audit event or to more than one (the project's rule: every
# refusal carries a denial_id that leads to exactly one audit event).
"""Every documented route, called by callers it must refuse (no credential, a malformed
token, an agent's, an app's and an auditor's token) and by the admin on names that do not
exist: each 401 and 403 carries a ``denial_id``, and each ``denial_id`` an answer carries
names exactly one audit event."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tasklease.client import Agent
from tasklease.client.testing import BrokerForTests
from tasklease.http.openapi import openapi_document

SCOPE = ["read:data:*"]
_METHODS = ("get", "put", "post", "delete", "patch")
_DENIAL = re.compile(r"den_[0-9a-f]{16}")


def _operations() -> list[tuple[str, str]]:
    doc = openapi_document()
    return [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in _METHODS
        if method in item
    ]


# Routes a token may call to end itself: they get credentials of their own, so that the
# other routes meet live ones whatever order the cases run in.
_SELF_ENDING = {("POST", "/v1/token/release"), ("POST", "/v1/token/revoke")}


class _Callers:
    """The broker and the credentials it must refuse somewhere."""

    def __init__(self, broker: BrokerForTests, agent: Agent) -> None:
        self.broker = broker
        self.agent = agent
        self._made = 0
        self.headers = self.fresh(agent)

    def fresh(self, agent: Agent) -> dict[str, dict[str, str]]:
        """Each kind of caller, with new app and auditor tokens and ``agent``'s."""
        self._made += 1
        admin = self.broker.admin()
        made = admin.register_app(f"refusal-sweep-{self._made}", SCOPE)
        name = f"sweep-auditor-{self._made}"
        auditor = admin.add_operator(name, "auditor")
        with httpx.Client(base_url=self.broker.url, timeout=10) as http:
            app = http.post(
                "/v1/app/auth",
                json={"client_id": made["client_id"], "client_secret": made["client_secret"]},
            ).json()["access_token"]
            operator = http.post(
                "/v1/operator/auth", json={"name": name, "secret": auditor["secret"]}
            ).json()["access_token"]
            signed_in = http.post("/v1/admin/auth", json={"secret": self.broker.admin_secret})
            root = signed_in.json()["access_token"]
        return {
            "anonymous": {},
            "malformed": {"authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
            "agent": {"authorization": f"Bearer {agent.token}"},
            "app": {"authorization": f"Bearer {app}"},
            "auditor": {"authorization": f"Bearer {operator}"},
            # The admin itself, on names that do not exist: a refused change is audited too.
            "admin": {"authorization": f"Bearer {root}"},
        }


@pytest.fixture(scope="module")
def callers() -> Iterator[_Callers]:
    with (
        BrokerForTests(refusal_burst=100_000, refusal_rate=10_000.0) as broker,
        broker.agent(SCOPE, task_id="refusal-sweep") as agent,
    ):
        yield _Callers(broker, agent)


def _events_naming(broker: BrokerForTests, denial_id: str) -> list[str]:
    assert broker.broker is not None
    return [
        f"{e.id} {e.event_type}"
        for e in broker.broker.store.iter_audit()
        if e.detail.endswith(f"denial={denial_id}")
    ]


def _call(
    http: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    with http.stream(method, path, headers=headers, **body) as response:  # type: ignore[arg-type]
        if response.status_code < 400:
            return response.status_code, {}  # a stream that is served: not a refusal
        raw = response.read()
    try:
        parsed = httpx.Response(200, content=raw).json()
    except ValueError:
        parsed = {}
    return response.status_code, parsed if isinstance(parsed, dict) else {}


@pytest.mark.parametrize(("method", "template"), _operations())
def test_every_refusal_names_one_audit_event(callers: _Callers, method: str, template: str) -> None:
    path = re.sub(r"\{[^}]+\}", "nothing-here", template)
    problems: list[str] = []
    kinds = callers.headers
    if (method, template) in _SELF_ENDING:
        with callers.broker.agent(SCOPE, task_id="refusal-sweep-own") as own:
            kinds = callers.fresh(own)
            _sweep(callers, method, path, kinds, problems)
    else:
        _sweep(callers, method, path, kinds, problems)
    assert not problems, f"{method} {template}: " + "; ".join(problems)


def _sweep(
    callers: _Callers,
    method: str,
    path: str,
    kinds: dict[str, dict[str, str]],
    problems: list[str],
) -> None:
    with httpx.Client(base_url=callers.broker.url, timeout=10) as http:
        for who, headers in kinds.items():
            status, body = _call(http, method, path, headers)
            denial = body.get("denial_id")
            if status in (401, 403) and not denial:
                problems.append(f"{who}: {status} without a denial_id: {body}")
                continue
            if not denial:
                continue
            if not (isinstance(denial, str) and _DENIAL.fullmatch(denial)):
                problems.append(f"{who}: {status} with a malformed denial_id {denial!r}")
                continue
            found = _events_naming(callers.broker, denial)
            if len(found) != 1:
                problems.append(f"{who}: {status} {denial} names {len(found)} events: {found}")
