"""The transparent audit log: the log key, checkpoints, proofs and witness cosignatures.

Each tenant's audit events are the leaves of a Merkle tree (``core.audittree``) kept in
the events' own transactions. Here that tree is made answerable to outsiders:

* the **log key**: an Ed25519 key of its own (never a token signing key), in
  ``<key_dir>/log`` through the same key provider as the signing keys (encrypted file,
  HSM, ...), rotated like them (:meth:`AuditTransparency.rotate_key`); its verifier keys
  are published;
* **checkpoints** (C2SP ``tlog-checkpoint``): the tree's origin, size and root in a
  signed note, made at least every ``audit_checkpoint_events`` events or
  ``audit_checkpoint_interval`` seconds (:meth:`AuditTransparency.sign_if_due`) by the one
  process holding the checkpoint lease;
* **witnesses** (C2SP ``tlog-witness``): the checkpoint goes to every configured witness
  with a consistency proof from what it last cosigned (:meth:`AuditTransparency.publish`,
  through a ``push`` the HTTP adapter gives); once ``audit_witness_quorum`` of them have
  cosigned it, it is *final*, and the final checkpoint is what the log serves;
* **proofs**: inclusion and consistency proofs (RFC 9162) read from the tiles;
* the **anchor** (``core.rollback``): the last checkpoint the log key signed, kept beside
  it, outside the database. A tree that does not extend it (a database that went back in
  time), or a database that names itself otherwise than the one the key anchors, is never
  signed, and a broker does not start on it (:func:`logs_went_back`) until an operator
  accepts it (:meth:`AuditTransparency.accept_rollback`), which a new log key signs from:
  one key never signs two checkpoints that no consistency proof links.

No checkpoint is ever audited as an event: that would grow the log it describes, forever.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from tasklease.core.auditformat import AuditEntry, clipped
from tasklease.core.audittree import consistency_proof, inclusion_proof, root_at
from tasklease.core.config import without_userinfo
from tasklease.core.errors import NotFound
from tasklease.core.issuing import listed
from tasklease.core.kernel import Kernel, RequestContext
from tasklease.core.keydirs import LOG_KEY_DIR
from tasklease.core.keys import KeyRing, load_keyring, load_or_create_keyring, rotate_key
from tasklease.core.records import AuditEvent, AuditQuery, AuditTree, CheckpointRecord
from tasklease.core.rollback import (
    ACCEPT_COMMAND,
    CheckpointAnchors,
    LogState,
    WentBack,
    examine,
    log_id,
)
from tasklease.core.store import Store, WriteTx
from tasklease.core.tenantids import log_origin
from tasklease.core.tenants import DEFAULT_TENANT, tenant_key_dir
from tasklease.core.tokens import Claims
from tasklease.rules.merkle import EMPTY_ROOT
from tasklease.rules.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Note,
    NoteError,
    Signature,
    VerifierKey,
    checkpoint_note,
    parse_note,
)
from tasklease.rules.witness import (
    SIZE_CONTENT_TYPE,
    WitnessError,
    cosigned_by,
    format_request,
    parse_cosignatures,
)

__all__ = [
    "CHECKPOINT_LEASE",
    "LOG_KEY_DIR",
    "WITNESSES_CHANGED",
    "AuditTransparency",
    "PushResult",
    "RollbackAccepted",
    "Witness",
    "log_origin",
    "logs_went_back",
    "witness_set",
]

_log = logging.getLogger("tasklease.audit")

CHECKPOINT_LEASE = "audit-checkpoints"
# Seconds before witnesses that did not all cosign the latest checkpoint are asked again.
RETRY_WITNESSES = 5.0
# Seconds between two logs of one problem with the anchor (a database that went back, an
# anchor that cannot be written): the checkpoint job meets it every round.
_COMPLAIN_EVERY = 60.0


def logs_went_back(store: Store, anchors: CheckpointAnchors, key_dir: str) -> list[WentBack]:
    """Every log of the database that does not extend its anchor, or whose log key anchors
    another log (``core.rollback``): the default tenant's and each active tenant's, each
    against the anchors beside its own log key (nothing without a key directory, whose log
    keys are in memory, nor for a memory store, which has no copies).

    Raises:
        ValueError: an anchor is unsafe or not a signed checkpoint (the message names it).
        OSError: an anchor could not be read.
    """
    database = store.database_id()
    if not key_dir or not database:
        return []
    logs = [(store, Path(key_dir), log_id(database, store.tenant, None))]
    logs += [
        (
            store.for_tenant(record.name),
            Path(tenant_key_dir(key_dir, record.name)),
            log_id(database, record.name, record.created_at),
        )
        for record in store.list_tenants()
        if record.status == "active"
    ]
    found: list[WentBack] = []
    for view, directory, log in logs:
        state = examine(view, anchors, directory / LOG_KEY_DIR, view.tenant, log)
        if state.went_back is not None:
            found.append(state.went_back)
    return found


@dataclass(frozen=True, slots=True)
class RollbackAccepted:
    """What accepting a database that went back did: the event recording it, the new log
    key (its vkey) and the previous one, and the tree the new anchor names."""

    found: WentBack
    event: AuditEvent | None  # None only inside ``core.audit.deferring`` (never here)
    new_vkey: str
    previous_vkey: str
    size: int


@dataclass(frozen=True, slots=True)
class Witness:
    """A configured witness: where its ``add-checkpoint`` is and its cosignature key."""

    url: str
    key: VerifierKey

    @property
    def shown(self) -> str:
        """The URL as logs name it: without its user and password (the witness's
        credential, sent to it as HTTP Basic and written nowhere else)."""
        return without_userinfo(self.url)

    @classmethod
    def parse(cls, entry: str) -> Witness:
        url, _, vkey = entry.partition(" ")
        key = VerifierKey.parse(vkey)
        if key.sig_type != COSIGNATURE:
            raise NoteError("a witness's key is a cosignature (type 0x04) key")
        return cls(url.rstrip("/"), key)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a witness answered ``add-checkpoint``: status, content type and body."""

    status: int
    content_type: str
    body: bytes


