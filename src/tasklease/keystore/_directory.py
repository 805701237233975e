"""The key directory every provider keeps, and what the providers share in it.

One file per key, named ``signing-<UTC yyyymmddTHHMMSSffffff>Z-<kid[:8]>.pem``: names sort
by creation time and the newest is the active key. What a file holds depends on the
provider, and its PEM label says which:

* ``ENCRYPTED PRIVATE KEY``: an encrypted PKCS#8 key (RFC 5958 section 3), ``file``;
* ``PRIVATE KEY``: an unencrypted PKCS#8 key, ``plaintext``;
* ``PUBLIC KEY``: the public half of a key held in a PKCS#11 token, ``pkcs11``.

Files are 0600 in a 0700 directory and are written aside, fsynced and renamed into place,
under an exclusive lock (``.lock``) that serializes every writer sharing the directory.
A rotation that must be confirmed first (audited, :meth:`DirectoryProvider.add_key`)
writes its key as ``.pending-signing-...pem``, a name no load picks up, and holds the lock
until the key is renamed into place or destroyed; so a pending file found under the lock
was left by a crash, and is destroyed, never made active.
``retired-signing-keys`` lists the kids retired that the processes using the directory
learnt (one a line, :meth:`DirectoryProvider.keep_retired`): a database that loses their
retirement (restored under stopped processes) is told again, and none of them is trusted.
:class:`DirectoryProvider` is the part of a provider that deals with all this; each
provider says how a key is made, opened and discarded.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import nacl.signing

from tasklease.localfiles import (
    NotRegularFileError,
    foreign_owner,
    fsync_directory,
    make_private_directories,
    open_regular,
)

__all__ = [
    "ENCRYPTED",
    "PKCS11",
    "PLAINTEXT",
    "DirectoryProvider",
    "KeyFile",
    "KeyStoreError",
    "ensure_directory",
    "key_files",
    "kind_of",
    "locked",
    "plaintext_refused",
    "read_key_file",
    "rewrite_key_file",
    "set_aside",
]

_KEY_FILE = re.compile(r"signing-(\d{8}T\d{12})Z-([A-Za-z0-9_-]{8})\.pem")
_PENDING = ".pending-"
_PENDING_FILE = re.compile(r"\.pending-signing-(\d{8}T\d{12})Z-[A-Za-z0-9_-]{8}\.pem")
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_MAX_KEY_FILE_BYTES = 4096
_RETIRED_FILE = "retired-signing-keys"
_RETIRED_KID = re.compile(r"[A-Za-z0-9_-]{43}")  # a JWK thumbprint (SHA-256, base64url)
_MAX_RETIRED_BYTES = 1 << 20
_LOCK_FILE = ".lock"

# The three kinds of key file, named after the provider that reads them.
ENCRYPTED = "file"
PLAINTEXT = "plaintext"
PKCS11 = "pkcs11"
_LABELS = {
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----": ENCRYPTED,
    b"-----BEGIN PRIVATE KEY-----": PLAINTEXT,
    b"-----BEGIN PUBLIC KEY-----": PKCS11,
}


class KeyStoreError(ValueError):
    """A signing key that cannot be read, written or used.

    The message names the file or setting and says why (and what to do, where there is
    something to do); it never carries key material, passphrases or PINs.
    """


@dataclass(frozen=True, slots=True)
class KeyFile:
    """One key file: its path, creation timestamp and the kid prefix its name carries."""

    path: Path
    timestamp: str
    kid_prefix: str


def kind_of(data: bytes) -> str | None:
    """The provider a key file's contents belong to, by PEM label; None if unknown."""
    head = data.lstrip()
    for label, kind in _LABELS.items():
        if head.startswith(label):
            return kind
    return None


