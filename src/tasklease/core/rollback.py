"""A database that went back in time is refused, not served (docs/operations.md, Backups).

A tenant's audit log only grows: its Merkle tree (``core.audittree``) extends every tree it
was before. A database restored from a backup, or a standby that missed the last commits,
holds an older tree, and older revocations with it: the tokens revoked since are valid
again, and the log hands its sequence numbers and leaves out a second time, which its key
would then sign as a second checkpoint of a size it signed before, with another root.

So the last checkpoint the log key signed is kept outside the database, beside the log key
(the *anchor*, a signed checkpoint note kept by a :class:`CheckpointAnchors`: the key
store, with the care it takes of the keys), one per log. A log is named by its database
(``Store.database_id``: a backup, a dump or a standby shares it with the database it was
taken from, a new database does not) and its tenant (and when the tenant was made), so
that even a backup taken before the first event is known for what it is. That name is
read from the database, which whoever can write the database can change: so a log key
anchors one log. A log key directory that keeps the anchor of a non-empty tree for
another log than the one the database now names (another database, or this one with its
name edited, or a tenant made again over the old one's keys) is judged as the anchor of
the log it is asked to sign: the database went back, whatever it calls itself, and the
log key would otherwise sign a second tree that no consistency proof links to the first.
Before a process serves a database, and before it signs a checkpoint, the tree must
extend the anchor: be at least as large, with a consistency proof from the anchor's size
to its own that leads to the anchor's root (RFC 9162 section 2.1.4.2), and no other log's
anchor may be kept beside it. Otherwise the database went back (:class:`WentBack`): the
broker refuses to start (:class:`DatabaseWentBack`) and to sign, until an operator
accepts the restore (``tasklease db accept-restore``), which keeps the log as it is as the
only anchor beside a new log key.

Order: a checkpoint's tree is read from the database, committed; its anchor is written
next, and the checkpoint itself committed (and so served) only then. An anchor never
names a tree the database does not hold, and no checkpoint is served that the anchor does
not cover, whenever the process is killed. :func:`examine` reads the anchor, then the
tree, so the tree it reads is at least as large as the anchor it read, however many
processes sign meanwhile. Pure: the anchors' I/O is the
:class:`CheckpointAnchors` implementation's (``tasklease.keystore.CheckpointFiles``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tasklease.core.audittree import TileReader, consistency_proof
from tasklease.core.errors import InternalError, TaskleaseError
from tasklease.core.records import AuditTree
from tasklease.rules.merkle import EMPTY_ROOT, ProofError, verify_consistency
from tasklease.rules.note import Checkpoint, NoteError, parse_checkpoint, parse_note

__all__ = [
    "ACCEPT_COMMAND",
    "CheckpointAnchors",
    "DatabaseWentBack",
    "LogState",
    "LogStore",
    "WentBack",
    "examine",
    "extends",
    "log_id",
    "read_anchor",
]

ACCEPT_COMMAND = "tasklease db accept-restore"
"""The operator's way to accept a database that went back (``cli``)."""


class CheckpointAnchors(Protocol):
    """Where the last checkpoint a log key signed is kept, outside the database.

    ``directory`` is the log key's directory; ``log_id`` names the log (:func:`log_id`,
    32 bytes). Implementations: :class:`tasklease.keystore.CheckpointFiles`.
    """

    def where(self, directory: Path, log_id: bytes) -> str:
        """Where the anchor of ``log_id`` is kept (for messages; no secret)."""

    def read(self, directory: Path, log_id: bytes) -> str | None:
        """The anchor of ``log_id`` (a signed checkpoint note), None when there is none.

        Raises:
            ValueError: the anchor is unsafe (a link, others may write it) or too large;
                the message names it.
            OSError: it could not be read.
        """

    def advance(self, directory: Path, log_id: bytes, note: str) -> None:
        """Keep ``note`` (a signed checkpoint of ``log_id``) as its anchor, unless the anchor
        kept is of a larger tree already (another process sharing the directory signed it).

        Raises:
            ValueError, OSError: as :meth:`read`, or it could not be written.
        """

    def others(self, directory: Path, log_id: bytes) -> list[tuple[str, str]]:
        """The anchors kept in ``directory`` for other logs than ``log_id``: where each is
        kept and its note (a signed checkpoint note).

        Raises:
            ValueError, OSError: as :meth:`read`, for any of them.
        """

    def replace(self, directory: Path, log_id: bytes, note: str) -> None:
        """Keep ``note`` as the anchor of ``log_id``, whatever was kept, and set the anchors
        of other logs in ``directory`` aside (an operator accepted a database that went
        back: the log key anchors this log only from now on).

        Raises:
            ValueError, OSError: as :meth:`advance`.
        """


class LogStore(TileReader, Protocol):
    """What examining a log reads of a tenant's store (:class:`core.store.Store` has it)."""

    def audit_tree(self) -> AuditTree | None: ...


