"""C2SP signed notes, checkpoints and cosignatures, byte for byte.

* **Signed note** (C2SP ``signed-note``): UTF-8 text ending in ``\\n`` (no control
  character but ``\\n``), an empty line, then signature lines ``— <name>
  <base64(keyID[4] || signature)>\\n``; the signatures start after the last empty line.
  ``keyID = SHA-256(name || 0x0A || type || public key)[:4]``; a verifier key is written
  ``<name>+<keyID, 8 lowercase hex>+<base64(type || public key)>`` (a *vkey*). Type
  ``0x01`` is an Ed25519 signature of the text, ``0x04`` an Ed25519 cosignature.
* **Checkpoint** (C2SP ``tlog-checkpoint``): the note text ``<origin>\\n<size>\\n
  <base64 root>\\n`` and optional extension lines.
* **Cosignature** (C2SP ``tlog-cosignature``, type ``0x04``): its blob is ``keyID ||
  u64 big-endian timestamp || Ed25519 signature`` of ``cosignature/v1\\ntime
  <timestamp>\\n`` followed by the whole checkpoint text.

Verifiers match a signature to a key by name *and* key ID and ignore unknown keys; a
signature by a known key that fails makes the note refused, and so does a note with no
valid signature by a known key. Standard library and PyNaCl only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

__all__ = [
    "COSIGNATURE",
    "ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "Note",
    "NoteError",
    "Signature",
    "VerifierKey",
    "checkpoint_note",
    "cosign",
    "cosignature_message",
    "key_id",
    "parse_checkpoint",
    "parse_note",
    "parse_private_key",
    "private_key_text",
    "sign_note",
    "verify_checkpoint_note",
    "verify_cosignature",
    "verify_note",
]

ED25519 = 0x01
COSIGNATURE = 0x04
MAX_SIGNATURES = 64  # the spec asks verifiers to accept at least 16
_DASH = "\u2014"  # EM DASH, bytes E2 80 94
_NAME = re.compile(r"[^\s+\x00-\x1f\x7f]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_MAX_NOTE = 1 << 20


class NoteError(ValueError):
    """A note, checkpoint, key or cosignature that is malformed or does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[
        :4
    ]


def _check_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise NoteError("a key name is non-empty, without spaces, '+' or control characters")
    return name


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key that verifies notes or cosignatures (``type`` 0x01 or 0x04)."""

    name: str
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sig_type not in (ED25519, COSIGNATURE) or len(self.public_key) != 32:
            raise NoteError("only Ed25519 keys (types 0x01 and 0x04, 32 bytes) are known")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    @property
    def vkey(self) -> str:
        """``<name>+<keyID hex>+<base64(type || key)>``."""
        blob = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Read a vkey; raise ``NoteError`` if malformed or its key ID does not match."""
        parts = vkey.strip().split("+", 2)  # the base64 may hold a '+'; the name may not
        if len(parts) != 3 or re.fullmatch(r"[0-9a-f]{8}", parts[1]) is None:
            raise NoteError("a verifier key is <name>+<8 hex>+<base64>")
        raw = _b64decode(parts[2], "the verifier key")
        if not raw:
            raise NoteError("the verifier key is empty")
        key = cls(parts[0], raw[0], raw[1:])
        if key.key_id.hex() != parts[1]:
            raise NoteError("the verifier key's ID does not match its name and key")
        return key


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: the key's name, its 4-byte ID, and what follows the ID."""

    name: str
    key_id: bytes
    blob: bytes

    @property
    def line(self) -> str:
        encoded = base64.b64encode(self.key_id + self.blob).decode("ascii")
        return f"{_DASH} {self.name} {encoded}\n"

    def by(self, key: VerifierKey) -> bool:
        return self.name == key.name and self.key_id == key.key_id


