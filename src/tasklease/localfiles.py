"""Opening a local file that the broker or the CLI reads: never a pipe that blocks.

``open`` of a named pipe (FIFO) for reading waits until some process opens it for
writing: a FIFO where the configuration, a key passphrase or a TLS file is expected left
``serve`` or ``doctor`` waiting for ever, without a word. :func:`open_regular` opens
without waiting (``O_NONBLOCK``: a FIFO opens at once, writer or not), then asks the
open file (``fstat``, so no other file can be swapped in between) what it is, and refuses
anything but a regular file with an ``OSError`` whose ``strerror`` says what it is
instead. A caller's existing handler for a file it cannot read (``exc.strerror``) then
says so in one line.

Used by ``settings.load_config`` (the configuration file), ``keystore``'s private files
(keys, the key passphrase, the nonce secret), ``http.tls`` (the TLS files, which
OpenSSL opens itself: :func:`check_regular` first), ``policyfiles``, ``doctor``, and the
CLI for every file named on its command line (:func:`read_regular` for those that hold
no secret).

:func:`make_private_directories` makes a directory the broker or the CLI keeps state in
(the data directory, a database's, a key directory, a witness's) and every missing
directory on the way, each 0700 whatever the umask: one that others may write lets them
rename what it holds away, or put a link to an older copy in its place.

:func:`foreign_owner` is the one test of who owns a file or directory tasklease trusts
(the configuration, policies, key directories, the CLI's profile, key file and cached
sessions): one owned by a user other than this one or root is that user's to change or to
have chosen, whatever its mode says.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = [
    "NotRegularFileError",
    "check_regular",
    "foreign_owner",
    "fsync_directory",
    "make_private_directories",
    "open_regular",
    "read_regular",
]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """The path names something other than a regular file (``strerror`` says what)."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def open_regular(
    path: str | os.PathLike[str], *, follow_symlinks: bool = True, devices: bool = False
) -> int:
    """A blocking, close-on-exec, read-only descriptor on ``path`` if it is a regular
    file (a character device too, with ``devices``: ``/dev/null`` read as an empty file).

    Raises:
        NotRegularFileError: ``path`` is a directory, a named pipe, a device or a socket
            (``strerror``: "not a regular file: a named pipe", ...).
        OSError: it cannot be opened (``ELOOP`` for a symbolic link when not
            ``follow_symlinks``; ``ENXIO`` for a socket).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (devices and stat.S_ISCHR(mode))):
            raise NotRegularFileError(
                errno.EINVAL, f"not a regular file: {_kind(mode)}", os.fspath(path)
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (its link followed), at most ``limit``: how
    the CLI reads every file named on its command line that holds no secret (a request, a
    schema, a bundle, a checkpoint, a public key), so that a named pipe where one is
    expected is one error line, never a wait for a writer.

    Raises:
        NotRegularFileError, OSError: as :func:`open_regular`, or the read failed.
    """
    with open(open_regular(path), "rb") as file:
        return file.read() if limit is None else file.read(limit)


def check_regular(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` unless it is a regular file that this process may open, for a file
    that a library opens by name afterwards (OpenSSL's ``load_cert_chain``).

    Raises:
        NotRegularFileError, OSError: as :func:`open_regular`.
    """
    os.close(open_regular(Path(path)))


def foreign_owner(st: os.stat_result) -> bool:
    """Whether the file ``st`` describes is owned by a user other than this process's
    (effective) user or root: whoever owns it may change it, or chose what it holds."""
    return st.st_uid not in (os.geteuid(), 0)


def make_private_directories(path: str | os.PathLike[str]) -> None:
    """Make ``path`` and each missing directory above it, 0700 whatever the umask (an
    existing one is left as it is: its owner chose its mode).

    ``mkdir(parents=True)`` gives the directories it makes on the way the umask's mode
    (0777 under umask 000), whatever mode it is asked for the last.

    Raises:
        OSError: one could not be made (``FileExistsError`` is not raised for one made
            meanwhile by another process).
    """
    missing = []
    ancestor = Path(path)
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another process, which sets its mode
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        fsync_directory(directory.parent)


def fsync_directory(directory: Path) -> None:
    """Make ``directory``'s entries (a file made, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
