"""The ``pkcs11`` key provider: signing keys generated and used inside an HSM.

Keys are Ed25519 key pairs made on the token (``CKM_EC_EDWARDS_KEY_PAIR_GEN``, curve
parameters the RFC 8410 OID) with the private half ``CKA_SENSITIVE`` and not
``CKA_EXTRACTABLE``: it never leaves the token, and every signature is a ``CKM_EDDSA``
operation there (PKCS#11 3.0 section 2.3.14). Both halves are labelled
``<pkcs11_key_label><creation timestamp>Z``.

The key directory keeps what is not secret: per key, its public half as a ``PUBLIC KEY``
PEM file, named as every provider names its keys. That gives the keys their order (the
newest is active), lets the JWKS hold older keys without asking the token, lets processes
sharing the directory see a rotation by listing it, and keeps two deployments that share
a token from taking each other's keys. At load the active key signs a test message
that its public half must verify, so a file cannot claim a token key it does not match.

Needs the ``python-pkcs11`` package (the ``hsm`` extra), imported when a provider is
made, so that tasklease imports without it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tasklease.core.errors import Unavailable
from tasklease.keystore._directory import PKCS11, DirectoryProvider, KeyFile, KeyStoreError
from tasklease.rules.jws import jwk_thumbprint

if TYPE_CHECKING:
    import pkcs11

__all__ = ["Pkcs11KeyProvider", "Pkcs11Signer"]

# DER of the OID 1.3.101.112 (id-Ed25519, RFC 8410): CKA_EC_PARAMS of an Ed25519 key.
_ED25519_PARAMS = bytes.fromhex("06032b6570")
_SELF_TEST = b"tasklease: does this token key match its public key file?"
# After a failed signature, the key is looked for again at most this often (seconds).
_RETRY_PAUSE = 1.0

_log = logging.getLogger("tasklease.keystore")


class Pkcs11Signer:
    """An Ed25519 key held in a PKCS#11 token: signs with ``CKM_EDDSA``, on the token.

    Satisfies :class:`tasklease.core.keys.Signer`. The session serializes its
    operations, so one signer may be shared by threads.

    A token that fails a signature (gone, restarted, its session or key handle dead)
    fails it with :class:`Unavailable`, never a driver's error. The key is then found
    again, on a new session, by the first signature asked for after a pause, or by
    :meth:`recover` (``find``, which must find a key whose signatures its public half
    verifies): the broker signs again by itself once the token is back. Until then
    :meth:`signing_problem` says why it does not (readiness reports it).
    """

    __slots__ = (
        "_failure",
        "_find",
        "_key",
        "_lock",
        "_mechanism",
        "_retry_at",
        "kid",
        "public_key",
    )

    def __init__(
        self,
        key: Any,
        public_key: bytes,
        mechanism: Any,
        find: Callable[[], Any] | None = None,
    ) -> None:
        self._key = key  # a pkcs11.PrivateKey (whose stub omits its sign method); None: lost
        self._mechanism = mechanism
        self._find = find
        self._lock = threading.Lock()
        self._retry_at = 0.0  # no new session before then (time.monotonic())
        self._failure = ""  # why the last signature or search failed (a driver's error type)
        self.public_key = public_key
        self.kid = jwk_thumbprint(public_key)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (64 bytes), computed by the token.

        Raises:
            Unavailable: the token did not sign (nothing was signed).
        """
        key = self._key
        if key is None:
            key = self._found_again()
        try:
            return bytes(key.sign(message, mechanism=self._mechanism))
        except Exception as exc:  # noqa: BLE001 - any failure of the token or its module
            self._lost(key, type(exc).__name__)
            raise _unavailable(type(exc).__name__) from None

    def signing_problem(self) -> str:
        """Why this key does not sign now ("" when it does, as far as is known): the key
        was lost to a failed signature and not found again since. No call to the token:
        what the last signature, or search for the key, found."""
        if self._key is not None:
            return ""
        return f"the signing key's PKCS#11 token failed a signature ({self._failure})"

    def recover(self) -> None:
        """While the key is lost, look for it again as the next signature would (at most
        once a pause; a self-test signature when found). For readiness, on a thread of
        its own: a broker no signing request reaches (a load balancer took it out as not
        ready) finds its key once the token is back, not only at the next request."""
        if self._key is None:
            with contextlib.suppress(Unavailable):
                self._found_again()

    def _found_again(self) -> Any:
        with self._lock:
            if self._key is not None:
                return self._key
            now = time.monotonic()
            if self._find is None or now < self._retry_at:
                raise _unavailable("the token failed a signature moments ago")
            self._retry_at = now + _RETRY_PAUSE
            try:
                key = self._find()
                signature = bytes(key.sign(_SELF_TEST, mechanism=self._mechanism))
                nacl.signing.VerifyKey(self.public_key).verify(_SELF_TEST, signature)
            except Exception as exc:  # noqa: BLE001 - still away, or not our key
                self._failure = type(exc).__name__
                raise _unavailable(type(exc).__name__) from None
            self._key = key
            _log.warning("the PKCS#11 token signs again with key %s", self.kid)
            return key

    def _lost(self, key: Any, failure: str) -> None:
        with self._lock:
            if self._key is key and key is not None:
                self._key = None
                self._failure = failure
                self._retry_at = time.monotonic() + _RETRY_PAUSE
                _log.error(
                    "the PKCS#11 token failed a signature with key %s; signing requests "
                    "are refused until it is found again",
                    self.kid,
                )

    def __repr__(self) -> str:
        return f"Pkcs11Signer(kid={self.kid!r})"


