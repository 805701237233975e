"""The transparent audit log on the wire: checkpoints, the log's keys, inclusion and
consistency proofs, and the log key's rotation (docs/audit.md)."""

from __future__ import annotations

import base64
from typing import Annotated

from tasklease.http.wire._base import (
    Body,
    Failure,
    Operation,
    Param,
    Response,
    admin,
    doc,
)

__all__ = [
    "OPERATIONS",
    "TAGS",
    "AuditLogKeys",
    "ConsistencyProof",
    "InclusionProof",
    "LogKeyRotationResponse",
    "b64_hashes",
]

TAGS = {
    "audit log": "The transparent audit log: checkpoints signed by the log key and cosigned "
    "by witnesses, and RFC 9162 proofs that an event is in the log and that the log only "
    "grew.",
}

_Hashes = Annotated[
    list[str],
    doc("Standard base64 (with padding) of each 32-byte SHA-256 hash, in RFC 9162 order."),
]


def b64_hashes(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


class InclusionProof(Response):
    index: Annotated[int, doc("The leaf: an event's `index` (its `seq` - 1).")]
    size: Annotated[int, doc("The tree size the proof is for (a checkpoint's).")]
    proof: _Hashes
    root: Annotated[
        str,
        doc(
            "Base64 root of the tree of `size` leaves, for convenience only: verify against "
            "the root of a checkpoint you trust, never this one."
        ),
    ]


class ConsistencyProof(Response):
    first: Annotated[int, doc("The older tree's size.")]
    second: Annotated[int, doc("The newer tree's size.")]
    proof: _Hashes


class AuditLogKeys(Response):
    origin: Annotated[str, doc("The log's origin: the first line of its checkpoints.")]
    keys: Annotated[
        list[str],
        doc(
            "The log's verifier keys (C2SP vkeys, Ed25519, named by the origin), the active "
            "one first; older ones verify the checkpoints they signed."
        ),
    ]
    witnesses: Annotated[list[str], doc("The configured witnesses' cosignature vkeys.")]
    quorum: Annotated[
        int, doc("How many witness cosignatures make a checkpoint final (0: none needed).")
    ]


class LogKeyRotationResponse(Response):
    key: Annotated[str, doc("The new active log verifier key (vkey).")]
    previous_key: Annotated[str, doc("The vkey that signed until now.")]
    keys: Annotated[list[str], doc("Every published log vkey, the active one first.")]


_READER = admin("admin:audit:*")
_SIZE_FAILURE = Failure(
    "invalid_request",
    "a parameter is missing or not an integer, or the sizes are out of order or larger "
    "than the tree",
)


def _int_param(name: str, what: str) -> Param:
    return Param(name, "query", {"type": "integer", "minimum": 0}, what, True)


OPERATIONS = (
    Operation(
        "GET /v1/audit/checkpoint",
        "getAuditCheckpoint",
        "audit log",
        "The latest final checkpoint",
        "The audit log's latest final checkpoint: a C2SP `tlog-checkpoint` signed note "
        "(origin, tree size, base64 root, then the log key's signature line and the "
        "witnesses' cosignature lines). A checkpoint is made at least every "
        "`audit_checkpoint_events` events or `audit_checkpoint_interval` seconds, and is "
        "final once `audit_witness_quorum` witnesses have cosigned it. Needs an operator's "
        "token with `admin:audit:*`, unless `audit_checkpoint_public` is true.",
        _READER,
        Body(
            "Checkpoint",
            "text/plain; charset=utf-8",
            {"type": "string", "description": "A C2SP signed note."},
        ),
        errors=(Failure("not_found", "no checkpoint has been made final yet"),),
    ),
    Operation(
        "GET /v1/audit/log-keys",
        "getAuditLogKeys",
        "audit log",
        "The log's keys and witnesses",
        "The origin, the log's verifier keys and the witnesses a checkpoint needs, to "
        "verify checkpoints offline (`tasklease.verify`). Keep them from a channel you "
        "trust: a key read from the log itself proves nothing about the log. Same access "
        "as the checkpoint.",
        _READER,
        AuditLogKeys,
    ),
    Operation(
        "GET /v1/audit/proof/inclusion",
        "getAuditInclusionProof",
        "audit log",
        "Prove an event is in the log",
        "The RFC 9162 inclusion proof (section 2.1.3) of the event at `index` in the tree "
        "of `size` events; the leaf is `SHA-256(0x00 || the event's hash as 32 bytes)`.",
        _READER,
        InclusionProof,
        parameters=(
            _int_param("index", "The event's `index` (`seq` - 1)."),
            _int_param("size", "A checkpoint's tree size, above `index`."),
        ),
        errors=(_SIZE_FAILURE,),
    ),
    Operation(
        "GET /v1/audit/proof/consistency",
        "getAuditConsistencyProof",
        "audit log",
        "Prove the log only grew",
        "The RFC 9162 consistency proof (section 2.1.4) from the tree of `first` events to "
        "the tree of `second`: that the newer one keeps the older one's events, unchanged "
        "and in order.",
        _READER,
        ConsistencyProof,
        parameters=(
            _int_param("first", "The older checkpoint's size, above 0."),
            _int_param("second", "The newer checkpoint's size, at least `first`."),
        ),
        errors=(_SIZE_FAILURE,),
    ),
    Operation(
        "POST /v1/admin/audit/log-key/rotate",
        "rotateAuditLogKey",
        "audit log",
        "Rotate the log key",
        "Makes a new Ed25519 log key active; the next checkpoint is signed with it. Older "
        "keys stay published and keep verifying the checkpoints they signed. Give the new "
        "vkey to the witnesses first: they refuse checkpoints by a key they do not know. "
        "Needs `admin:keys:*`.",
        admin("admin:keys:*"),
        LogKeyRotationResponse,
        commits=True,
    ),
)
