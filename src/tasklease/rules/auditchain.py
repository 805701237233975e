"""The audit log's event hash and Merkle leaf, as any verifier recomputes them.

Hash chain, format ``v1`` (events written before lineage was recorded)::

    hash = SHA-256( "tasklease-audit-v1\\n" || prev_hash || "\\n" || canonical(v1 fields) )

format ``v2`` (every event since)::

    hash = SHA-256( "tasklease-audit-v2\\n" || prev_hash || "\\n" || canonical(v2 fields) )

``prev_hash`` is the previous event's hash as 64 lowercase hex characters (64 zeros for
the first event); ``canonical`` is the compact UTF-8 JSON array of the fields in the order
of :data:`V1_FIELDS` or :data:`V2_FIELDS` (``json.dumps(..., separators=(",", ":"),
ensure_ascii=False)``). v2 adds the event's lineage: its tenant, app, human principal
(as its pseudonym, :func:`principal_ref`) and delegation chain root. A JSON array cannot
be re-split the way a delimiter-joined string can, so no two events share an encoding,
and the prefix keeps the two formats apart.

Merkle leaf (RFC 9162, :mod:`tasklease.rules.merkle`): the leaf data of an event is its
hash as 32 raw bytes, so its leaf hash is ``SHA-256(0x00 || hash)``, and leaf ``i`` of a
tenant's tree is its event ``seq = i + 1``.

Standard library only: the broker writes the same bytes with a faster encoder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from tasklease.rules.merkle import leaf_hash

__all__ = [
    "FORMATS",
    "GENESIS_HASH",
    "V1_FIELDS",
    "V2_FIELDS",
    "AuditFormatError",
    "canonical",
    "event_hash",
    "event_leaf",
    "prefix",
    "principal_ref",
    "uncovered_lineage",
]

GENESIS_HASH = "0" * 64

V1_FIELDS = (
    "seq",
    "timestamp",
    "event_type",
    "agent_id",
    "task_id",
    "orch_id",
    "detail",
    "resource",
    "outcome",
    "deleg_depth",
    "deleg_chain_hash",
    "request_id",
)
V2_FIELDS = (*V1_FIELDS, "tenant", "app_id", "principal_ref", "chain_root")
FORMATS = {1: V1_FIELDS, 2: V2_FIELDS}
_V2_LINEAGE = ("app_id", "principal_ref", "chain_root")  # the tenant is the chain's own
_INTEGERS = frozenset({"seq", "deleg_depth"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditFormatError(ValueError):
    """An event that is not in a known format (a missing or mistyped field)."""


def prefix(version: int) -> bytes:
    """The domain separator that starts the hashed bytes of a ``version`` event."""
    if version not in FORMATS:
        raise AuditFormatError(f"unknown audit event format {version}")
    return f"tasklease-audit-v{version}\n".encode("ascii")


def uncovered_lineage(version: int, event: Mapping[str, Any]) -> str | None:
    """The lineage field (app, principal, chain root) an event of format ``version``
    carries that its hash does not cover, or ``None``. A v1 event was written before
    lineage was recorded, so it has none: one that shows some was edited, and its hash
    could not tell."""
    if version != 1:
        return None
    return next((name for name in _V2_LINEAGE if event.get(name)), None)


def canonical(event: Mapping[str, Any], version: int) -> bytes:
    """The canonical JSON array of ``event``'s fields in format ``version``.

    Raises:
        AuditFormatError: an unknown format, a missing or mistyped field, or lineage on
            a v1 event (:func:`uncovered_lineage`).
    """
    if version not in FORMATS:
        raise AuditFormatError(f"unknown audit event format {version}")
    uncovered = uncovered_lineage(version, event)
    if uncovered is not None:
        raise AuditFormatError(f"a format v1 event carries {uncovered}, which its hash omits")
    values: list[object] = []
    for name in FORMATS[version]:
        value = event.get(name)
        expected = int if name in _INTEGERS else str
        if type(value) is not expected:  # bool is not an int here
            raise AuditFormatError(f"audit event field {name} is not a {expected.__name__}")
        values.append(value)
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(event: Mapping[str, Any]) -> str:
    """The chain hash of ``event`` (a mapping with its fields, ``prev_hash`` and
    ``version``; 1 when absent), as 64 lowercase hex characters."""
    version = event.get("version", 1)
    prev_hash = event.get("prev_hash")
    if type(version) is not int:
        raise AuditFormatError("audit event field version is not an int")
    if not isinstance(prev_hash, str) or _HEX64.fullmatch(prev_hash) is None:
        raise AuditFormatError("audit event field prev_hash is not 64 lowercase hex characters")
    h = hashlib.sha256(prefix(version))
    h.update(prev_hash.encode("ascii"))
    h.update(b"\n")
    h.update(canonical(event, version))
    return h.hexdigest()


def event_leaf(hash_hex: str) -> bytes:
    """The Merkle leaf hash of the event whose chain hash is ``hash_hex``."""
    if _HEX64.fullmatch(hash_hex) is None:
        raise AuditFormatError("an event hash is 64 lowercase hex characters")
    return leaf_hash(bytes.fromhex(hash_hex))


def principal_ref(principal: str) -> str:
    """A stable pseudonym of a principal for the audit log (16 hex characters).

    The audit sanitizer masks e-mail addresses (``a***@example.com``), which many
    principals collide on; this SHA-256 prefix tells them apart, and an auditor who
    knows a principal can recompute it to find that principal's work.
    """
    digest = hashlib.sha256(b"tasklease-principal-v1\n" + principal.encode("utf-8"))
    return digest.hexdigest()[:16]