@dataclass(frozen=True, slots=True)
class Note:
    """A signed note: its text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        """The same text with ``extra`` signatures after its own (none twice)."""
        signatures = list(self.signatures)
        for signature in extra:
            if signature not in signatures:
                signatures.append(signature)
        return Note(self.text, tuple(signatures))


def _check_text(text: str) -> None:
    if not text.endswith("\n") or _CONTROL.search(text) is not None:
        raise NoteError("a note's text ends in a newline and holds no other control character")


def parse_note(raw: str | bytes) -> Note:
    """Split a signed note into its text and signatures (none verified here).

    Raise ``NoteError`` for anything but UTF-8 text, an empty line, and one or more
    well-formed signature lines (at most :data:`MAX_SIGNATURES`).
    """
    if isinstance(raw, bytes):
        if len(raw) > _MAX_NOTE:
            raise NoteError("the note is too large")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8") from None
    if len(raw) > _MAX_NOTE:
        raise NoteError("the note is too large")
    cut = raw.rfind("\n\n")
    if cut < 0:
        raise NoteError("a note has an empty line before its signatures")
    text, block = raw[: cut + 1], raw[cut + 2 :]
    _check_text(text)
    if not block.endswith("\n") or _CONTROL.search(block) is not None:
        raise NoteError("signature lines end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("the note carries too many signatures")
    signatures: list[Signature] = []
    for line in lines:
        prefix, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if prefix != _DASH or not encoded or " " in encoded:
            raise NoteError("a signature line is '— <name> <base64>'")
        blob = _b64decode(encoded, "a signature")
        if len(blob) < 5:
            raise NoteError("a signature is a key ID and at least one byte")
        signatures.append(Signature(_check_name(name), blob[:4], blob[4:]))
    return Note(text, tuple(signatures))


def sign_note(text: str, name: str, public_key: bytes, sign: Callable[[bytes], bytes]) -> Signature:
    """An Ed25519 (type 0x01) signature of ``text`` by ``sign`` (64-byte signatures)."""
    _check_text(text)
    key = VerifierKey(name, ED25519, public_key)
    signature = sign(text.encode("utf-8"))
    if len(signature) != 64:
        raise NoteError("an Ed25519 signature is 64 bytes")
    return Signature(name, key.key_id, signature)


def _verifies(key: VerifierKey, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key.public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def verify_note(note: Note, keys: Iterable[VerifierKey]) -> list[VerifierKey]:
    """The known ``keys`` (type 0x01) that signed ``note``; raise ``NoteError`` if none did,
    or if a signature by a known key does not verify."""
    known = [k for k in keys if k.sig_type == ED25519]
    signed: list[VerifierKey] = []
    message = note.text.encode("utf-8")
    for signature in note.signatures:
        for key in known:
            if not signature.by(key):
                continue
            if len(signature.blob) != 64 or not _verifies(key, message, signature.blob):
                raise NoteError(f"the signature by {key.name} does not verify")
            if key not in signed:
                signed.append(key)
    if not signed:
        raise NoteError("no signature by a known key")
    return signed


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: its origin, size and root hash (and any extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or _CONTROL.search(self.origin) or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line")
        if self.size < 0 or len(self.root) != 32:
            raise NoteError("a checkpoint has a size and a 32-byte root")

    @property
    def text(self) -> str:
        """The checkpoint's signed body: origin, size, root (base64) and extensions, one a
        line."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint from a note's text; raise ``NoteError`` if malformed."""
    _check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise NoteError("a checkpoint is an origin, a size and a root, on non-empty lines")
    origin, size, root, *extensions = lines
    if _SIZE.fullmatch(size) is None or int(size) >= 1 << 64:
        raise NoteError("a checkpoint's size is a decimal number without leading zeros")
    raw = _b64decode(root, "the checkpoint's root")
    if len(raw) != 32:
        raise NoteError("a checkpoint's root is 32 bytes")
    return Checkpoint(origin, int(size), raw, tuple(extensions))