def ensure_directory(
    directory: Path,
    *,
    what: str = "key directory",
    risk: str = "its owner could delete keys, bringing a rotated-away key back",
) -> None:
    """Create ``directory`` and its missing parents (0700 each) if needed; refuse one
    that others can write to, or that another user owns (root aside): its owner may
    delete what it holds, and deleting the newest signing key makes a rotated-away key
    the active one again, deleting an anchor hides a restored database, deleting a
    witness's state makes it cosign a fork. ``what`` names the directory in the error,
    ``risk`` says what its owner could do.

    Raises:
        KeyStoreError: not a directory, owned by another user, or writable by group or
            others.
    """
    # Each directory made on the way (``<key_dir>/tenants`` for a tenant's keys) is 0700
    # too: mkdir's parents get the umask's mode, and one that others may write lets them
    # rename a key directory away or put a link to another in its place.
    make_private_directories(directory)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise KeyStoreError(f"{what} {directory} is not a directory")
    if foreign_owner(st):
        raise KeyStoreError(
            f"{what} {directory} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()}): {risk}; chown it, or serve as its owner"
        )
    if st.st_mode & 0o022:
        raise KeyStoreError(f"{what} {directory} is writable by group or others")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialize creation, rotation and rewriting between processes sharing the directory."""
    path = directory / _LOCK_FILE
    try:  # never through a link: opening with O_CREAT would create its target
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyStoreError(f"lock file {path} is a symlink") from None
        raise
    try:
        os.fchmod(fd, 0o600)  # created under a strict umask, it must still open next time
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def key_files(directory: Path) -> list[KeyFile]:
    """Key files in creation order (oldest first); other names are ignored."""
    found = []
    for entry in os.scandir(directory):
        match = _KEY_FILE.fullmatch(entry.name)
        if match is not None:
            found.append(KeyFile(Path(entry.path), match.group(1), match.group(2)))
    found.sort(key=lambda item: item.path.name)
    return found


def read_private_file(path: Path, label: str, limit: int, fix: str = "") -> bytes:
    """Up to ``limit + 1`` bytes of a file only this user can read or write.

    Raises:
        KeyStoreError: ``label`` (which names the file) is a symlink, not a regular file,
            owned by another user, or accessible by group or others (``fix`` is appended
            to that message).
        OSError: it could not be opened or read (FileNotFoundError when missing).
    """
    try:
        # Never waits: a named pipe here is refused, not read once a writer comes.
        fd = open_regular(path, follow_symlinks=False)
    except NotRegularFileError as exc:
        raise KeyStoreError(f"{label} is {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyStoreError(f"{label} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise KeyStoreError(f"{label} is not owned by this user")
        if st.st_mode & 0o077:
            raise KeyStoreError(
                f"{label} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600){fix}"
            )
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    """The contents of a key file that only this user can read or write.

    Raises:
        KeyStoreError: a symlink, not a regular file, owned by another user, accessible
            by group or others, or too large to be a key.
        OSError: it could not be read.
    """
    data = read_private_file(path, f"key file {path}", _MAX_KEY_FILE_BYTES)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyStoreError(f"key file {path} is too large to be a key")
    return data


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file ``path`` and fsync it."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, the owner must be able to read it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_aside(final: Path, data: bytes) -> None:
    """Write ``data`` to a 0600 file beside ``final``, fsync it, rename it into place.

    A crash never leaves a half-written key under a key name.
    """
    temporary = final.with_name(f".{final.name}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash; we hold the directory lock
    try:
        _write_new(temporary, data)
        temporary.rename(final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(final.parent)


def rewrite_key_file(path: Path, data: bytes) -> None:
    """Replace a key file's contents atomically (same name: same key, same place in order).

    Call it under :func:`locked`.
    """
    _write_aside(path, data)


def set_aside(path: Path, name: str) -> None:
    """Rename ``path`` to ``name`` in its directory (replacing a file of that name), durably.

    Call it under :func:`locked`.
    """
    path.replace(path.with_name(name))
    fsync_directory(path.parent)


def _next_timestamp(directory: Path) -> str:
    """Now in UTC, or just after the newest existing key if the clock went backwards."""
    now = datetime.now(UTC)
    files = key_files(directory)
    if files:
        newest = datetime.strptime(files[-1].timestamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        if now <= newest:
            now = newest + timedelta(microseconds=1)
    return now.strftime(_TIMESTAMP_FORMAT)


def _verify_key_of(key: Any) -> nacl.signing.VerifyKey:
    """The verify key of what :meth:`DirectoryProvider._open` gives as the active key."""
    if isinstance(key, nacl.signing.SigningKey):
        return key.verify_key
    return nacl.signing.VerifyKey(key.public_key)  # a Signer (an HSM's key)


def plaintext_refused(directory: Path, count: int, provider: str) -> KeyStoreError:
    keys = "an unencrypted signing key" if count == 1 else f"{count} unencrypted signing keys"
    return KeyStoreError(
        f"the key directory {directory} holds {keys} and key_provider is {provider!r}: "
        "refusing to use plaintext keys without an explicit setting. Stop the broker and "
        "encrypt them with `tasklease keys encrypt` (same data directory and configuration), "
        'or keep them in plaintext by setting key_provider = "plaintext" '
        "(docs/operations.md, Keys)"
    )


def _wrong_kind(path: Path, found: str | None, provider: str) -> KeyStoreError:
    if found is None:
        return KeyStoreError(f"key file {path} is not a PKCS#8 or public-key PEM file")
    what = {
        ENCRYPTED: 'an encrypted signing key (key_provider = "file")',
        PLAINTEXT: 'an unencrypted signing key (key_provider = "plaintext")',
        PKCS11: 'the public half of a key held in a PKCS#11 token (key_provider = "pkcs11")',
    }[found]
    return KeyStoreError(f"key file {path} is {what}, but key_provider is {provider!r}")


class DirectoryProvider(abc.ABC):
    """What every provider does with the key directory: list, lock, order, name, retire.

    Subclasses say how a key is opened (:meth:`_open`), made (:meth:`_create`) and
    discarded (:meth:`_discard`); ``name`` is the ``key_provider`` value and the kind of
    key file they read.
    """

    name: ClassVar[str]

    def load_keys(
        self, directory: Path, *, create: bool = False
    ) -> tuple[Any, list[nacl.signing.VerifyKey]]:
        """The active key and the older keys' verify keys, newest first.

        With ``create``, makes the directory and the first key when it holds none.

        Raises:
            KeyStoreError: a key file is unsafe, of another provider, corrupt or named
                for another key, or the key cannot be opened (see the subclass); without
                ``create``, the directory does not exist or holds no key.
            OSError: the directory or a file could not be created or read.
        """
        if not create and not directory.exists():
            raise KeyStoreError(f"the key directory {directory} does not exist")
        ensure_directory(directory)
        with locked(directory):
            self._clear_pending(directory)
            if create and not key_files(directory):
                self._add(directory)
            return self._load(directory)

    def add_key(
        self,
        directory: Path,
        *,
        before_activation: Callable[[nacl.signing.VerifyKey], None] | None = None,
    ) -> str:
        """Create a new active key; return its ``kid``. Older keys stay.

        With ``before_activation`` the key is written as a pending file (no load picks it
        up) and opened as the active key would be; ``before_activation`` gets its verify
        key, and only when it returns is the file renamed into place. If it (or anything
        before the rename) raises, the key is destroyed and nothing changed. The
        directory stays locked throughout, so no other rotation comes between.

        Raises:
            KeyStoreError, OSError: as :meth:`load_keys`; anything ``before_activation``
                raises.
        """
        ensure_directory(directory)
        with locked(directory):
            self._clear_pending(directory)
            self._load(directory)  # refuse to add to a directory we would refuse to load
            if before_activation is None:
                return self._add(directory)
            return self._add_confirmed(directory, before_activation)

    def retire_keys(
        self,
        directory: Path,
        keep_kids: Collection[str],
        *,
        before_removal: Callable[[list[str]], None] | None = None,
    ) -> list[str]:
        """Remove the keys whose ``kid`` is not in ``keep_kids``; the active key stays.

        Returns the removed kids. ``before_removal``, when given, gets the kids about to
        be removed (in the directory's lock, before any is) and may refuse by raising:
        then nothing is removed. The directory stays locked throughout, so no rotation
        comes between.

        Raises:
            KeyStoreError, OSError: as :meth:`load_keys`; anything ``before_removal``
                raises.
        """
        ensure_directory(directory)
        with locked(directory):
            self._load(directory)
            files = key_files(directory)
            going = [
                (entry, kid)
                for entry in files[:-1]
                if (kid := self._kid_of(entry, read_key_file(entry.path))) not in keep_kids
            ]
            if before_removal is not None:
                before_removal([kid for _, kid in going])
            for entry, kid in going:
                self._discard(entry, kid)
                entry.path.unlink()
            if going:
                fsync_directory(directory)
            return [kid for _, kid in going]

    def retired_kids(self, directory: Path) -> frozenset[str]:
        """The kids kept as retired in ``directory`` (:meth:`keep_retired`); none when it
        keeps none.

        Raises:
            KeyStoreError: the file is unsafe (a link, not this user's, readable or
                writable by others), too large, or holds a line that is not a kid.
            OSError: it could not be read.
        """
        path = directory / _RETIRED_FILE
        label = f"retired keys file {path}"
        try:
            data = read_private_file(path, label, _MAX_RETIRED_BYTES, fix=f": chmod 600 {path}")
        except FileNotFoundError:
            return frozenset()
        if len(data) > _MAX_RETIRED_BYTES:
            raise KeyStoreError(f"{label} is too large")
        kids = data.decode("ascii", "replace").split("\n")
        if kids and kids[-1] == "":
            kids.pop()
        if not all(_RETIRED_KID.fullmatch(kid) for kid in kids):
            raise KeyStoreError(f"{label} holds a line that is not a key's kid")
        return frozenset(kids)

    def keep_retired(self, directory: Path, kids: Collection[str]) -> None:
        """Add ``kids`` (retired keys: never trusted again) to those kept in ``directory``,
        under its lock, written aside and renamed into place; what is not a kid is left
        out (nothing a key of the directory could be named by).

        Raises:
            KeyStoreError, OSError: as :meth:`retired_kids`, or the file could not be
                written.
        """
        ensure_directory(directory)
        with locked(directory):
            kept = self.retired_kids(directory)
            adding = {kid for kid in kids if _RETIRED_KID.fullmatch(kid)} - kept
            if not adding:
                return
            text = "".join(f"{kid}\n" for kid in sorted(kept | adding))
            rewrite_key_file(directory / _RETIRED_FILE, text.encode("ascii"))

    # -- shared steps ------------------------------------------------------------------

    def _load(self, directory: Path) -> tuple[Any, list[nacl.signing.VerifyKey]]:
        files = key_files(directory)
        if not files:
            raise KeyStoreError(f"no signing key in {directory}")
        contents = [read_key_file(entry.path) for entry in files]
        # Every file is of this provider's kind, or nothing is loaded: first the unsafe
        # downgrade (plaintext keys under an encrypting provider), named with its remedy.
        foreign = [
            (entry, kind)
            for entry, kind in zip(files, map(kind_of, contents), strict=True)
            if kind != self.name
        ]
        if foreign:
            plaintext = [entry for entry, kind in foreign if kind == PLAINTEXT]
            if plaintext and self.name == ENCRYPTED:
                raise plaintext_refused(directory, len(plaintext), self.name)
            entry, kind = foreign[0]
            raise _wrong_kind(entry.path, kind, self.name)
        newest = len(files) - 1
        active: Any = None
        older: list[nacl.signing.VerifyKey] = []
        for index in range(newest, -1, -1):
            entry, data = files[index], contents[index]
            key = self._open(entry, data, active=index == newest)
            if index == newest:
                active = key
            else:
                older.append(key)
        return active, older

    def _add(self, directory: Path) -> str:
        timestamp = _next_timestamp(directory)
        kid, data = self._create(directory, timestamp)
        final = directory / f"signing-{timestamp}Z-{kid[:8]}.pem"
        # Under the lock, with a timestamp later than every existing key's and the kid in
        # the name, `final` cannot exist yet.
        try:
            _write_aside(final, data)
        except BaseException:
            self._abandon(kid, timestamp)
            raise
        return kid

    def _add_confirmed(
        self, directory: Path, before_activation: Callable[[nacl.signing.VerifyKey], None]
    ) -> str:
        timestamp = _next_timestamp(directory)
        kid, data = self._create(directory, timestamp)
        final = directory / f"signing-{timestamp}Z-{kid[:8]}.pem"
        pending = directory / f"{_PENDING}{final.name}"
        try:
            _write_new(pending, data)
            key = self._open(KeyFile(pending, timestamp, kid[:8]), data, active=True)
            before_activation(_verify_key_of(key))
            # The one step that makes the key active: before it, no process sees the key;
            # after it, the caller's audit event for it is durable.
            pending.rename(final)
        except BaseException:
            # The first error is the one to report. Should destroying the key fail too,
            # the pending file stays (ignored) and the next load destroys it.
            with contextlib.suppress(Exception):
                self._drop_pending(pending, timestamp)
            raise
        fsync_directory(directory)
        return kid

    def _drop_pending(self, pending: Path, timestamp: str) -> None:
        """Destroy a key that never became active: what :meth:`_create` made, its file."""
        self._abandon("", timestamp)
        pending.unlink(missing_ok=True)

    def _clear_pending(self, directory: Path) -> None:
        """Destroy the keys a crash left pending (call it under :func:`locked`).

        Their process died before the rename: whether or not their audit event was
        written, none may become active now (the old key stays; an event written names a
        key that never signed). Best effort: every load ignores a pending file anyway.
        """
        with os.scandir(directory) as entries:
            stale = [
                (Path(entry.path), match.group(1))
                for entry in entries
                if (match := _PENDING_FILE.fullmatch(entry.name)) is not None
            ]
        for path, timestamp in stale:
            with contextlib.suppress(Exception):
                self._drop_pending(path, timestamp)

    @staticmethod
    def check_name(entry: KeyFile, kid: str) -> None:
        """Refuse a file whose name carries another key's kid prefix."""
        if entry.kid_prefix != kid[:8]:
            raise KeyStoreError(f"key file {entry.path} does not hold the key its name says")

    # -- what each provider says ---------------------------------------------------------

    @abc.abstractmethod
    def _open(self, entry: KeyFile, data: bytes, *, active: bool) -> Any:
        """The active key (``active``) or a verify key, from a file of this kind."""

    @abc.abstractmethod
    def _kid_of(self, entry: KeyFile, data: bytes) -> str:
        """The kid of the key in a file of this kind."""

    @abc.abstractmethod
    def _create(self, directory: Path, timestamp: str) -> tuple[str, bytes]:
        """A new key: its kid and the contents of its file."""

    def _discard(self, entry: KeyFile, kid: str) -> None:  # noqa: B027 - optional hook
        """Undo what :meth:`_create` made outside the directory (retirement)."""

    def _abandon(self, kid: str, timestamp: str) -> None:  # noqa: B027 - optional hook
        """Undo what :meth:`_create` made outside the directory (its file was not written)."""
