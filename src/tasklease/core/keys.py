"""The broker's signing keys: one active key, older keys kept for verification, by ``kid``.

Rotation from day one: :func:`rotate_key` adds a new active key and keeps the old ones so
that tokens they signed still verify until they expire; :func:`retire_keys` removes old
ones once nothing they signed can be valid. The ``kid`` of a key is its RFC 7638 JWK
thumbprint, so it is stable, public, and derived from the key alone.

On disk a key is a PKCS#8 PEM file (RFC 5958; ``-----BEGIN PRIVATE KEY-----``) named
``signing-<UTC yyyymmddTHHMMSSffffff>Z-<kid[:8]>.pem``; names sort by creation time and
the newest is the active key. Files are 0600 in a 0700 directory. Key material is never
logged, printed or put into an exception message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasklease.core import _jws

__all__ = [
    "KeyRing",
    "jwk_thumbprint",
    "load_or_create_keyring",
    "retire_keys",
    "rotate_key",
]

_KEY_FILE = re.compile(r"signing-(\d{8}T\d{12})Z-([A-Za-z0-9_-]{8})\.pem")
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_PEM_HEADER = b"-----BEGIN PRIVATE KEY-----"
_MAX_KEY_FILE_BYTES = 4096
_LOCK_FILE = ".lock"


def jwk_thumbprint(public_key: bytes) -> str:
    """RFC 7638 JWK SHA-256 thumbprint of an Ed25519 public key (RFC 8037 section 2).

    SHA-256 over the exact ASCII ``{"crv":"Ed25519","kty":"OKP","x":"<base64url(key)>"}``
    (required members only, in lexicographic order, no whitespace), base64url without
    padding: 43 characters.

    Raises:
        ValueError: ``public_key`` is not 32 bytes.
    """
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    member_x = _jws.b64url_encode(bytes(public_key))
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + member_x + '"}'
    return _jws.b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


class KeyRing:
    """One active Ed25519 signing key plus verify-only keys, each found by its ``kid``.

    Only the active key's private half is held; older keys are kept as verify keys.
    ``verify_key`` has the shape ``_jws.decode`` expects of ``resolve_key``.
    """

    __slots__ = ("_active", "_active_kid", "_verify_keys")

    def __init__(
        self,
        active: nacl.signing.SigningKey,
        previous: Iterable[nacl.signing.SigningKey | nacl.signing.VerifyKey] = (),
    ) -> None:
        """``active`` signs; ``previous`` (newest first, by convention) only verify."""
        self._active = active
        self._active_kid = jwk_thumbprint(bytes(active.verify_key))
        verify_keys = {self._active_kid: active.verify_key}
        for key in previous:
            verify_key = key.verify_key if isinstance(key, nacl.signing.SigningKey) else key
            verify_keys.setdefault(jwk_thumbprint(bytes(verify_key)), verify_key)
        self._verify_keys: dict[str, nacl.signing.VerifyKey] = verify_keys

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring with one fresh in-memory key (for tests and ephemeral brokers)."""
        return cls(nacl.signing.SigningKey.generate())

    @property
    def active_kid(self) -> str:
        """The ``kid`` new tokens are signed under."""
        return self._active_kid

    def sign(self, payload: bytes, typ: str) -> str:
        """Compact JWS of ``payload`` (serialized JSON) under the active key (RFC 7515)."""
        return _jws.encode(payload, typ=typ, kid=self._active_kid, key=self._active)

    def sign_detached(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message`` by the active key (64 bytes)."""
        return _jws.sign_detached(message, self._active)

    def verify_key(self, kid: str) -> nacl.signing.VerifyKey | None:
        """The verify key for ``kid``, or None when the ring does not hold it."""
        return self._verify_keys.get(kid)

    def public_key(self, kid: str) -> bytes | None:
        """The raw 32-byte public key for ``kid``, or None."""
        key = self._verify_keys.get(kid)
        return None if key is None else bytes(key)

    def kids(self) -> list[str]:
        """Every ``kid`` the ring verifies, the active one first."""
        return list(self._verify_keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set (RFC 7517 section 5; OKP keys, RFC 8037 section 2).

        The active key comes first. Only public members are present.
        """
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _jws.b64url_encode(bytes(key)),
                    "kid": kid,
                    "use": "sig",
                    "alg": _jws.ALGORITHM,
                }
                for kid, key in self._verify_keys.items()
            ]
        }

    def __repr__(self) -> str:
        return f"KeyRing(active_kid={self._active_kid!r}, kids={len(self._verify_keys)})"


# -- on disk -------------------------------------------------------------------------


