"""An app update that names an empty scope ceiling empties it.

``PUT /v1/admin/apps/{app_id}`` takes ``scopes``, "a new scope ceiling", and
``authorization_details``, of which ``[]`` removes the grants. ``scopes: []`` was read as
"not given": an operator moving an app from scopes to structured grants
(``{"scopes": [], "authorization_details": [...]}``) was answered 200 and the app kept its
old scopes, and went on making launch tokens, and so agents, with them.

Would fail if: ``scopes: []`` in an app update were taken for an absent field.
"""

from __future__ import annotations

from e2e_support import RunningBroker

GRANT = {"type": "resource_access", "actions": ["read"], "locations": ["https://api.example/o"]}


def _launch(broker: RunningBroker, token: str, **body: object) -> int:
    answer = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "runner", **body},
        headers={"Authorization": f"Bearer {token}"},
    )
    return answer.status_code


def test_an_empty_scope_ceiling_leaves_the_app_its_grants_only(broker: RunningBroker) -> None:
    made = broker.post(
        "/v1/admin/apps",
        json={"name": "migrating", "scopes": ["write:orders:*"], "authorization_details": [GRANT]},
        headers=broker.admin_headers(),
    )
    assert made.status_code == 201, made.text
    app = made.json()
    token = broker.app_token(app)
    assert _launch(broker, token, allowed_scope=["write:orders:1"]) == 201

    updated = broker.client.put(
        f"/v1/admin/apps/{app['app_id']}",
        json={"scopes": [], "authorization_details": [GRANT]},
        headers=broker.admin_headers(),
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["scopes"] == []
    assert updated.json()["authorization_details"] == [GRANT]

    # The app launches within its grants, and no longer with the scopes it lost.
    refused = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "runner", "allowed_scope": ["write:orders:1"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["denial_id"]
    assert _launch(broker, token, authorization_details=[GRANT]) == 201

    # Alone, it empties the scope ceiling as well.
    only = broker.client.put(
        f"/v1/admin/apps/{app['app_id']}", json={"scopes": []}, headers=broker.admin_headers()
    )
    assert only.status_code == 200, only.text
    assert only.json()["scopes"] == []
