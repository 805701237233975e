"""An attestor's settings of the wrong shape are a 400 naming the field, never a 500.

Would fail if: the ``oidc`` attestor looked its ``algorithms`` up among the known ones
before checking each is a string, so that a list or an object there (unhashable) made
the operator's request a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from http_support import Deployment, deploy


@pytest.fixture
def broker() -> Iterator[Deployment]:
    deployment = deploy()
    yield deployment
    deployment.stop()


@pytest.mark.parametrize("algorithms", [[["RS256"]], ["RS256", {"alg": "ES256"}], [None], "RS256"])
def test_oidc_algorithms_that_are_not_names_are_refused(
    broker: Deployment, algorithms: Any
) -> None:
    settings = {"issuer": "https://token.actions.githubusercontent.com", "algorithms": algorithms}
    answer = broker.client.post(
        "/v1/admin/attestors",
        json={
            "name": "github",
            "type": "oidc",
            "settings": settings,
            "policy": [{"match": {}, "scope": ["deploy:staging:*"]}],
        },
        headers=broker.admin_headers(),
    )
    assert answer.status_code == 400, answer.text
    assert "algorithms" in answer.json()["detail"]
