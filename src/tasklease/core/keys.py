"""The broker's signing keys: one active key, older keys kept for verification, by ``kid``.

Rotation from day one: a key provider adds a new active key and keeps the old ones so that
tokens they signed still verify until they expire, and retires old ones once nothing
they signed can be valid. The ``kid`` of a key is its RFC 7638 JWK thumbprint, so it is
stable, public, and derived from the key alone.

Where keys live and how they are protected is a *key provider*'s business
(:class:`KeyProvider`; the implementations are in :mod:`tasklease.keystore`: encrypted
PKCS#8 files, a PKCS#11 token, or, by explicit choice only, plaintext files). The ring
asks of its active key only what :class:`Signer` describes, except that a PyNaCl
``SigningKey`` held in memory (a decrypted file key) is used directly, so that signing
costs what it always did. Key material is never logged, printed or put into an
exception message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import NamedTuple, Protocol, cast

import nacl.signing

from tasklease.core.errors import Unavailable
from tasklease.rules import jws as _jws

__all__ = [
    "KeyProvider",
    "KeyRing",
    "Signer",
    "jwk_thumbprint",
    "load_keyring",
    "load_or_create_keyring",
    "retire_keys",
    "rotate_key",
]


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


class Signer(Protocol):
    """An Ed25519 private key the ring may use but need not hold (an HSM's, for example)."""

    @property
    def kid(self) -> str:
        """The RFC 7638 thumbprint of :attr:`public_key`."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (RFC 8032 section 5.1.6).

        A signer whose key can be away (an HSM's) may also have ``signing_problem()``
        (why it does not sign now, "" when it does; no I/O) and ``recover()`` (look for
        its key again; may block): :meth:`KeyRing.signing_problem` and
        :meth:`KeyRing.recover_signing` use them when it has.
        """


ActiveKey = nacl.signing.SigningKey | Signer
"""What a ring signs with: a key in memory, or a :class:`Signer`."""


class KeyProvider(Protocol):
    """Where a broker's signing keys live and how they are protected.

    Every method takes the key directory: file providers keep the keys there; others
    keep there what is not secret (public keys, in key order) and the lock that
    serializes writers. Implementations: :mod:`tasklease.keystore`.
    """

    @property
    def name(self) -> str:
        """``file``, ``pkcs11`` or ``plaintext``: the ``key_provider`` setting it serves."""

    def describe(self, directory: Path) -> str:
        """One line for operators: where the keys are and where their secret comes from.

        Never the secret itself.
        """

    def load_keys(
        self, directory: Path, *, create: bool = False
    ) -> tuple[ActiveKey, list[nacl.signing.VerifyKey]]:
        """The active key and the older keys' verify keys (newest first).

        With ``create``, makes the directory and the first key when it holds none;
        without, a missing directory or one without keys raises ``ValueError``.

        Raises:
            ValueError: a key cannot be read or used; the message says which and why.
            OSError: the directory or a file could not be created or read.
        """

    def add_key(
        self,
        directory: Path,
        *,
        before_activation: Callable[[nacl.signing.VerifyKey], None] | None = None,
    ) -> str:
        """Create a new active key and return its ``kid``; older keys stay.

        With ``before_activation``, the new key is first made and kept where no load
        finds it (every writer sharing the directory waits meanwhile), and checked to
        open; ``before_activation`` is called with its verify key, and only when it
        returns is the key put in place as the active key. Whatever it raises is raised
        after the key is destroyed: nothing changed. A key left pending by a crash is
        destroyed by the next load or rotation, never made active.

        Raises:
            ValueError, OSError: as :meth:`load_keys`; anything ``before_activation`` raises.
        """

    def retire_keys(
        self,
        directory: Path,
        keep_kids: Collection[str],
        *,
        before_removal: Callable[[list[str]], None] | None = None,
    ) -> list[str]:
        """Remove the keys whose ``kid`` is not in ``keep_kids``, never the active key.

        Returns the removed kids. ``before_removal`` gets them first, with no other writer
        in the directory, and may refuse by raising: then nothing is removed.

        Raises:
            ValueError, OSError: as :meth:`load_keys`; anything ``before_removal`` raises.
        """

    def retired_kids(self, directory: Path) -> frozenset[str]:
        """The kids kept as retired in ``directory`` (:meth:`keep_retired`).

        Raises:
            ValueError: what is kept is unsafe or not a list of kids.
            OSError: it could not be read.
        """

    def keep_retired(self, directory: Path, kids: Collection[str]) -> None:
        """Keep ``kids`` as retired in ``directory``, beside those kept already: the keys
        they name are never trusted again by a process using it, and a database that lost
        their retirement is told again (``core.signing``).

        Raises:
            ValueError, OSError: as :meth:`retired_kids`, or they could not be kept.
        """


class _Signature(NamedTuple):
    signature: bytes


class _SignerAsKey:
    """A :class:`Signer` in the shape the JWS codec signs with (``sign(m).signature``)."""

    __slots__ = ("_signer",)

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def sign(self, message: bytes) -> _Signature:
        signature = self._signer.sign(message)
        if len(signature) != 64:
            raise ValueError("the signer returned a malformed Ed25519 signature")
        return _Signature(signature)

    def problem(self) -> str:
        problem = getattr(self._signer, "signing_problem", None)
        return str(problem()) if problem is not None else ""

    def recover(self) -> None:
        recover = getattr(self._signer, "recover", None)
        if recover is not None:
            recover()


class KeyRing:
    """One active Ed25519 signing key plus verify-only keys, each found by its ``kid``.

    Only the active key can sign; older keys are kept as verify keys. ``verify_key`` has
    the shape ``_jws.decode`` expects of ``resolve_key``. ``provider`` is the key provider
    the ring was loaded from (None for rings built in memory): rotation and reloading
    go through it, with the same secrets.
    """

    __slots__ = ("_active", "_active_kid", "_verify_keys", "provider")

    def __init__(
        self,
        active: ActiveKey,
        previous: Iterable[nacl.signing.SigningKey | nacl.signing.VerifyKey | Signer] = (),
        *,
        provider: KeyProvider | None = None,
    ) -> None:
        """``active`` signs; ``previous`` (newest first, by convention) only verify.

        Raises:
            ValueError: a :class:`Signer`'s ``kid`` is not the thumbprint of its key.
        """
        if isinstance(active, nacl.signing.SigningKey):
            # The hot path: the codec calls PyNaCl directly, as before providers existed.
            self._active: nacl.signing.SigningKey = active
            active_verify = active.verify_key
        else:
            # The codec asks of its key only ``sign(message).signature``, which the adapter
            # gives (tests/keystore check a Signer's tokens verify).
            self._active = cast("nacl.signing.SigningKey", _SignerAsKey(active))
            active_verify = nacl.signing.VerifyKey(active.public_key)
        self._active_kid = jwk_thumbprint(bytes(active_verify))
        if not isinstance(active, nacl.signing.SigningKey) and active.kid != self._active_kid:
            raise ValueError("the signer's kid is not the thumbprint of its public key")
        verify_keys = {self._active_kid: active_verify}
        for key in previous:
            verify_key = _verify_key_of(key)
            verify_keys.setdefault(jwk_thumbprint(bytes(verify_key)), verify_key)
        self._verify_keys: dict[str, nacl.signing.VerifyKey] = verify_keys
        self.provider = provider

    def without(self, kid: str) -> KeyRing:
        """This ring less the verify-only key ``kid`` (an in-memory ring's retirement).

        Raises:
            ValueError: ``kid`` is the active key's.
        """
        if kid == self._active_kid:
            raise ValueError("the active key cannot be removed from its ring")
        ring = object.__new__(KeyRing)
        ring._active, ring._active_kid = self._active, self._active_kid
        ring._verify_keys = {k: v for k, v in self._verify_keys.items() if k != kid}
        ring.provider = self.provider
        return ring

    def stopped(self) -> KeyRing:
        """This ring with its active key retired (elsewhere: a replica whose copy of the
        key directory lacks the key that followed it): it verifies with its other keys
        only and signs nothing (:class:`~tasklease.core.errors.Unavailable`)."""
        ring = object.__new__(_StoppedRing)
        ring._active, ring._active_kid = self._active, self._active_kid
        ring._verify_keys = {k: v for k, v in self._verify_keys.items() if k != self._active_kid}
        ring.provider = self.provider
        return ring

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring with one fresh in-memory key (for tests and ephemeral brokers)."""
        return cls(nacl.signing.SigningKey.generate())

    @property
    def active_kid(self) -> str:
        """The ``kid`` new tokens are signed under."""
        return self._active_kid

    @property
    def signs(self) -> bool:
        """False for a ring whose active key was retired (:meth:`stopped`)."""
        return type(self) is KeyRing

    def sign(self, payload: bytes, typ: str) -> str:
        """Compact JWS of ``payload`` (serialized JSON) under the active key (RFC 7515)."""
        return _jws.encode(payload, typ=typ, kid=self._active_kid, key=self._active)

    def sign_detached(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message`` by the active key (64 bytes)."""
        return _jws.sign_detached(message, self._active)

    def signing_problem(self) -> str:
        """Why the active key does not sign now, in words safe to show; "" when nothing
        says so. Asks no token: what the key's signer last found (an HSM's key lost to a
        failed signature and not found again), for readiness."""
        active = self._active
        return active.problem() if isinstance(active, _SignerAsKey) else ""

    def recover_signing(self) -> None:
        """Have the active key's signer look for a lost key again (may block on its token;
        at most once a pause). Nothing for a key in memory."""
        active = self._active
        if isinstance(active, _SignerAsKey):
            active.recover()

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


def _verify_key_of(
    key: nacl.signing.SigningKey | nacl.signing.VerifyKey | Signer,
) -> nacl.signing.VerifyKey:
    if isinstance(key, nacl.signing.SigningKey):
        return key.verify_key
    if isinstance(key, nacl.signing.VerifyKey):
        return key
    return nacl.signing.VerifyKey(key.public_key)


# -- through a provider ---------------------------------------------------------------
#
# The broker loads and rotates its keys with the provider its configuration names (built
# outside the core, by ``tasklease.keystore.open_key_provider``); the ring remembers it,
# so rotation and reloading go on using it, with its secrets.


def load_keyring(directory: Path, provider: KeyProvider) -> KeyRing:
    """Load every key in ``directory`` through ``provider``; never create one.

    The newest key is the active key; the others verify only. A broker opens its keys
    this way: only ``tasklease init`` makes a broker's first key (docs/decisions.md 145).

    Raises:
        ValueError: the directory does not exist or holds no key, or a key cannot be read
            or used (the message says which and why: a file readable by others, a wrong
            passphrase, plaintext keys under an encrypting provider, a token that does
            not hold the key, ...).
        OSError: a file could not be read.
    """
    active, previous = provider.load_keys(directory)
    return KeyRing(active, previous, provider=provider)


def load_or_create_keyring(directory: Path, provider: KeyProvider) -> KeyRing:
    """:func:`load_keyring`, but a missing or empty ``directory`` gets a first key.

    For what makes keys on purpose: ``tasklease init``, a new tenant, a rotation's reload
    and brokers built for tests.

    Raises:
        ValueError: as :func:`load_keyring`, but for a missing key.
        OSError: the directory or a file could not be created or read.
    """
    active, previous = provider.load_keys(directory, create=True)
    return KeyRing(active, previous, provider=provider)


def rotate_key(
    directory: Path,
    provider: KeyProvider,
    *,
    before_activation: Callable[[nacl.signing.VerifyKey], None] | None = None,
) -> str:
    """Create a new active signing key through ``provider`` and return its ``kid``.

    Older keys stay and keep verifying after the next load. Brokers that already hold a
    :class:`KeyRing` pick the new key up when they reload. ``before_activation`` (the
    broker records the rotation's audit event there) runs before the key takes effect,
    and a key it refuses by raising never does (:meth:`KeyProvider.add_key`).

    Raises:
        ValueError, OSError: as :func:`load_or_create_keyring`; anything
            ``before_activation`` raises.
    """
    return provider.add_key(directory, before_activation=before_activation)


def retire_keys(
    directory: Path,
    keep_kids: Collection[str],
    provider: KeyProvider,
    *,
    before_removal: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Remove the keys whose ``kid`` is not in ``keep_kids``; return the removed kids.

    The active (newest) key is always kept. Every token a removed key signed stops
    verifying, its holder's and a forger's alike. ``before_removal`` as in
    :meth:`KeyProvider.retire_keys`.

    Raises:
        ValueError, OSError: as :func:`load_or_create_keyring`; anything
            ``before_removal`` raises.
    """
    return provider.retire_keys(directory, keep_kids, before_removal=before_removal)


class _StoppedRing(KeyRing):
    """:meth:`KeyRing.stopped`: signing refused, the retired active key not verified."""

    __slots__ = ()

    def sign(self, payload: bytes, typ: str) -> str:
        raise _signing_stopped()

    def sign_detached(self, message: bytes) -> bytes:
        raise _signing_stopped()

    def signing_problem(self) -> str:
        return _signing_stopped().detail

    def recover_signing(self) -> None:
        return None  # the next key refresh ends it, once the key directory holds the new key


def _signing_stopped() -> Unavailable:
    return Unavailable(
        "this broker's signing key was retired; its key directory lacks the key that replaced it",
        reason="signing key retired elsewhere: copy the key directory to this process",
        retry_after=5,
    )
