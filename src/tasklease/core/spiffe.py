"""SPIFFE IDs for agent instances.

``spiffe://<trust-domain>/agent/<orch_id>/<task_id>/<instance_id>`` following the SPIFFE
ID specification: trust domain ``[a-z0-9.-_]``, path segments ``[A-Za-z0-9.-_]``, no empty,
``.`` or ``..`` segments, at most 2048 bytes in all.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from tasklease.core.errors import InvalidRequest
from tasklease.rules.secretshapes import holds_credential, holds_secret

__all__ = [
    "MAX_SEGMENT_CHARS",
    "AgentId",
    "audience_domain",
    "federation_audience",
    "is_spiffe_id",
    "new_agent_id",
    "parse_agent_id",
    "validate_segment",
    "validate_trust_domain",
]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
MAX_SEGMENT_CHARS = 128  # an orch_id or task_id
_SEGMENT = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_SEGMENT_CHARS}}}")
MAX_ID_LENGTH = 2048
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def validate_trust_domain(td: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(td):
        raise ValueError(
            f"invalid SPIFFE trust domain {td!r}: use lowercase a-z, 0-9, '.', '-', '_'"
        )
    return td


def validate_segment(value: object, *, field: str) -> str:
    """Check one SPIFFE path segment supplied by a caller (``orch_id``, ``task_id``)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"missing required field: {field}")
    if value in (".", "..") or not _SEGMENT.fullmatch(value):
        raise InvalidRequest(
            f"invalid {field}: use 1-{MAX_SEGMENT_CHARS} characters from A-Z a-z 0-9 . - _",
            hint="the value becomes a segment of the agent's SPIFFE ID",
        )
    if holds_credential(value) or holds_secret(value):
        # It would be published in the agent's SPIFFE ID, its tokens and the audit log.
        raise InvalidRequest(
            f"invalid {field}: it holds a token or a secret",
            hint="the value becomes a segment of the agent's SPIFFE ID, seen by everyone",
        )
    return value


@dataclass(frozen=True, slots=True)
class AgentId:
    trust_domain: str
    orch_id: str
    task_id: str
    instance_id: str

    def __str__(self) -> str:
        return (
            f"spiffe://{self.trust_domain}/agent/{self.orch_id}/{self.task_id}/{self.instance_id}"
        )


def new_agent_id(trust_domain: str, orch_id: str, task_id: str) -> AgentId:
    """A fresh identity: 8 random bytes as 16 hex characters for the instance."""
    return AgentId(trust_domain, orch_id, task_id, secrets.token_hex(8))


def parse_agent_id(value: str) -> AgentId | None:
    """Parse an agent SPIFFE ID; ``None`` if it is not one."""
    if not value.startswith("spiffe://") or len(value) > MAX_ID_LENGTH:
        return None
    rest = value[len("spiffe://") :]
    parts = rest.split("/")
    if len(parts) != 5 or parts[1] != "agent":
        return None
    td, _, orch, task, inst = parts
    if not _TRUST_DOMAIN.fullmatch(td):
        return None
    if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in (orch, task, inst)):
        return None
    return AgentId(td, orch, task, inst)


def is_spiffe_id(value: str) -> bool:
    """Whether ``value`` is a SPIFFE ID as the specification writes one, and so as every
    token names it: the scheme and the trust domain in lowercase, path segments of
    ``[A-Za-z0-9.-_]`` (none empty, ``.`` or ``..``), at most 2048 bytes."""
    if not value.startswith("spiffe://") or len(value.encode()) > MAX_ID_LENGTH:
        return False
    td, slash, path = value[len("spiffe://") :].partition("/")
    if not _TRUST_DOMAIN.fullmatch(td):
        return False
    return not slash or all(
        s not in (".", "..") and _PATH_SEGMENT.fullmatch(s) for s in path.split("/")
    )


def federation_audience(trust_domain: str) -> str:
    """The audience a token must name to be exchanged at the broker of ``trust_domain``
    (``spiffe://<trust domain>``)."""
    return f"spiffe://{trust_domain}"


def audience_domain(value: str) -> str | None:
    """The trust domain an audience names as :func:`federation_audience` writes it, or
    None when ``value`` is any other audience."""
    if not value.startswith("spiffe://"):
        return None
    td = value[len("spiffe://") :]
    return td if _TRUST_DOMAIN.fullmatch(td) else None