def load_or_create_keyring(directory: Path) -> KeyRing:
    """Load every key in ``directory``; create the directory and a first key when empty.

    The newest key file is the active key; the others verify only.

    Raises:
        ValueError: the directory is writable by group or others, or a key file is a
            symlink, not a regular file, not owned by this user, readable or writable by
            group or others, corrupt, not PKCS#8 Ed25519, or named for another key.
        OSError: the directory or a file could not be created or read.
    """
    _ensure_directory(directory)
    with _locked(directory):
        if not _key_files(directory):
            _write_new_key(directory)
        return _load(directory)


def rotate_key(directory: Path) -> str:
    """Write a new active signing key into ``directory`` and return its ``kid``.

    Older keys stay on disk and keep verifying after the next load. Brokers that already
    hold a :class:`KeyRing` pick the new key up when they reload.

    Raises:
        ValueError, OSError: as :func:`load_or_create_keyring`.
    """
    _ensure_directory(directory)
    with _locked(directory):
        _load(directory)  # refuse to add to a directory we would refuse to load
        return _write_new_key(directory)


def retire_keys(directory: Path, keep_kids: Collection[str]) -> list[str]:
    """Delete the key files whose ``kid`` is not in ``keep_kids``; return the removed kids.

    The active (newest) key is always kept. Retire a key only after every token it signed
    has expired.

    Raises:
        ValueError, OSError: as :func:`load_or_create_keyring`.
    """
    _ensure_directory(directory)
    with _locked(directory):
        ring = _load(directory)
        removed: list[str] = []
        for path, _ in _key_files(directory):
            kid = _read_key(path)[0]
            if kid != ring.active_kid and kid not in keep_kids:
                path.unlink()
                removed.append(kid)
        if removed:
            _fsync_directory(directory)
        return removed


def _ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    else:
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
        _fsync_directory(directory.parent)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"key directory {directory} is not a directory")
    if st.st_mode & 0o022:
        raise ValueError(f"key directory {directory} is writable by group or others")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialize creation and rotation between processes sharing the directory."""
    fd = os.open(directory / _LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # created under a strict umask, it must still open next time
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _key_files(directory: Path) -> list[tuple[Path, str]]:
    """Key files in creation order (oldest first), with their timestamps."""
    found = []
    for entry in os.scandir(directory):
        match = _KEY_FILE.fullmatch(entry.name)
        if match is not None:
            found.append((Path(entry.path), match.group(1)))
    found.sort(key=lambda item: item[0].name)
    return found


def _load(directory: Path) -> KeyRing:
    files = _key_files(directory)
    if not files:
        raise ValueError(f"no signing key in {directory}")
    keys = [_read_key(path)[1] for path, _ in files]
    return KeyRing(keys[-1], reversed(keys[:-1]))


def _read_key(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"key file {path} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"key file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise ValueError(f"key file {path} is not owned by this user")
        if st.st_mode & 0o077:
            raise ValueError(
                f"key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}; want 0600)"
            )
        data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    signing_key = _parse_pem(data, path)
    kid = jwk_thumbprint(bytes(signing_key.verify_key))
    if not path.name.endswith(f"-{kid[:8]}.pem"):
        raise ValueError(f"key file {path} does not hold the key its name says")
    return kid, signing_key


def _parse_pem(data: bytes, path: Path) -> nacl.signing.SigningKey:
    if len(data) > _MAX_KEY_FILE_BYTES or not data.lstrip().startswith(_PEM_HEADER):
        raise ValueError(f"key file {path} is not an unencrypted PKCS#8 PEM key")
    try:
        private_key: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"key file {path} is corrupt or not a PKCS#8 key") from exc
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"key file {path} is not an Ed25519 key")  # noqa: TRY004 (one error type for a bad key file)
    return nacl.signing.SigningKey(private_key.private_bytes_raw())


def _write_new_key(directory: Path) -> str:
    signing_key = nacl.signing.SigningKey.generate()
    kid = jwk_thumbprint(bytes(signing_key.verify_key))
    pem = Ed25519PrivateKey.from_private_bytes(bytes(signing_key)).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    name = f"signing-{_next_timestamp(directory)}Z-{kid[:8]}.pem"
    final = directory / name
    temporary = directory / f".{name}.tmp"
    # Write aside, then rename: a crash never leaves a half-written key under a key name.
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask, the owner must be able to read it
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        # Under the lock, with a timestamp later than every existing key's and the kid in
        # the name, `final` cannot exist yet.
        temporary.rename(final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return kid


def _next_timestamp(directory: Path) -> str:
    """Now in UTC, or just after the newest existing key if the clock went backwards."""
    now = datetime.now(UTC)
    files = _key_files(directory)
    if files:
        newest = datetime.strptime(files[-1][1], _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        if now <= newest:
            now = newest + timedelta(microseconds=1)
    return now.strftime(_TIMESTAMP_FORMAT)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
