"""Offline verification of the broker's transparent audit log (docs/audit.md).

Nothing here talks to the broker: give it a checkpoint, the log's verifier keys (from a
channel you trust, never from the log itself), events and proofs, and it says whether
they hold together:

* :func:`verify_checkpoint`: the note is signed by one of the log's keys (and, if asked,
  cosigned by ``quorum`` of the given witnesses);
* :func:`verify_event_inclusion`: the event's hash is what its fields say (format v1 or
  v2), and the proof leads from its leaf to the checkpoint's root;
* :func:`verify_log_consistency`: the newer checkpoint's tree keeps the older one's
  events, unchanged and in order: a log whose tail was rewritten fails here (a *fork*);
* :func:`verify_proof_bundle`: what ``tasklease audit prove --output`` writes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tasklease.rules.auditchain import AuditFormatError, event_hash, event_leaf
from tasklease.rules.merkle import ProofError, verify_consistency, verify_inclusion
from tasklease.rules.note import (
    Checkpoint,
    NoteError,
    VerifierKey,
    parse_note,
    verify_checkpoint_note,
)
from tasklease.rules.witness import cosigned_by
from tasklease.verify._errors import VerificationError

__all__ = [
    "AuditProofError",
    "Checkpoint",
    "verify_checkpoint",
    "verify_event_inclusion",
    "verify_log_consistency",
    "verify_proof_bundle",
]


class AuditProofError(VerificationError):
    """A checkpoint, event or proof that does not show what it claims."""

    code = "audit_proof_failed"
    message = "the audit log proof does not verify"


def _keys(keys: Iterable[str | VerifierKey]) -> list[VerifierKey]:
    try:
        return [k if isinstance(k, VerifierKey) else VerifierKey.parse(k) for k in keys]
    except NoteError as exc:
        raise AuditProofError(f"a verifier key is malformed: {exc}") from None


def _hashes(items: Sequence[str | bytes]) -> list[bytes]:
    # A proof comes from an answer or a file: anything but a list of hashes is refused as
    # one that does not verify, never a TypeError.
    if not isinstance(items, (list, tuple)):
        raise AuditProofError("a proof is a list of hashes")
    out: list[bytes] = []
    for item in items:
        if isinstance(item, bytes):
            out.append(item)
            continue
        try:
            out.append(base64.b64decode(item.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError, AttributeError):
            raise AuditProofError("a proof hash is not base64") from None
    return out


def verify_checkpoint(
    note: str | bytes,
    log_keys: Iterable[str | VerifierKey],
    *,
    witnesses: Iterable[str | VerifierKey] = (),
    quorum: int = 0,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint in ``note``, once its signature by one of ``log_keys`` verifies
    (and ``quorum`` of ``witnesses`` cosigned it; and its origin is ``origin``, if given).

    The signing key's name must be the checkpoint's origin (C2SP ``tlog-checkpoint``, as
    the broker signs and witnesses check): a key of another log does not vouch for it.

    Raises:
        AuditProofError: it is malformed, unsigned by the log (or signed under a key name
            other than its origin), short of cosignatures, or of another log.
    """
    try:
        parsed = parse_note(note)
        checkpoint = verify_checkpoint_note(parsed, _keys(log_keys))
    except NoteError as exc:
        raise AuditProofError(f"checkpoint: {exc}") from None
    if origin is not None and checkpoint.origin != origin:
        raise AuditProofError(f"checkpoint of {checkpoint.origin}, not of {origin}")
    if quorum:
        cosigned = cosigned_by(parsed, _keys(witnesses))
        if len(cosigned) < quorum:
            raise AuditProofError(
                f"checkpoint cosigned by {len(cosigned)} of the witnesses, {quorum} needed"
            )
    return checkpoint


def verify_event_inclusion(
    event: Mapping[str, Any], proof: Sequence[str | bytes], checkpoint: Checkpoint
) -> int:
    """Check that ``event`` (as the broker's API returns it) is in the log ``checkpoint``
    describes; return its leaf index.

    The event's hash is recomputed from its fields first: an event with any field
    changed does not reach the root.

    Raises:
        AuditProofError: the event's fields do not give its hash, or the proof fails.
    """
    if not isinstance(event, Mapping):
        raise AuditProofError("an event is a JSON object")
    try:
        digest = event_hash(event)
    except AuditFormatError as exc:
        raise AuditProofError(f"event: {exc}") from None
    if digest != event.get("hash"):
        raise AuditProofError("the event's fields do not give its hash: it was altered")
    seq = event.get("seq")
    if type(seq) is not int or seq < 1:
        raise AuditProofError("the event has no sequence number")
    index = seq - 1
    try:
        verify_inclusion(
            event_leaf(digest), index, checkpoint.size, _hashes(proof), checkpoint.root
        )
    except ProofError as exc:
        raise AuditProofError(f"the event is not in the log of this checkpoint: {exc}") from None
    return index


def verify_log_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[str | bytes]) -> None:
    """Check that ``new`` extends ``old`` (same origin; the older tree is a prefix).

    An older checkpoint of size 0 is extended by anything. Raises ``AuditProofError``
    when it is not shown: the log was rewritten (a fork), or the proof is wrong.
    """
    if old.origin != new.origin:
        raise AuditProofError(f"checkpoints of two logs: {old.origin} and {new.origin}")
    if new.size < old.size:
        raise AuditProofError(f"the log shrank from {old.size} to {new.size} events")
    if old.size == 0:
        return
    try:
        verify_consistency(old.size, new.size, _hashes(proof), old.root, new.root)
    except ProofError as exc:
        raise AuditProofError(
            f"the log of size {new.size} does not extend the one of size {old.size} "
            f"(a fork: events were rewritten): {exc}"
        ) from None


def verify_proof_bundle(
    bundle: Mapping[str, Any],
    log_keys: Iterable[str | VerifierKey],
    *,
    witnesses: Iterable[str | VerifierKey] = (),
    quorum: int = 0,
) -> tuple[Checkpoint, int]:
    """Verify a proof bundle (``{"checkpoint", "event", "proof"}``, as ``tasklease audit
    prove --output`` writes it): the checkpoint against the log's keys, then the event's
    inclusion in it. Return the checkpoint and the event's leaf index."""
    note, event, proof = bundle.get("checkpoint"), bundle.get("event"), bundle.get("proof")
    if not isinstance(note, str) or not isinstance(event, Mapping) or not isinstance(proof, list):
        raise AuditProofError("a proof bundle holds a checkpoint, an event and a proof")
    checkpoint = verify_checkpoint(note, log_keys, witnesses=witnesses, quorum=quorum)
    return checkpoint, verify_event_inclusion(event, proof, checkpoint)