def _unavailable(reason: str) -> Unavailable:
    return Unavailable(
        "the signing key's PKCS#11 token is not available",
        reason=f"PKCS#11 signature failed: {reason}",
        retry_after=1,
    )


class Pkcs11KeyProvider(DirectoryProvider):
    """Signing keys in a PKCS#11 token; their public halves in the key directory.

    Args:
        module: path of the token's PKCS#11 module (a shared library).
        token_label: the token's label (``CKA_LABEL`` of the token, as initialized).
        pin: the user PIN.
        key_label: prefix of the labels of the keys this broker makes and uses.

    The session is opened (and the user logged in) at first use and kept for the
    provider's life.

    Raises:
        KeyStoreError: python-pkcs11 is not installed.
    """

    name = PKCS11

    def __init__(
        self, module: str, token_label: str, pin: str, key_label: str = "tasklease-signing-"
    ) -> None:
        try:
            import pkcs11
        except ImportError:
            raise KeyStoreError(
                'key_provider = "pkcs11" needs the python-pkcs11 package: '
                "pip install 'tasklease[hsm]'"
            ) from None
        self._p11 = pkcs11
        self.module = module
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin
        self._session: pkcs11.Session | None = None
        self._lock = threading.Lock()

    def describe(self, directory: Path) -> str:
        """Where the keys are, for the start-up banner."""
        return (
            f"PKCS#11 token {self.token_label!r} through {self.module} "
            f"(key labels {self.key_label}*), public keys in {directory}"
        )

    # -- the token ---------------------------------------------------------------------

    def _open_session(self) -> pkcs11.Session:
        with self._lock:
            if self._session is not None:
                return self._session
            p11 = self._p11
            try:
                library = p11.lib(self.module)
            except (p11.PKCS11Error, OSError, RuntimeError) as exc:
                raise KeyStoreError(
                    f"cannot load the PKCS#11 module {self.module} (pkcs11_module): {exc}"
                ) from None
            try:
                token = library.get_token(token_label=self.token_label)
            except p11.NoSuchToken:
                raise KeyStoreError(
                    f"no PKCS#11 token labelled {self.token_label!r} in {self.module} "
                    "(pkcs11_token_label)"
                ) from None
            except p11.MultipleObjectsReturned:
                raise KeyStoreError(
                    f"more than one PKCS#11 token is labelled {self.token_label!r}"
                ) from None
            try:
                try:
                    self._session = token.open(rw=True, user_pin=self._pin)
                except p11.exceptions.UserAlreadyLoggedIn:
                    # PKCS#11 logs in the application, not the session: another session of
                    # this process (another provider on the same token) already did.
                    self._session = token.open(rw=True)
            except (p11.exceptions.PinIncorrect, p11.exceptions.PinLenRange):
                raise KeyStoreError(
                    f"the PKCS#11 token {self.token_label!r} refused the PIN "
                    "(TASKLEASE_PKCS11_PIN or pkcs11_pin_file)"
                ) from None
            except p11.PKCS11Error as exc:
                raise KeyStoreError(
                    f"cannot open a session on the PKCS#11 token {self.token_label!r}: "
                    f"{type(exc).__name__}"
                ) from None
            return self._session

    def close(self) -> None:
        """Close the session (the keys stay on the token)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _restart_module(self) -> None:
        """Finalize and initialize the module again: a module that saw its token fail
        (SoftHSM, for one) may keep it failed until then. Other sessions this process
        has on the module end with it; their signers find their keys again the same way."""
        with self._lock:
            self._session = None
            self._p11.lib(self.module).reinitialize()

    def _drop_session(self) -> None:
        """Forget the session, closing it if the token still can (a signer found it dead)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def _label(self, timestamp: str) -> str:
        return f"{self.key_label}{timestamp}Z"

    def _objects(self, session: pkcs11.Session, label: str) -> list[Any]:
        p11 = self._p11
        return [
            obj
            for cls in (p11.ObjectClass.PRIVATE_KEY, p11.ObjectClass.PUBLIC_KEY)
            for obj in session.get_objects({p11.Attribute.CLASS: cls, p11.Attribute.LABEL: label})
        ]

    def _private_key(self, session: pkcs11.Session, timestamp: str) -> Any:
        p11 = self._p11
        label = self._label(timestamp)
        try:
            return session.get_key(
                object_class=p11.ObjectClass.PRIVATE_KEY,
                key_type=p11.KeyType.EC_EDWARDS,
                label=label,
            )
        except p11.NoSuchKey:
            raise KeyStoreError(
                f"the PKCS#11 token {self.token_label!r} holds no private key labelled {label!r}"
            ) from None
        except p11.MultipleObjectsReturned:
            raise KeyStoreError(
                f"the PKCS#11 token {self.token_label!r} holds several private keys "
                f"labelled {label!r}"
            ) from None

    # -- the provider's steps -------------------------------------------------------------

    def _open(self, entry: KeyFile, data: bytes, *, active: bool) -> object:
        public = _public_key_from_pem(data, entry.path)
        kid = jwk_thumbprint(public)
        self.check_name(entry, kid)
        if not active:
            return nacl.signing.VerifyKey(public)
        key = self._private_key(self._open_session(), entry.timestamp)

        def find() -> Any:
            self._drop_session()
            try:
                return self._private_key(self._open_session(), entry.timestamp)
            except Exception:  # noqa: BLE001 - the module may hold the token as failed
                self._restart_module()
                return self._private_key(self._open_session(), entry.timestamp)

        signer = Pkcs11Signer(key, public, self._p11.Mechanism.EDDSA, find)
        try:
            signature = signer.sign(_SELF_TEST)
            nacl.signing.VerifyKey(public).verify(_SELF_TEST, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, Unavailable):
            raise KeyStoreError(
                f"the key labelled {self._label(entry.timestamp)!r} on the PKCS#11 token "
                f"{self.token_label!r} does not match {entry.path}"
            ) from None
        return signer

    def _kid_of(self, entry: KeyFile, data: bytes) -> str:
        return jwk_thumbprint(_public_key_from_pem(data, entry.path))

    def _create(self, directory: Path, timestamp: str) -> tuple[str, bytes]:
        p11 = self._p11
        attribute = p11.Attribute
        session = self._open_session()
        label = self._label(timestamp)
        try:
            public_key, private_key = session.generate_keypair(
                p11.KeyType.EC_EDWARDS,
                mechanism=p11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                store=True,
                label=label,
                public_template={
                    attribute.EC_PARAMS: _ED25519_PARAMS,
                    attribute.TOKEN: True,
                    attribute.PRIVATE: False,
                    attribute.VERIFY: True,
                },
                # A signing key and nothing else: never extracted, copied, changed, nor
                # used to decrypt, derive, unwrap or sign with recovery.
                private_template={
                    attribute.TOKEN: True,
                    attribute.PRIVATE: True,
                    attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False,
                    attribute.MODIFIABLE: False,
                    attribute.COPYABLE: False,
                    attribute.SIGN: True,
                    attribute.SIGN_RECOVER: False,
                    attribute.DECRYPT: False,
                    attribute.DERIVE: False,
                    attribute.UNWRAP: False,
                },
            )
        except p11.PKCS11Error as exc:
            raise KeyStoreError(
                f"the PKCS#11 token {self.token_label!r} could not make an Ed25519 key "
                f"({type(exc).__name__}): does it support CKM_EC_EDWARDS_KEY_PAIR_GEN?"
            ) from None
        try:
            # A token that ignored the template must not hold our key in the open.
            if not private_key[attribute.SENSITIVE] or private_key[attribute.EXTRACTABLE]:
                raise KeyStoreError(
                    f"the PKCS#11 token {self.token_label!r} made an extractable key"
                )
            public = _raw_ec_point(bytes(public_key[attribute.EC_POINT]))
            pem = Ed25519PublicKey.from_public_bytes(public).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except BaseException:
            self._abandon("", timestamp)
            raise
        return jwk_thumbprint(public), pem

    def _discard(self, entry: KeyFile, kid: str) -> None:
        self._abandon(kid, entry.timestamp)

    def _abandon(self, kid: str, timestamp: str) -> None:
        session = self._open_session()
        for obj in self._objects(session, self._label(timestamp)):
            obj.destroy()

    def __repr__(self) -> str:
        return f"Pkcs11KeyProvider(module={self.module!r}, token_label={self.token_label!r})"


def _raw_ec_point(point: bytes) -> bytes:
    """The 32-byte key from ``CKA_EC_POINT``: a DER OCTET STRING, or raw on some tokens."""
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise KeyStoreError("the PKCS#11 token returned a public key that is not Ed25519")


def _public_key_from_pem(data: bytes, path: Path) -> bytes:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyStoreError(f"key file {path} is corrupt or not a public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyStoreError(f"key file {path} is not an Ed25519 public key")
    return key.public_bytes_raw()
