"""Workload evidence for registration: where an agent finds it on its platform.

* Kubernetes: a projected service-account token whose audience is the broker's issuer,
  mounted by the kubelet (``serviceAccountToken`` volume source) at
  :data:`KUBERNETES_TOKEN_PATH` unless the pod spec says otherwise. The kubelet rotates
  it; it is read fresh at every registration.
* GitHub Actions: the runner's ID token endpoint (``ACTIONS_ID_TOKEN_REQUEST_URL`` with
  ``&audience=``, bearer ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``; the job needs
  ``permissions: id-token: write``), asked for the broker's issuer as the audience.
* Any OIDC or SPIFFE token the agent already holds is passed as is.

Evidence is a bearer credential for its short life: never log it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tasklease.bounds import json_document
from tasklease.client._errors import InvalidRequest, TaskleaseError
from tasklease.client._flows import Flow

__all__ = [
    "KUBERNETES_TOKEN_PATH",
    "attestation",
    "github_actions_token_flow",
    "kubernetes_token",
]

KUBERNETES_TOKEN_PATH = "/var/run/secrets/tasklease/token"  # noqa: S105 - a path
_MAX_TOKEN = 16384


def attestation(kind: str, evidence: str, attestor: str | None = None) -> dict[str, str]:
    """The ``attestation`` member of a registration."""
    if not evidence or not isinstance(evidence, str):
        raise InvalidRequest("the workload evidence is empty")
    out = {"type": kind, "evidence": evidence.strip()}
    if attestor:
        out["attestor"] = attestor
    return out


def kubernetes_token(path: str | os.PathLike[str] = KUBERNETES_TOKEN_PATH) -> str:
    """The projected service-account token at ``path``, read now (the kubelet rotates it)."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(_MAX_TOKEN + 1)
    except OSError as exc:
        raise InvalidRequest(
            f"no service-account token at {path}: {exc.strerror}",
        ) from None
    if len(raw) > _MAX_TOKEN:
        raise InvalidRequest(f"the file at {path} is larger than a token")
    return raw.decode("ascii", "replace").strip()


def github_actions_token_flow(audience: str, env: Mapping[str, str] | None = None) -> Flow[str]:
    """A flow that asks the GitHub Actions runner for an OIDC token whose ``aud`` is
    ``audience``; its value is the token. ``env`` defaults to the process environment."""
    variables = os.environ if env is None else env
    url = variables.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    bearer = variables.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        raise InvalidRequest(
            "not in a GitHub Actions job with an ID token: the job needs "
            "`permissions: id-token: write`"
        )
    separator = "&" if "?" in url else "?"
    request = httpx.Request(
        "GET",
        f"{url}{separator}{urlencode({'audience': audience})}",
        headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
    )
    response: httpx.Response = yield request
    if response.status_code != 200:
        raise TaskleaseError(
            f"the runner's ID token endpoint answered {response.status_code}",
            code="bad_response",
            status=response.status_code,
        )
    try:
        value = json_document(response.content).get("value")
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise TaskleaseError("the runner's answer holds no token", code="bad_response")
    return value