def verify_checkpoint_note(note: Note, keys: Iterable[VerifierKey]) -> Checkpoint:
    """The checkpoint in ``note``, once a key among ``keys`` named as its origin signed it.

    C2SP ``tlog-checkpoint``: the log's key name is its origin (``checkpoint_note`` signs
    so, and witnesses look a log's keys up by it). A signature by a known key under
    another name does not make the note a checkpoint of that origin: a key of one log
    never vouches for another's. Raise ``NoteError`` if malformed or not so signed.
    """
    checkpoint = parse_checkpoint(note.text)
    keys = list(keys)
    named = [k for k in keys if k.name == checkpoint.origin]
    if keys and not named:
        names = " ".join(sorted({k.name for k in keys}))
        raise NoteError(
            f"the checkpoint's origin {checkpoint.origin} is not the log key's name ({names})"
        )
    verify_note(note, named)
    return checkpoint


def checkpoint_note(
    checkpoint: Checkpoint, public_key: bytes, sign: Callable[[bytes], bytes]
) -> Note:
    """``checkpoint`` signed by the log's key, whose name is the checkpoint's origin."""
    text = checkpoint.text
    return Note(text, (sign_note(text, checkpoint.origin, public_key, sign),))


# --- cosignatures ----------------------------------------------------------------------------


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What a cosigner signs: ``cosignature/v1``, the time, then the checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def cosign(
    checkpoint_text: str,
    name: str,
    public_key: bytes,
    timestamp: int,
    sign: Callable[[bytes], bytes],
) -> Signature:
    """A type 0x04 cosignature of a checkpoint at ``timestamp`` (POSIX seconds, > 0)."""
    parse_checkpoint(checkpoint_text)
    if not 0 < timestamp < 1 << 64:
        raise NoteError("a cosignature's timestamp is a positive 64-bit number")
    key = VerifierKey(name, COSIGNATURE, public_key)
    signature = sign(cosignature_message(checkpoint_text, timestamp))
    if len(signature) != 64:
        raise NoteError("an Ed25519 signature is 64 bytes")
    return Signature(name, key.key_id, struct.pack(">Q", timestamp) + signature)


def verify_cosignature(note: Note, key: VerifierKey) -> int | None:
    """The timestamp of ``key``'s valid cosignature of ``note``, or None if it has none.

    Raise ``NoteError`` if ``key`` cosigned it with a signature that does not verify.
    """
    if key.sig_type != COSIGNATURE:
        raise NoteError("a cosignature key has type 0x04")
    for signature in note.signatures:
        if not signature.by(key):
            continue
        if len(signature.blob) != 72:
            raise NoteError(f"the cosignature by {key.name} is malformed")
        (timestamp,) = struct.unpack(">Q", signature.blob[:8])
        message = cosignature_message(note.text, timestamp)
        if timestamp == 0 or not _verifies(key, message, signature.blob[8:]):
            raise NoteError(f"the cosignature by {key.name} does not verify")
        return int(timestamp)
    return None


# --- private keys ------------------------------------------------------------------------------


def private_key_text(name: str, sig_type: int, seed: bytes) -> str:
    """``PRIVATE+KEY+<name>+<keyID hex>+<base64(type || seed)>``, as Go's note package
    writes an Ed25519 signer key (here for type 0x01 or 0x04)."""
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    key = VerifierKey(_check_name(name), sig_type, public)
    blob = base64.b64encode(bytes([sig_type]) + seed).decode("ascii")
    return f"PRIVATE+KEY+{name}+{key.key_id.hex()}+{blob}"


def parse_private_key(text: str) -> tuple[VerifierKey, nacl.signing.SigningKey]:
    """Read :func:`private_key_text`; return the public key and the signing key."""
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a private key is PRIVATE+KEY+<name>+<8 hex>+<base64>")
    raw = _b64decode(parts[4], "the private key")
    if len(raw) != 33:
        raise NoteError("a private key holds a type byte and a 32-byte Ed25519 seed")
    signing = nacl.signing.SigningKey(raw[1:])
    key = VerifierKey(parts[2], raw[0], bytes(signing.verify_key))
    if key.key_id.hex() != parts[3]:
        raise NoteError("the private key's ID does not match its name and key")
    return key, signing
