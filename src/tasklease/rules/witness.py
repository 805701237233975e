"""A witness's one decision (C2SP ``tlog-witness``, ``add-checkpoint``), written once for
the witness that makes it and the log that asks.

The log sends ``POST <prefix>/add-checkpoint`` with the body ``old <size>\\n``, zero to
63 base64 hashes of the consistency proof from the witness's last cosigned checkpoint
(size ``old``) to the new one, one per line, an empty line, and the new signed
checkpoint. The witness, holding the last checkpoint it cosigned for the origin:

====  ===================================================================================
404   the origin is not a log it witnesses
403   no signature by the log's known key, or one that fails
400   ``old`` is larger than the new checkpoint's size
409   ``old`` is not the size it last cosigned: the body is that size, ``<size>\\n``
422   the proof does not show the new tree extends the old one (a fork: the log rewrote
      what it had published), a proof from ``old`` 0, an empty tree with another root,
      or the same size with another root
200   its cosignature lines (``— <name> <base64>``), and the new checkpoint is its state
====  ===================================================================================

It checks and updates its state as one step. Standard library and PyNaCl only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tasklease.rules.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from tasklease.rules.note import (
    Checkpoint,
    Note,
    NoteError,
    Signature,
    VerifierKey,
    cosign,
    parse_checkpoint,
    parse_note,
    verify_checkpoint_note,
    verify_cosignature,
)

__all__ = [
    "MAX_PROOF",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Answer",
    "WitnessError",
    "WitnessState",
    "add_checkpoint",
    "cosigned_by",
    "format_request",
    "parse_cosignatures",
    "parse_request",
]

MAX_PROOF = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
_MAX_BODY = 1 << 20


class WitnessError(ValueError):
    """A malformed add-checkpoint request or answer."""


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """One add-checkpoint request: the size the log believes the witness holds, the
    consistency proof from it, and the new signed checkpoint."""

    old: int
    proof: tuple[bytes, ...]
    note: Note


def format_request(old: int, proof: Sequence[bytes], note: Note | str) -> bytes:
    """The body of ``POST add-checkpoint``."""
    lines = [f"old {old}\n", *(base64.b64encode(h).decode("ascii") + "\n" for h in proof)]
    return ("".join(lines) + "\n" + str(note)).encode("utf-8")


def parse_request(body: bytes) -> AddCheckpoint:
    """Read an add-checkpoint body; raise ``WitnessError`` if it is malformed."""
    if len(body) > _MAX_BODY:
        raise WitnessError("the request is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessError("the request is not UTF-8") from None
    head, sep, rest = text.partition("\n\n")
    if not sep:
        raise WitnessError("the request has no empty line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise WitnessError("the request starts with 'old <size>'")
    if len(lines) - 1 > MAX_PROOF:
        raise WitnessError(f"a proof has at most {MAX_PROOF} hashes")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            raw = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise WitnessError("a proof line is not base64") from None
        if len(raw) != HASH_SIZE:
            raise WitnessError("a proof hash is 32 bytes")
        proof.append(raw)
    try:
        note = parse_note(rest)
    except NoteError as exc:
        raise WitnessError(f"the checkpoint: {exc}") from None
    return AddCheckpoint(int(match[1]), tuple(proof), note)


def parse_cosignatures(body: bytes) -> list[Signature]:
    """The signature lines of a 200 answer; raise ``WitnessError`` if malformed."""
    try:
        # The lines are a note's signature block: parse them as the block of a dummy note.
        return list(parse_note("x\n\n" + body.decode("utf-8")).signatures)
    except (UnicodeDecodeError, NoteError) as exc:
        raise WitnessError(f"the witness's answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class WitnessState:
    """What a witness keeps per log: the last checkpoint it cosigned (size 0 and the
    empty tree's root before the first)."""

    size: int = 0
    root: bytes = EMPTY_ROOT
    note: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """The witness's answer: HTTP status, body, content type, and its new state (the
    old one unless it cosigned)."""

    status: int
    body: bytes
    content_type: str
    state: WitnessState
    reason: str = ""


def add_checkpoint(
    request: AddCheckpoint,
    state: WitnessState,
    *,
    logs: Mapping[str, Iterable[VerifierKey]],
    name: str,
    public_key: bytes,
    sign: Callable[[bytes], bytes],
    now: int,
) -> Answer:
    """Decide one add-checkpoint request (the table in the module docstring).

    ``logs`` maps each witnessed origin to its log's verifier keys; ``name``,
    ``public_key`` and ``sign`` are the witness's cosigning key; ``now`` the POSIX time
    its cosignature carries.
    """

    def refuse(status: int, reason: str) -> Answer:
        return Answer(status, (reason + "\n").encode(), "text/plain; charset=utf-8", state, reason)

    try:
        checkpoint = parse_checkpoint(request.note.text)
    except NoteError as exc:
        return refuse(400, f"malformed checkpoint: {exc}")
    keys = logs.get(checkpoint.origin)
    if keys is None:
        return refuse(404, f"unknown log {checkpoint.origin}")
    try:
        verify_checkpoint_note(request.note, keys)
    except NoteError as exc:
        return refuse(403, f"checkpoint not signed by the log: {exc}")
    if request.old > checkpoint.size:
        return refuse(400, f"old size {request.old} is larger than the checkpoint's")
    if request.old != state.size:
        body = f"{state.size}\n".encode()
        return Answer(409, body, SIZE_CONTENT_TYPE, state, f"last cosigned size is {state.size}")
    reason = _inconsistent(request, checkpoint, state)
    if reason:
        return refuse(422, reason)
    line = cosign(request.note.text, name, public_key, now, sign)
    new_state = WitnessState(
        checkpoint.size, checkpoint.root, str(request.note.with_signatures([line]))
    )
    return Answer(200, line.line.encode(), "text/plain; charset=utf-8", new_state)


def _inconsistent(request: AddCheckpoint, checkpoint: Checkpoint, state: WitnessState) -> str:
    """Why the new checkpoint does not extend the state's, or ""."""
    if request.old == 0:
        if request.proof:
            return "a proof from size 0 must be empty"
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            return "an empty tree with a root that is not the empty tree's"
        return ""
    try:
        verify_consistency(state.size, checkpoint.size, request.proof, state.root, checkpoint.root)
    except ProofError as exc:
        return f"not consistent with the checkpoint of size {state.size} cosigned before: {exc}"
    return ""


def cosigned_by(note: Note, keys: Iterable[VerifierKey]) -> list[tuple[VerifierKey, int]]:
    """The witnesses among ``keys`` with a valid cosignature of ``note``, and their times.

    Each public key counts once, with the first of ``keys`` holding it that has a valid
    cosignature: a witness listed twice, or one private key cosigning under two names,
    is one witness, so ``len`` of the answer is how many distinct witnesses cosigned (what
    a quorum counts). A cosignature by a listed key that does not verify counts as none
    (it is ignored, not fatal: a witness's mistake must not make the log's checkpoint
    unusable)."""
    out: list[tuple[VerifierKey, int]] = []
    counted: set[bytes] = set()
    for key in keys:
        if key.public_key in counted:
            continue
        try:
            timestamp = verify_cosignature(note, key)
        except NoteError:
            continue
        if timestamp is not None:
            counted.add(key.public_key)
            out.append((key, timestamp))
    return out