Push = Callable[[str, bytes], PushResult]
"""``push(url, body)``: POST ``body`` to ``<url>/add-checkpoint``; raise ``OSError`` (or
anything the transport raises) when the witness cannot be reached."""


WITNESSES_CHANGED = "audit_witnesses_changed"
# What an ``audit_witnesses_changed`` detail ends with: `` -> <after> set=<before>-><after>``
# (neither a witness's URL nor its vkey holds a space).
_RECORDED = re.compile(
    r" -> (?P<text>quorum=\d+ witnesses=\[.*\]) set=\S+->(?P<digest>[0-9a-f]{32})\Z"
)


def witness_set(witnesses: Sequence[Witness], quorum: int) -> tuple[str, str]:
    """The witnesses and quorum as audit text (``quorum=N witnesses=[<url>#<vkey> ...]``,
    sorted, each URL without its user and password) and their digest (the first 32 hex
    characters of the SHA-256 of the text): two starts with one set give one digest."""
    entries = sorted(f"{w.shown}#{w.key.vkey}" for w in witnesses)
    text = f"quorum={quorum} witnesses={listed(entries)}"
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class AuditTransparency:
    """Checkpoints, proofs and witnesses of one tenant's audit log. Thread-safe."""

    def __init__(
        self,
        kernel: Kernel,
        signing: KeyRing,
        holder: str,
        *,
        anchors: CheckpointAnchors | None = None,
        ring: KeyRing | None = None,
    ) -> None:
        self._kernel = kernel
        config = kernel.config
        self._store = kernel.store
        self._holder = holder
        self.origin = log_origin(
            config.audit_origin, bool(config.audit_log_origin), self._store.tenant
        )
        self.witnesses = tuple(Witness.parse(entry) for entry in config.audit_witnesses)
        self.quorum = config.audit_witness_quorum
        self._every_events = config.audit_checkpoint_events
        self._every_seconds = config.audit_checkpoint_interval
        self._lock = threading.Lock()
        self._key_dir = Path(config.key_dir) / LOG_KEY_DIR if config.key_dir else None
        # Where the last checkpoint signed is kept, outside the database (core.rollback):
        # only beside a log key kept in a directory.
        self.anchors = anchors if self._key_dir is not None else None
        # What the last signing found, when the tree did not extend the anchor.
        self.went_back: WentBack | None = None
        self._complained: dict[str, float] = {}
        self.ring = ring if ring is not None else self._load(signing)
        self._key_files = self._list_key_files()
        # This process's view, refreshed whenever it signs or reads the store.
        self._signed_size = -1
        self._last_check = float("-inf")
        self._witness_sizes: dict[str, int] = {}
        self._lease_held = False  # whether this process signed last: only it publishes
        self._pushed: tuple[int, str] = (-1, "")  # the checkpoint every witness cosigned
        self._retry_at = float("-inf")
        # Whether the tree has taken every event written before it existed (the
        # checkpoint job catches up first, in bounded transactions).
        self.tree_current = False

    # -- the log key ------------------------------------------------------------------------

    def _load(self, signing: KeyRing) -> KeyRing:
        """The log key of a broker given none: made where it is missing. Only for brokers
        built in process (tests, ``client.testing``): the server and the tenants open
        theirs first, with creation left to ``tasklease init`` and tenant creation."""
        provider = signing.provider
        if self._key_dir is None or provider is None:
            return KeyRing(nacl.signing.SigningKey.generate())
        return load_or_create_keyring(self._key_dir, provider)

    def _list_key_files(self) -> tuple[str, ...]:
        if self._key_dir is None:
            return ()
        try:
            return tuple(sorted(p.name for p in self._key_dir.glob("signing-*.pem")))
        except OSError:
            return ()

    def log_keys(self) -> list[VerifierKey]:
        """The log's verifier keys (type 0x01, named by the origin), the active one first."""
        ring = self.ring
        keys = (ring.public_key(kid) for kid in ring.kids())
        return [VerifierKey(self.origin, ED25519, key) for key in keys if key is not None]

    def rotate_key(self, claims: Claims, ctx: RequestContext) -> tuple[str, str]:
        """Make a new log key active; return the new and the previous vkey.

        Checkpoints signed before stay verifiable with the previous key (it stays
        published). Witnesses must be given the new vkey before they cosign again.

        The ``audit_log_key_rotated`` event is durable before the key takes effect
        anywhere: in ``<key_dir>/log`` the key stays pending (no process loads it) until
        the event is stored, and is then renamed into place.

        Raises:
            Unavailable: the audit event could not be stored; nothing changed (the new
                key was destroyed before any process could load it).
        """
        with self._lock:
            return self._rotate(lambda new, old: self._record_rotation(claims, ctx, new, old))

    def _rotate(self, record: Callable[[str, str], None]) -> tuple[str, str]:
        """Rotate the log key, ``record(new_vkey, previous_vkey)`` (an audit event) before
        the new key takes effect; return both vkeys. Call it holding ``self._lock``."""
        previous = self.ring
        provider = previous.provider
        old = self._vkey(previous)
        made: list[str] = []

        def before(key: nacl.signing.VerifyKey) -> None:
            made.append(VerifierKey(self.origin, ED25519, bytes(key)).vkey)
            record(made[-1], old)

        if self._key_dir is not None and provider is not None:
            rotate_key(self._key_dir, provider, before_activation=before)
            ring = load_keyring(self._key_dir, provider)
            self._key_files = self._list_key_files()
        else:
            older = [k for kid in previous.kids() if (k := previous.verify_key(kid))]
            ring = KeyRing(nacl.signing.SigningKey.generate(), older)
            made.append(self._vkey(ring))
            record(made[-1], old)
        self.ring = ring
        self._signed_size = -1  # sign anew under the new key
        return made[-1], old

    def created(self, by: str, ctx: RequestContext) -> AuditEntry:
        """The audit entry of the log's first key, made by ``by`` (``init``)."""
        return AuditEntry(
            "audit_log_key_created",
            request_id=ctx.request_id,
            detail=f"audit log key created vkey={self._vkey(self.ring)} by={by}",
        )

    def _record_rotation(self, claims: Claims, ctx: RequestContext, new: str, old: str) -> None:
        self._kernel.record(
            AuditEntry(
                "audit_log_key_rotated",
                request_id=ctx.request_id,
                detail=f"audit log key rotated new={new} previous={old} by={claims.sub}",
            )
        )

    def _vkey(self, ring: KeyRing) -> str:
        key = ring.public_key(ring.active_kid)
        if key is None:  # pragma: no cover - a ring always holds its active key
            raise RuntimeError("the log key ring has no active key")
        return VerifierKey(self.origin, ED25519, key).vkey

    def refresh_keys(self) -> bool:
        """Adopt a log key another process sharing the key directory made; True if so."""
        files = self._list_key_files()
        provider = self.ring.provider
        if self._key_dir is None or provider is None or files == self._key_files:
            return False
        with self._lock:
            self.ring = load_keyring(self._key_dir, provider)
            self._key_files = files
        return True

    # -- the witnesses it starts with -----------------------------------------------------

    def record_witnesses(self) -> bool:
        """Audit the witnesses and quorum this process starts with when they are not the
        ones the log last recorded (``audit_witnesses_changed``, before -> after); True if
        written. Nothing is written for a log that never had witnesses and has none.

        The record is the log's last such event, read in the event's own write under the
        audit head's lock: of processes starting together with one new set, one writes it.

        Raises:
            Unavailable: the event could not be written.
        """
        after, digest = witness_set(self.witnesses, self.quorum)
        written: list[bool] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.audit_head()  # the head's lock: every other append waits for this write
            before, held = self._recorded_witnesses()
            if held == digest or (held is None and not self.witnesses):
                return []
            written.append(True)
            return [
                AuditEntry(
                    WITNESSES_CHANGED,
                    detail=f"audit witnesses changed: {before} -> {after} "
                    f"set={held or 'none'}->{digest}",
                )
            ]

        self._kernel.commit(unit)
        return bool(written)

    def _recorded_witnesses(self) -> tuple[str, str | None]:
        """The witness set the log's last ``audit_witnesses_changed`` names (its text and
        digest), or ``("unrecorded", None)``."""
        _, total = self._store.query_audit(AuditQuery(event_type=WITNESSES_CHANGED, limit=0))
        if total:
            last, _ = self._store.query_audit(
                AuditQuery(event_type=WITNESSES_CHANGED, limit=1, offset=total - 1)
            )
            found = _RECORDED.search(last[0].detail) if last else None
            if found is not None:
                return found["text"], found["digest"]
        return "unrecorded", None

    # -- the tree and its proofs ----------------------------------------------------------

    def tree(self) -> AuditTree | None:
        return self._store.audit_tree()

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return inclusion_proof(self._store, self.tree(), index, size)

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The consistency proof from the tree of ``first`` leaves to ``second``."""
        return consistency_proof(self._store, self.tree(), first, second)

    def root(self, size: int) -> bytes:
        return root_at(self._store, self.tree(), size)

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, kind: str = "final") -> CheckpointRecord:
        """The latest checkpoint of ``kind``; raise ``NotFound`` before the first."""
        record = self._store.get_checkpoint(kind)
        if record is None:
            raise NotFound("no checkpoint has been published yet")
        return record

    def due(self, now: float | None = None) -> bool:
        """Whether this process should try to sign: ``audit_checkpoint_events`` events
        appended here since the last checkpoint it knows of, or the interval passed."""
        now = time.monotonic() if now is None else now
        appended = self._kernel.audit.last_seq - self._signed_size
        return appended >= self._every_events or now - self._last_check >= self._every_seconds

    def sign_if_due(self, *, force: bool = False) -> CheckpointRecord | None:
        """Sign a checkpoint of the tree as it is, if due and the tree grew since the last
        one; return it (None when not due, not grown, another process holds the
        checkpoint lease, or the tree does not extend the anchor: :attr:`went_back`).
        With no witnesses required, it is final at once."""
        now_mono = time.monotonic()
        if not force and not self.due(now_mono):
            return None
        self._last_check = now_mono
        return self._sign(force=force)

    def sign_now(self) -> CheckpointRecord | None:
        """:meth:`sign_if_due` without waiting until it is due: a broker that stops signs
        what it wrote, so that the anchor covers it. Call it once :attr:`tree_current`."""
        return self._sign(force=False)

    def release_lease(self) -> bool:
        """Give the checkpoint lease up if this process's last signing took it, so that
        another process signs (and takes checkpoints to the witnesses) from its next
        round, not once the lease expires. A broker that stops calls it after
        :meth:`sign_now`. True iff it was given up.

        Raises:
            Unavailable: the store could not be written (the lease expires as before).
        """
        with self._lock:
            if not self._lease_held:
                return False
            released = self._kernel.release_lease(CHECKPOINT_LEASE, self._holder)
            self._lease_held = False
            return released

    def _sign(self, *, force: bool) -> CheckpointRecord | None:
        """Sign a checkpoint of the tree as it is, if this process holds the lease and the
        tree grew since the last one (or ``force``); return it once committed.

        Three steps, in this order: the lease is taken and the stored checkpoint read (a
        transaction); the checkpoint is signed and kept as the anchor; it is committed,
        and so served, only then. A checkpoint is never served that the anchor does not
        cover: a broker killed between the two leaves an anchor ahead of what was served,
        never behind it, and the tree it names is already in the database (it was read
        from there). If the anchor cannot be kept, nothing is signed."""
        with self._lock:
            state = self._judged()
            if state is None:
                return None
            now = self._kernel.now()
            size, root = state.size, state.root
            if not self._claim(size, force=force):
                return None
            ring = self.ring
            public = ring.public_key(ring.active_kid) or b""
            note = str(
                checkpoint_note(Checkpoint(self.origin, size, root), public, ring.sign_detached)
            )
            if not self._keep_anchor(state.log_id, note):
                return None
            made: list[CheckpointRecord] = []

            def unit(tx: WriteTx) -> list[AuditEntry]:
                self._lease_held = self._take_lease(tx)
                if not self._lease_held:
                    return []
                record = CheckpointRecord("signed", size, note, now)
                if tx.put_checkpoint(record):
                    made.append(record)
                    if not self.quorum:
                        tx.put_checkpoint(CheckpointRecord("final", size, note, now))
                return []

            self._kernel.commit(unit)
            if made:
                self._signed_size = size
        return made[0] if made else None

    def _claim(self, size: int, *, force: bool) -> bool:
        """Take (or keep) the checkpoint lease; True iff this process holds it and a
        checkpoint of ``size`` leaves is wanted: the stored one is of a smaller tree (any
        tree, with ``force``). The tree is judged against the anchor, not read here: what
        is signed was shown to extend it (a later tree is a later checkpoint's)."""
        wanted: list[bool] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            self._lease_held = self._take_lease(tx)
            if not self._lease_held:
                return []
            signed = self._store.get_checkpoint("signed")
            if signed is not None and signed.size >= size and not force:
                self._signed_size = signed.size
                return []
            wanted.append(True)
            return []

        self._kernel.commit(unit)
        return bool(wanted)

    def _take_lease(self, tx: WriteTx) -> bool:
        """Take or extend the checkpoint lease, dated by :meth:`Kernel.lease_now` (a clock
        that jumped ahead takes no lease it does not hold by the true time)."""
        lease = max(30.0, 3 * self._every_seconds)
        now = self._kernel.lease_now()
        return tx.acquire_lease(CHECKPOINT_LEASE, self._holder, now, now + lease)

    # -- the anchor (core.rollback) -------------------------------------------------------

    def examine(self) -> LogState:
        """This log as it is now, judged against the anchors beside its log key (none kept:
        it extends them).

        Raises:
            ValueError: the anchor is unsafe or not a signed checkpoint.
            OSError: it could not be read.
        """
        if self.anchors is None or self._key_dir is None:
            return LogState(self._store.audit_tree(), None)
        store = self._store
        database = store.database_id()
        if not database:
            return LogState(store.audit_tree(), None)
        tenant = store.tenant
        record = None if tenant == DEFAULT_TENANT else store.get_tenant(tenant)
        created = record.created_at if record is not None else None
        log = log_id(database, tenant, created)
        return examine(store, self.anchors, self._key_dir, tenant, log)

    def _judged(self) -> LogState | None:
        """The log to sign, or None (logged) when it does not extend the anchor or the
        anchor cannot be read: a log key never signs two checkpoints that no consistency
        proof links."""
        try:
            state = self.examine()
        except (OSError, ValueError) as exc:
            self._complain(f"audit checkpoints are not signed: {exc}")
            return None
        self.went_back = state.went_back
        if state.went_back is not None:
            self._complain(
                f"audit checkpoints are not signed: the database went back in time: "
                f"{state.went_back.describe()}. Revocations made since are lost; if the "
                f"restore is meant, run `{ACCEPT_COMMAND}` (docs/operations.md, Backups)"
            )
            return None
        return state

    def _keep_anchor(self, log: bytes | None, note: str) -> bool:
        """Keep the checkpoint about to be committed as the anchor; False (logged) if it
        could not be kept: the checkpoint is then not committed, and the anchor stays the
        previous one. True when there is nothing to keep (no key directory, no log id)."""
        if self.anchors is None or self._key_dir is None or log is None:
            return True
        try:
            self.anchors.advance(self._key_dir, log, note)
        except (OSError, ValueError) as exc:
            self._complain(
                f"audit checkpoints are not signed: their anchor could not be kept beside "
                f"the log key ({exc})"
            )
            return False
        return True

    def _complain(self, message: str) -> None:
        now = time.monotonic()
        if now - self._complained.get(message, float("-inf")) < _COMPLAIN_EVERY:
            return
        self._complained[message] = now
        _log.error("%s", message)

    def accept_rollback(self, found: WentBack, *, by: str, ctx: RequestContext) -> RollbackAccepted:
        """Accept a database that went back (``found``): record it (``audit_rollback_accepted``),
        have a new log key sign from here, and keep a checkpoint of the tree as it is now,
        signed by that key, as the anchor (the only one: the anchors of other logs beside
        the key are set aside, so the key anchors this log from now on).

        The event names both trees (sizes, roots) and both keys; it is durable before the
        new key takes effect (as :meth:`rotate_key`'s). The old key, which signed the
        checkpoints of the log before it went back, signs nothing more: no key signs two
        checkpoints that no consistency proof links.

        Raises:
            Unavailable: the event could not be stored; nothing changed.
            ValueError, OSError: the anchor could not be written (the event and the new
                key stand; accepting again records it again).
        """
        events: list[AuditEvent] = []
        anchor = found.anchor
        detail = (
            f"the database went back in time and the restore was accepted by {by}: "
            f"{found.size} events (root {_b64(found.root)}) in the database, "
            f"{anchor.size} events (root {_b64(anchor.root)}) in the last checkpoint the "
            f"log key signed; events and revocations after the backup are lost"
        )
        if found.other_log:
            detail += (
                "; the database names itself otherwise than the one the log key signed for "
                "(another database, or a restored or edited one)"
            )

        def record(new: str, old: str) -> None:
            entry = AuditEntry(
                "audit_rollback_accepted",
                request_id=ctx.request_id,
                detail=f"{detail}; new log key {new}, previous {old}",
            )
            events.extend(self._kernel.record(entry))

        with self._lock:
            new, old = self._rotate(record)
            tree = self._store.audit_tree()
            size, root = (tree.size, tree.root) if tree else (0, EMPTY_ROOT)
            ring = self.ring
            public = ring.public_key(ring.active_kid) or b""
            note = checkpoint_note(Checkpoint(self.origin, size, root), public, ring.sign_detached)
            if self.anchors is not None and self._key_dir is not None:
                self.anchors.replace(self._key_dir, found.log_id, str(note))
            self.went_back = None
        return RollbackAccepted(found, events[0] if events else None, new, old, size)

    def publish(self, push: Push, *, now: float | None = None) -> CheckpointRecord | None:
        """Take the latest signed checkpoint to the witnesses; once ``quorum`` of them
        cosigned it, store it, with their cosignatures, as final and return it.

        A witness that refuses (a fork it detected, a key it does not know) or cannot be
        reached is logged, and asked again at most every :data:`RETRY_WITNESSES` seconds;
        short of the quorum the checkpoint stays signed but not final, and the previous
        final one stays what the log serves. With a quorum of 0 the checkpoint was final
        when signed; the cosignatures are added to it as they come.
        """
        if not self.witnesses or not self._lease_held:
            return None
        signed = self._store.get_checkpoint("signed")
        if signed is None:
            return None
        now = time.monotonic() if now is None else now
        if self._pushed == (signed.size, signed.note) or now < self._retry_at:
            return None
        note = parse_note(signed.note)
        cosignatures = []
        for witness in self.witnesses:
            line = self._ask(witness, note, signed.size, push)
            if line is not None:
                cosignatures.append(line)
        if len(cosignatures) == len(self.witnesses):
            self._pushed = (signed.size, signed.note)
        else:
            self._retry_at = now + RETRY_WITNESSES
        cosigned = note.with_signatures(cosignatures)
        valid = cosigned_by(cosigned, [w.key for w in self.witnesses])
        if len(valid) < self.quorum:
            _log.warning(
                "audit checkpoint of size %d of log %s has %d of the %d witness "
                "cosignatures it needs; it is not final (each log, every tenant's, is given "
                "to the witnesses by its vkey: tasklease [--tenant NAME] audit log-keys)",
                signed.size,
                self.origin,
                len(valid),
                self.quorum,
            )
            return None
        if not valid:
            return None
        record = CheckpointRecord("final", signed.size, str(cosigned), self._kernel.now())
        stored: list[bool] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            stored.append(tx.put_checkpoint(record))
            return []

        self._kernel.commit(unit)
        return record if stored[0] else None

    def _ask(self, witness: Witness, note: Note, size: int, push: Push) -> Signature | None:
        """One witness's cosignature of ``note`` (its Signature), or None."""
        old = self._witness_sizes.get(witness.url, 0)
        for _ in range(2):  # a 409 tells the size it holds: ask once more from there
            if old > size:
                _log.error(
                    "witness %s holds a checkpoint of size %d, larger than ours (%d): "
                    "this log was rolled back or forked",
                    witness.shown,
                    old,
                    size,
                )
                return None
            proof = self.consistency(old, size) if 0 < old < size else []
            try:
                answer = push(witness.url, format_request(old, proof, note))
            except Exception as exc:  # noqa: BLE001 - any transport failure: try next time
                _log.warning("witness %s unreachable: %s", witness.shown, type(exc).__name__)
                return None
            if answer.status == 409 and answer.content_type.startswith(SIZE_CONTENT_TYPE):
                try:
                    old = int(answer.body.decode("ascii").strip())
                except ValueError:
                    return None
                self._witness_sizes[witness.url] = old
                continue
            if answer.status != 200:
                _log.error(
                    "witness %s refused the audit checkpoint of size %d of log %s (HTTP %d): %s",
                    witness.shown,
                    size,
                    self.origin,
                    answer.status,
                    clipped(answer.body[:800].decode("utf-8", "replace").strip(), 200),
                )
                return None
            try:
                lines = parse_cosignatures(answer.body)
            except WitnessError as exc:
                _log.error("witness %s answered a malformed cosignature: %s", witness.shown, exc)
                return None
            mine = [s for s in lines if s.by(witness.key)]
            if not mine or not cosigned_by(note.with_signatures(mine), [witness.key]):
                _log.error("witness %s answered no valid cosignature", witness.shown)
                return None
            self._witness_sizes[witness.url] = size
            return mine[0]
        return None

    def witness_sizes(self) -> dict[str, int]:
        """The size each witness was last seen to hold (this process's view)."""
        return dict(self._witness_sizes)
