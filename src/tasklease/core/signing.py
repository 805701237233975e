"""The signing keys in use: the one place services read them from, their rotation and
their retirement.

The ring (one signing key, verify-only keys by ``kid``) and the validator built on it are
replaced when a key is rotated here or by another process sharing the key directory, and
when a key is retired anywhere: the retired kids are recorded in the store with the
retirement's event, and no process trusts one of them again, whatever its key directory
still holds (a replica with a copy of its own). A process that finds the store lost a
retirement it knew (the database went back in time) records it again; and each key
directory keeps the retired kids its processes learnt (``retired-signing-keys``), so a
process started on a database restored under stopped processes trusts none of them and
records them again too.
Services hold the :class:`SigningKeys` and read :attr:`~SigningKeys.ring` and
:attr:`~SigningKeys.validator` at each use, never a copy kept from before, so none goes on
signing or verifying with a ring that has been replaced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nacl.signing

from tasklease.core.auditformat import AuditEntry, clipped, detail_field
from tasklease.core.errors import Conflict, NotFound, TaskleaseError, Unavailable
from tasklease.core.kernel import Kernel, RequestContext
from tasklease.core.keys import KeyRing, jwk_thumbprint, load_keyring, retire_keys, rotate_key
from tasklease.core.store import WriteTx
from tasklease.core.tokens import Claims, Signer
from tasklease.core.validation import Validator

__all__ = ["SigningKeys", "verify_keys"]

_log = logging.getLogger("tasklease.broker")


class _Remembering:
    """A ring signing, and a validator told of every token it signs."""

    __slots__ = ("_ring", "_validator")

    def __init__(self, ring: KeyRing, validator: Validator) -> None:
        self._ring = ring
        self._validator = validator

    def sign(self, payload: bytes, typ: str) -> str:
        ring = self._ring
        token = ring.sign(payload, typ)
        self._validator.signed(token, ring.active_kid, typ, payload)
        return token


def verify_keys(ring: KeyRing) -> list[nacl.signing.VerifyKey]:
    """Every key ``ring`` verifies with, the active one first."""
    return [key for kid in ring.kids() if (key := ring.verify_key(kid)) is not None]


def trusted(ring: KeyRing, retired: frozenset[str]) -> KeyRing:
    """``ring`` less every key retired; with its active key retired, a ring that signs
    nothing (:meth:`KeyRing.stopped`)."""
    for kid in ring.kids():
        if kid in retired and kid != ring.active_kid:
            ring = ring.without(kid)
    if ring.active_kid in retired and ring.active_kid in ring.kids():
        _log.error(
            "signing key %s was retired, and this process's key directory holds no key "
            "that replaced it: nothing is signed here until the key directory is copied "
            "from where the key was rotated",
            ring.active_kid,
        )
        ring = ring.stopped()
    return ring


class SigningKeys:
    """The current key ring and validator, swapped together on rotation. Thread-safe.

    ``ring`` and ``validator`` are plain attributes, each replaced by one reference
    assignment (validator first), so a concurrent reader sees the old ring or the new
    one, never a mixture, and pays nothing on the hot path beyond an attribute read.
    """

    def __init__(self, kernel: Kernel, ring: KeyRing) -> None:
        """Raises ``ValueError`` or ``OSError`` when the retired kids kept in the key
        directory cannot be read (unsafe, not a list of kids)."""
        self._kernel = kernel
        self._lock = threading.Lock()
        self._directory: Path | None = None
        if kernel.config.key_dir and ring.provider is not None:
            self._directory = Path(kernel.config.key_dir)
        # The retired kids the key directory keeps: trusted nowhere here from the start.
        # Those the store lacks (it went back under stopped processes) are recorded again
        # by the first refresh (:meth:`_record_lost`), as those a running process knew.
        self._kept = self._read_kept(ring)
        stored = kernel.store.retired_keys()
        self._retired = stored | self._kept
        self._unkept: frozenset[str] = frozenset()  # what could not be kept, as last logged
        ring = trusted(ring, self._retired)
        self.validator = self._validator(ring)
        self.ring = ring
        self._known_files = self._key_files()
        self._keep(stored)

    def _read_kept(self, ring: KeyRing) -> frozenset[str]:
        if self._directory is None or ring.provider is None:
            return frozenset()
        return ring.provider.retired_kids(self._directory)

    def _keep(self, retired: frozenset[str]) -> None:
        """Keep in the key directory the retired kids it does not keep yet: a database
        that loses their retirement is told again from there (:meth:`refresh`). One that
        cannot be written is logged once, and tried again at the next refresh."""
        adding = retired - self._kept
        provider = self.ring.provider
        if not adding or self._directory is None or provider is None:
            return
        try:
            provider.keep_retired(self._directory, adding)
        except (ValueError, OSError) as exc:
            if adding != self._unkept:
                self._unkept = adding
                _log.error(
                    "the key directory %s does not keep the %d signing keys retired it "
                    "lacks (%s): a database restored under stopped processes would lose "
                    "their retirement unseen",
                    self._directory,
                    len(adding),
                    exc,
                )
            return
        self._kept = self._kept | adding
        self._unkept = frozenset()

    def _validator(self, ring: KeyRing) -> Validator:
        kernel = self._kernel
        return Validator(kernel.config, ring, kernel.clock, kernel.revocations, kernel.metrics)

    def sign(self, payload: bytes, typ: str) -> str:
        """A compact JWS of ``payload`` under the active key, remembered by the validator:
        its first use in this process skips the signature check (the text is ours)."""
        return self.signer(self.ring).sign(payload, typ)

    def signer(self, ring: KeyRing) -> Signer:
        """``ring`` (one read of :attr:`ring`, for a hop signed under one ring) signing,
        each token remembered by the current validator as :meth:`sign` does. Whichever
        ring and validator a rotation leaves it with, a remembered token is used only
        while the validator's ring still holds its ``kid``."""
        return _Remembering(ring, self.validator)

    def _install(self, ring: KeyRing) -> None:
        """Make ``ring``, less every key retired, the one in use."""
        ring = trusted(ring, self._retired)
        self.validator = self._validator(ring)
        self.ring = ring

    def rotate(self, claims: Claims, ctx: RequestContext) -> tuple[str, str]:
        """Make a new signing key active; returns ``(new_kid, previous_kid)``.

        With a ``key_dir`` configured the key is made by the ring's provider there
        (:func:`rotate_key`: a file, encrypted by default, or a key inside an HSM) and
        the ring reloaded from disk, so a restart keeps it; otherwise (in-memory brokers)
        a fresh in-memory key is added. Every older key stays in the ring and the JWKS:
        tokens it signed verify until they expire. Other processes sharing the key
        directory pick the key up within a second (:meth:`refresh`).

        The ``signing_key_rotated`` event is durable before the key takes effect
        anywhere: on disk the key stays pending (no process loads it) until the event is
        stored, and is then renamed into place.

        Raises:
            Unavailable: the audit event could not be stored; nothing changed (the new
                key was destroyed before any process could load it).
        """
        config = self._kernel.config
        with self._lock:
            previous = self.ring
            provider = previous.provider
            if config.key_dir and provider is not None:
                directory = Path(config.key_dir)

                def record(key: nacl.signing.VerifyKey) -> None:
                    # Called under the directory's lock: no process adds or retires a
                    # key before the rename, so the count is the ring's after it.
                    keys = len(self._key_files() or ()) + 1
                    kid = jwk_thumbprint(bytes(key))
                    self._record(claims, ctx, kid, previous.active_kid, keys)

                with _directory_errors():
                    new_kid = rotate_key(directory, provider, before_activation=record)
                    ring = load_keyring(directory, provider)
            else:
                ring = KeyRing(nacl.signing.SigningKey.generate(), verify_keys(previous))
                new_kid = ring.active_kid
                self._record(claims, ctx, new_kid, previous.active_kid, len(ring.kids()))
            self._install(ring)
        return new_kid, previous.active_kid

    def retire(self, claims: Claims, kid: str, ctx: RequestContext) -> tuple[str, ...]:
        """Stop trusting the older key ``kid`` at once; returns the kids still trusted.

        Every token ``kid`` signed stops verifying here, its holder's and a forger's alike
        (a key read from a disk or a backup: docs/operations.md, "Compromise"); other
        processes sharing the key directory drop it within a second (:meth:`refresh`),
        resource servers at their next JWKS fetch. With a ``key_dir`` the key's file goes
        (with ``pkcs11``, its objects on the token too); in-memory brokers drop it from
        the ring. The ``signing_key_retired`` event is durable before the key is removed
        anywhere, written with the directory locked, so no rotation comes between.

        Raises:
            NotFound: no key of the ring has this ``kid`` (audited).
            Conflict: ``kid`` is the active key's: rotate first (audited).
            Unavailable: the audit event could not be stored; nothing changed.
        """
        config = self._kernel.config
        with self._lock:
            previous = self.ring
            provider = previous.provider
            about = (claims, kid, ctx)
            if kid not in previous.kids():
                raise self._refused(NotFound("no signing key has this kid"), *about)
            if kid == previous.active_kid:
                raise self._refused(
                    Conflict(
                        "the active signing key cannot be retired",
                        hint="rotate first (tasklease keys rotate), then retire the key "
                        "that signed before",
                    ),
                    *about,
                )
            if config.key_dir and provider is not None:
                directory = Path(config.key_dir)

                def record(going: list[str]) -> None:
                    # Under the directory's lock: another process may have retired the
                    # key, or rotated twice, since this ring was loaded. The files of
                    # keys retired before (recorded in the store, so trusted nowhere) may
                    # still be there: a replica's own copy, or a crash between a
                    # retirement's event and the removal of its file. They go too; any
                    # other key not in this ring is a change since it was loaded.
                    if kid not in going:
                        raise self._refused(NotFound("no signing key has this kid"), *about)
                    if any(k != kid and k not in self._retired for k in going):
                        changed = Conflict("the signing keys changed meanwhile: try again")
                        raise self._refused(changed, *about)
                    self._record_retired(claims, ctx, kid, len(previous.kids()) - 1)

                others = [k for k in previous.kids() if k != kid]
                with _directory_errors():
                    retire_keys(directory, others, provider, before_removal=record)
                    ring = load_keyring(directory, provider)
                self._known_files = self._key_files()
            else:
                ring = previous.without(kid)
                self._record_retired(claims, ctx, kid, len(ring.kids()))
            self._retired = self._retired | {kid}
            self._install(ring)
        self._keep(self._retired)
        return tuple(self.ring.kids())

    def _refused(
        self, exc: TaskleaseError, claims: Claims, kid: str, ctx: RequestContext
    ) -> TaskleaseError:
        return self._kernel.deny(
            exc,
            AuditEntry(
                "signing_key_retire_denied",
                outcome="denied",
                request_id=ctx.request_id,
                detail=f"signing key {detail_field('kid', clipped(kid, 128))} not retired: "
                f"{exc.detail} "
                f"by={claims.sub}",
            ),
        )

    def _record_retired(self, claims: Claims, ctx: RequestContext, kid: str, keys: int) -> None:
        """The retirement, durable with its event: every process reads it at its next
        :meth:`refresh` and trusts the key no more."""
        entry = AuditEntry(
            "signing_key_retired",
            request_id=ctx.request_id,
            detail=f"signing key retired kid={kid} keys={keys} by={claims.sub}",
        )
        at = self._kernel.now()

        def unit(tx: WriteTx) -> list[AuditEntry]:
            tx.put_retired_key(kid, at)
            return [entry]

        self._kernel.commit(unit)

    def _record_lost(self, kids: frozenset[str]) -> None:
        """Record again the retirements of ``kids``, which this process knew and the store
        no longer holds (a failover to a standby that missed the last commits, a restore
        under a running process), with one ``signing_key_retirements_restored`` event: a
        process started afterwards, or one whose key directory still holds such a key,
        would trust it again otherwise. Another process that recorded them first leaves
        nothing to write. A store that cannot be written leaves them for the next refresh.
        """
        at = self._kernel.now()

        def unit(tx: WriteTx) -> list[AuditEntry]:
            written = [kid for kid in sorted(kids) if tx.put_retired_key(kid, at)]
            if not written:
                return []  # another process recorded them first
            listed = ", ".join(clipped(kid, 128) for kid in written)
            return [
                AuditEntry(
                    "signing_key_retirements_restored",
                    detail=f"{len(written)} signing key retirements the database lost (it "
                    f"went back in time) recorded again: kid={listed}",
                )
            ]

        try:
            self._kernel.commit(unit)
        except Unavailable as exc:
            _log.warning("signing key retirements not recorded again yet: %s", exc.detail)
            return
        _log.warning("the store lost %d signing key retirements: recorded again", len(kids))

    def created(self, by: str, ctx: RequestContext) -> AuditEntry:
        """The audit entry of the broker's first signing key, made by ``by`` (``init``)."""
        ring = self.ring
        return AuditEntry(
            "signing_key_created",
            request_id=ctx.request_id,
            detail=f"signing key created kid={ring.active_kid} keys={len(ring.kids())} by={by}",
        )

    def _record(
        self, claims: Claims, ctx: RequestContext, new_kid: str, previous_kid: str, keys: int
    ) -> None:
        self._kernel.record(
            AuditEntry(
                "signing_key_rotated",
                request_id=ctx.request_id,
                detail=f"signing key rotated new_kid={new_kid} previous_kid={previous_kid} "
                f"keys={keys} by={claims.sub}",
            )
        )

    def refresh(self) -> bool:
        """Adopt signing keys another process sharing the key directory added or retired,
        and drop every key retired anywhere (recorded in the store).

        Cheap when nothing changed (one directory listing and one read of the retired
        kids); run by the server's housekeeping loop, so a rotation on one worker or
        replica reaches the others, and a retirement reaches every process, a replica
        with its own copy of the key directory too. A store that cannot be read leaves
        the retired kids as last read (the next refresh reads them again). Returns True
        when the ring changed.
        """
        files = self._key_files()
        provider = self.ring.provider
        try:
            retired = self._kernel.store.retired_keys()
        except Unavailable:
            retired = self._retired
        if self._retired - retired:
            self._record_lost(self._retired - retired)
        self._keep(retired)
        reload = files is not None and files != self._known_files and provider is not None
        if not reload and retired <= self._retired:
            return False
        with self._lock:
            ring = self.ring
            if reload and provider is not None:
                ring = load_keyring(Path(self._kernel.config.key_dir), provider)
                self._known_files = files
            self._retired = self._retired | retired
            ring = trusted(ring, self._retired)
            if ring.kids() == self.ring.kids() and ring.signs == self.ring.signs:
                return False
            self._install(ring)
        _log.info("signing keys reloaded: active kid %s", ring.active_kid)
        return True

    def _key_files(self) -> tuple[str, ...] | None:
        key_dir = self._kernel.config.key_dir
        if not key_dir:
            return None
        try:
            return tuple(sorted(p.name for p in Path(key_dir).glob("signing-*.pem")))
        except OSError:
            return None


@contextmanager
def _directory_errors() -> Iterator[None]:
    """A key directory that cannot be used (gone, not a directory, unreadable, a file in
    it corrupt: ``KeyStoreError`` is a ``ValueError``) is a 503 naming it, its path and
    the cause only in the reason (logged), never a 500. Our own refusals pass."""
    try:
        yield
    except TaskleaseError:
        raise
    except (ValueError, OSError) as exc:
        raise Unavailable(
            "the key directory cannot be used",
            reason=f"{type(exc).__name__}: {exc}",
            retry_after=5,
        ) from exc
