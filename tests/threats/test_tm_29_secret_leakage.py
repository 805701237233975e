# Would fail if: the audit sanitizer let a detail through unchanged (the delegate name
# below carries a live token into audited fields), a revocation target holding a token
# were accepted at any level (it would be stored and published), or the store kept a
# launch token, a client secret or a by-reference token instead of its hash.
"""TM-29 — secrets leaking into the audit log, the service log, the database or error
answers, where readers of logs and backups (or a log pipeline) would pick up usable
credentials or personal data.

After a full credential history, including mistakes that paste tokens where an
identifier belongs and failed logins, none of the admin secret, client secrets, launch
tokens, access tokens (not even their signatures), by-reference tokens or failed-login
guesses appears in the audit events, the broker's log, the revocation feed, the database
files, or any problem body; e-mail addresses appear only masked in the audit log.

A revocation target that holds a token is refused (400) at every level, before anything
is stored: otherwise it would be kept verbatim in the database and published in the
revocation feed that every app can read.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import audit_events, bearer

pytestmark = pytest.mark.slow

EMAIL = "alice.secret@example.com"


@pytest.fixture(scope="module")
def history(broker: RunningBroker) -> dict[str, Any]:
    """A full history; returns the secrets it handled and the problem bodies it got."""
    secrets: list[str] = [broker.admin_secret, broker.admin_token()]
    problems: list[str] = []

    def failed(resp: Any) -> None:
        assert resp.status_code >= 400, resp.text
        problems.append(resp.text)

    guess = "wrong-admin-secret-" + "g" * 12
    failed(broker.post("/v1/admin/auth", json={"secret": guess}))
    secrets.append(guess)

    app = broker.create_app(["read:tickets:*"])
    app_token = broker.app_token(app)
    secrets += [app["client_secret"], app_token]
    wrong = "not-" + app["client_secret"]
    failed(
        broker.post("/v1/app/auth", json={"client_id": app["client_id"], "client_secret": wrong})
    )
    failed(
        broker.post("/v1/app/auth", json={"client_id": app["client_secret"], "client_secret": "x"})
    )
    secrets.append(wrong)

    admin_launch = broker.launch_token(
        ["read:tickets:*"], principal=f"user:{EMAIL}", single_use=False
    )
    app_launch = broker.launch_token(
        ["read:tickets:1"], bearer=app_token, route="/v1/app/launch-tokens"
    )
    secrets += [admin_launch, app_launch]

    first = broker.register(["read:tickets:*"], launch_token=admin_launch)
    second = broker.register(["read:tickets:1"], launch_token=app_launch)
    renewed = broker.post("/v1/token/renew", headers=first.bearer).json()["access_token"]
    delegated = broker.delegate(renewed, second.agent_id, ["read:tickets:1"]).json()["access_token"]
    wide = [f"read:tickets:{'w' * 90}{i:02d}" for i in range(50)]
    by_reference = broker.register(wide, launch_token=broker.launch_token(wide)).access_token
    assert by_reference.startswith("tlr_")
    secrets += [first.access_token, second.access_token, renewed, delegated, by_reference]

    # Mistakes that put whole credentials where identifiers belong.
    for level in ("token", "agent", "task", "chain"):
        pasted = broker.revoke(level, renewed)
        assert pasted.status_code == 400, pasted.text
        problems.append(pasted.text)
    failed(broker.delegate(renewed, delegated, ["read:tickets:1"]))
    failed(broker.post("/v1/token/renew", headers=bearer(first.access_token)))  # renewed: dead
    failed(broker.post("/v1/token/renew", headers=bearer(renewed + "x")))
    failed(
        broker.post("/v1/token/renew", headers={"Authorization": f"Basic {app['client_secret']}"})
    )
    failed(broker.post("/v1/token/renew", headers=bearer(admin_launch)))
    failed(broker.post("/v1/register", json={"launch_token": admin_launch}))
    failed(
        broker.post(
            "/v1/revoke",
            json={"level": "token", "target": by_reference},
            headers=broker.admin_headers(),
        )
    )
    broker.post("/v1/token/validate", json={"token": delegated})
    broker.post("/v1/introspect", json={"token": by_reference}, headers=bearer(app_token))
    broker.post("/v1/token/release", headers=bearer(delegated))
    broker.get("/v1/health", headers={"X-Request-ID": app["client_secret"]})
    # The same credentials behind a prefix, glued to other text or in capitals.
    for request_id in (f"req-{app['client_secret']}", f"x.{by_reference}"):
        echoed = broker.get("/v1/health", headers={"X-Request-ID": request_id})
        assert echoed.headers["x-request-id"] != request_id
        failed(
            broker.post(
                "/v1/app/auth",
                json={"client_id": app["client_id"], "client_secret": "x"},
                headers={"X-Request-ID": request_id},
            )
        )
    failed(broker.delegate(renewed, by_reference, ["read:tickets:1"]))
    glued = broker.launch_token(["read:tickets:1"], single_use=False)
    secrets += [glued.upper()]
    for task_id in (by_reference, f"task_{glued.upper()}", f"t-{app['client_secret']}"):
        body, _ = broker.register_body(glued, ["read:tickets:1"], task_id=task_id)
        refused = broker.post("/v1/register", json=body)
        assert refused.status_code == 400, refused.text
        assert "holds a token or a secret" in refused.text
        problems.append(refused.text)
    return {
        "secrets": secrets,
        "tokens": [s for s in secrets if s.count(".") == 2],
        "problems": problems,
    }


def _leaks(text: str, history: dict[str, Any]) -> list[str]:
    """The secrets of ``history`` found in ``text`` (their first characters)."""
    found = [s[:12] for s in history["secrets"] if s in text]
    found += [t[:12] for t in history["tokens"] if t.rsplit(".", 1)[1] in text]
    return found


def test_the_audit_log_holds_no_secret(broker: RunningBroker, history: dict[str, Any]) -> None:
    events = audit_events(broker)
    assert len(events) > 20
    text = repr(events)
    assert _leaks(text, history) == []
    assert EMAIL not in text
    assert "a***@example.com" in text  # the principal is there, masked


def test_the_broker_log_holds_no_secret(broker: RunningBroker, history: dict[str, Any]) -> None:
    log = broker.log()
    assert _leaks(log, history) == []
    assert EMAIL not in log


def test_the_revocation_feed_holds_no_secret(
    broker: RunningBroker, history: dict[str, Any]
) -> None:
    feed = broker.get("/v1/revocations", headers=broker.admin_headers())
    assert feed.status_code == 200, feed.text
    assert feed.json()["revocations"]
    assert _leaks(feed.text, history) == []


def test_the_database_files_hold_no_secret(broker: RunningBroker, history: dict[str, Any]) -> None:
    files = [p for p in broker.data_dir.glob("tasklease.db*") if p.is_file()]
    assert files
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert _leaks(text, history) == [], path.name


def test_problem_answers_echo_no_secret(broker: RunningBroker, history: dict[str, Any]) -> None:
    assert history["problems"]
    for body in history["problems"]:
        assert _leaks(body, history) == [], body


def test_tokens_carry_no_secret_either(broker: RunningBroker, history: dict[str, Any]) -> None:
    # A token travels to resource servers: it names its principal but no launch token or secret.
    for token in history["tokens"]:
        claims = repr(jwt_parts(token))
        assert [s for s in history["secrets"] if s in claims and s not in history["tokens"]] == []