@dataclass(frozen=True, slots=True)
class WentBack:
    """A log whose tree does not extend the last checkpoint its key signed."""

    tenant: str
    log_id: bytes
    anchor: Checkpoint  # what the log key signed last (its origin, size, root)
    where: str  # where the anchor is kept
    size: int  # the database's tree, as found
    root: bytes
    # True when the anchor is another log's (the database names itself otherwise than the
    # database the log key anchored: another one, or this one edited); False when it is
    # this log's own.
    other_log: bool = False

    @property
    def forked(self) -> bool:
        """True when the tree is as large as the anchor but another (a restore, then new
        events); False when it is smaller (cut)."""
        return self.size >= self.anchor.size

    def describe(self) -> str:
        """One sentence: what was found (sizes and roots) and where the anchor is."""
        how = "holds other events than" if self.forked else "is behind"
        if self.other_log:
            how = (
                "is not the one its log key signs (the database names itself otherwise "
                "than the database the key signed for: another database, or a restored or "
                "edited one), so it does not extend"
            )
        return (
            f"the audit log of tenant {self.tenant} {how} the last checkpoint its log key "
            f"signed: {self.size} events (root {_b64(self.root)}) in the database, "
            f"{self.anchor.size} events (root {_b64(self.anchor.root)}) in the checkpoint "
            f"kept in {self.where}"
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class DatabaseWentBack(InternalError):
    """The database went back in time (a restore, lost commits): the broker does not start
    on it until an operator accepts it (:data:`ACCEPT_COMMAND`)."""

    default_detail = "the database went back in time"

    def __init__(self, found: Sequence[WentBack]) -> None:
        self.found = tuple(found)
        what = "; ".join(item.describe() for item in self.found)
        super().__init__(
            f"the database went back in time: {what}. It was restored from a backup or lost "
            "its last commits: revocations made since are lost (the tokens they ended are "
            "valid again) and the audit log would fork. Put the newer database back; or, if "
            f"this restore is meant, run `{ACCEPT_COMMAND}` (docs/operations.md, Backups) and "
            "issue again the revocations made after the backup"
        )


@dataclass(frozen=True, slots=True)
class LogState:
    """A log as :func:`examine` read it: the tree (None when empty), the log's name
    (:func:`log_id`; None when no anchor is kept) and, when the tree does not extend the
    anchor, why."""

    tree: AuditTree | None
    log_id: bytes | None
    went_back: WentBack | None = None

    @property
    def size(self) -> int:
        return self.tree.size if self.tree is not None else 0

    @property
    def root(self) -> bytes:
        return self.tree.root if self.tree is not None else EMPTY_ROOT


def log_id(database_id: str, tenant: str, created_at: float | None) -> bytes:
    """The name of a tenant's log in a database: its database, its tenant, and when the
    tenant was made (None for the default tenant)."""
    made = "" if created_at is None else repr(float(created_at))
    return hashlib.sha256(f"tasklease-log\n{database_id}\n{tenant}\n{made}".encode()).digest()


def read_anchor(kept: str) -> Checkpoint:
    """The checkpoint of an anchor's note (its signature is not checked: the anchor is as
    trusted as the key directory it sits in).

    Raises:
        ValueError: not a signed checkpoint.
    """
    try:
        return parse_checkpoint(parse_note(kept).text)
    except NoteError as exc:
        raise ValueError(f"not a signed checkpoint ({exc})") from None


def examine(
    store: LogStore,
    anchors: CheckpointAnchors,
    directory: Path,
    tenant: str,
    log: bytes,
) -> LogState:
    """Read the anchors kept in ``directory`` (log ``log``'s, :func:`log_id`, and any
    other log's), then the tree, and judge it: an anchor of a non-empty tree kept for
    another log means the log key anchors another log than the one the database names
    (:attr:`WentBack.other_log`), whatever the tree; else the tree must extend this log's.

    Raises:
        ValueError: an anchor is unsafe or not a signed checkpoint (the message names
            it).
        OSError: it could not be read.
    """
    kept = anchors.read(directory, log)
    others = [(where, _parsed(note, where)) for where, note in anchors.others(directory, log)]
    tree = store.audit_tree()  # after the anchors: see the module's docstring
    state = LogState(tree, log)
    bound = [(where, anchor) for where, anchor in others if anchor.size > 0]
    if bound:
        where, anchor = max(bound, key=lambda item: item[1].size)
        found = WentBack(tenant, log, anchor, where, state.size, state.root, other_log=True)
        return LogState(tree, log, found)
    if kept is None:
        return state
    anchor = _parsed(kept, anchors.where(directory, log))
    if extends(store, tree, anchor):
        return state
    found = WentBack(tenant, log, anchor, anchors.where(directory, log), state.size, state.root)
    return LogState(tree, log, found)


def _parsed(note: str, where: str) -> Checkpoint:
    try:
        return read_anchor(note)
    except ValueError as exc:
        raise ValueError(f"checkpoint anchor {where}: {exc}") from None


def extends(reader: TileReader, tree: AuditTree | None, anchor: Checkpoint) -> bool:
    """Whether ``tree`` extends the tree the anchor names (a consistency proof from its
    size to the tree's leads to its root)."""
    if anchor.size == 0:
        return True
    if tree is None or tree.size < anchor.size:
        return False
    try:
        proof = consistency_proof(reader, tree, anchor.size, tree.size)
        verify_consistency(anchor.size, tree.size, proof, anchor.root, tree.root)
    except (ProofError, TaskleaseError):  # a proof that fails, or tiles that are missing
        return False
    return True
