"""The ``file`` provider (encrypted PKCS#8), the ``plaintext`` one, and choosing between them."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from keystore_support import PASSPHRASE, key_files, verify_with_jwks

from tasklease.core.config import Config
from tasklease.core.keys import (
    KeyRing,
    jwk_thumbprint,
    load_or_create_keyring,
    retire_keys,
    rotate_key,
)
from tasklease.keystore import (
    EncryptedFileKeyProvider,
    KeyStoreError,
    PlaintextKeyProvider,
    encrypt_directory,
    open_key_provider,
    read_secret_file,
)

ENCRYPTED_HEADER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"


def _provider(passphrase: str = PASSPHRASE) -> EncryptedFileKeyProvider:
    return EncryptedFileKeyProvider(passphrase.encode())


def _config(tmp_path: Path, **settings: str) -> Config:
    data = tmp_path / "data"
    return Config(data_dir=str(data), key_dir=str(data / "keys"), **settings)  # type: ignore[arg-type]


def test_keys_are_encrypted_pkcs8_and_do_not_load_without_the_passphrase(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, _provider())
    (path,) = key_files(keys)
    data = path.read_bytes()
    assert data.startswith(ENCRYPTED_HEADER)
    assert b"BEGIN PRIVATE KEY" not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(data, password=None)
    # A wrong passphrase: a padding failure, or (about 1 in 256) garbage that fails to parse.
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, password=b"not the passphrase at all")
    # The passphrase opens it, with any PKCS#8 reader.
    opened = serialization.load_pem_private_key(data, password=PASSPHRASE.encode())
    assert isinstance(opened, Ed25519PrivateKey)
    assert bytes(ring.verify_key(ring.active_kid) or b"") == opened.public_key().public_bytes_raw()
    # And through the provider: a wrong passphrase is a clear refusal, no key material.
    with pytest.raises(KeyStoreError, match="wrong key passphrase") as refused:
        load_or_create_keyring(keys, _provider("another-passphrase-entirely"))
    assert b"".join(data.splitlines()[1:-1]).decode()[:16] not in str(refused.value)


def test_the_active_key_signs_from_memory_and_tokens_verify_by_the_jwks(tmp_path: Path) -> None:
    ring = load_or_create_keyring(tmp_path / "keys", _provider())
    # The decrypted key is held in memory: signing costs what it costs with a plain key.
    assert isinstance(ring._active, nacl.signing.SigningKey)
    token = ring.sign(b'{"sub":"agent","n":1}', "JWT")
    assert verify_with_jwks(token, ring.jwks()) == {"sub": "agent", "n": 1}


def test_rotation_keeps_old_keys_in_the_jwks_until_retired(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    provider = _provider()
    first = load_or_create_keyring(keys, provider)
    old_token = first.sign(b'{"n":1}', "JWT")
    second_kid = rotate_key(keys, provider)
    third_kid = rotate_key(keys, provider)
    ring = load_or_create_keyring(keys, provider)
    assert ring.kids() == [third_kid, second_kid, first.active_kid]
    assert [k["kid"] for k in ring.jwks()["keys"]] == ring.kids()
    assert verify_with_jwks(old_token, ring.jwks()) == {"n": 1}
    assert all(path.read_bytes().startswith(ENCRYPTED_HEADER) for path in key_files(keys))
    assert retire_keys(keys, {second_kid}, provider) == [first.active_kid]
    assert load_or_create_keyring(keys, provider).kids() == [third_kid, second_kid]


def test_rotation_through_the_rings_provider_keeps_keys_encrypted(tmp_path: Path) -> None:
    """A ring remembers the provider it was loaded with; rotating through it never downgrades."""
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, _provider())
    assert ring.provider is not None
    new_kid = rotate_key(keys, ring.provider)
    assert load_or_create_keyring(keys, ring.provider).kids() == [new_kid, ring.active_kid]
    assert all(path.read_bytes().startswith(ENCRYPTED_HEADER) for path in key_files(keys))


def test_plaintext_keys_are_refused_with_the_way_to_migrate(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, PlaintextKeyProvider())
    rotate_key(keys, PlaintextKeyProvider())
    with pytest.raises(KeyStoreError) as refused:
        load_or_create_keyring(keys, _provider())
    message = str(refused.value)
    assert "2 unencrypted signing keys" in message
    assert "tasklease keys encrypt" in message
    assert 'key_provider = "plaintext"' in message
    with pytest.raises(KeyStoreError, match="unencrypted"):
        rotate_key(keys, _provider())
    assert len(key_files(keys)) == 2  # nothing was added


def test_plaintext_provider_refuses_encrypted_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider())
    with pytest.raises(KeyStoreError, match='encrypted signing key .key_provider = "file"'):
        load_or_create_keyring(keys, PlaintextKeyProvider())


def test_encrypt_directory_migrates_in_place_and_keeps_every_kid(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    plain = load_or_create_keyring(keys, PlaintextKeyProvider())
    token = plain.sign(b'{"n":2}', "JWT")
    newer = rotate_key(keys, PlaintextKeyProvider())
    names = [path.name for path in key_files(keys)]
    provider = _provider()
    assert sorted(encrypt_directory(keys, provider)) == sorted([plain.active_kid, newer])
    assert [path.name for path in key_files(keys)] == names
    for path in key_files(keys):
        assert path.read_bytes().startswith(ENCRYPTED_HEADER)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in keys.iterdir() if p.name.endswith(".tmp")]
    ring = load_or_create_keyring(keys, provider)
    assert ring.kids() == [newer, plain.active_kid]
    assert verify_with_jwks(token, ring.jwks()) == {"n": 2}
    assert encrypt_directory(keys, provider) == []  # idempotent


def _plant_plaintext_key(keys: Path, timestamp: str) -> str:
    key = nacl.signing.SigningKey.generate()
    kid = jwk_thumbprint(bytes(key.verify_key))
    pem = Ed25519PrivateKey.from_private_bytes(bytes(key)).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = keys / f"signing-{timestamp}Z-{kid[:8]}.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    return kid


def test_encrypt_directory_never_mixes_passphrases(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider())
    plaintext_kid = _plant_plaintext_key(keys, "29990101T000000000000")
    before = {path.name: path.read_bytes() for path in key_files(keys)}
    with pytest.raises(KeyStoreError, match="wrong key passphrase"):
        encrypt_directory(keys, _provider("a-different-passphrase-here"))
    assert {path.name: path.read_bytes() for path in key_files(keys)} == before
    assert encrypt_directory(keys, _provider()) == [plaintext_kid]
    assert load_or_create_keyring(keys, _provider()).active_kid == plaintext_kid


def test_one_plaintext_key_among_encrypted_ones_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    load_or_create_keyring(keys, _provider())
    _plant_plaintext_key(keys, "29990101T000000000000")
    with pytest.raises(KeyStoreError, match="holds an unencrypted signing key"):
        load_or_create_keyring(keys, _provider())


def test_short_passphrases_are_refused() -> None:
    with pytest.raises(KeyStoreError, match="shorter than 16"):
        EncryptedFileKeyProvider(b"short")


@pytest.mark.parametrize(
    "example", [b"replace-with-a-long-random-passphrase", b"change-me-change-me-change-me"]
)
def test_an_examples_placeholder_passphrase_is_refused(example: bytes) -> None:
    """The deployment examples' placeholders are long enough to pass the length rule:
    a passphrase copied from one is refused as the admin secret's placeholder is."""
    with pytest.raises(KeyStoreError, match="placeholder of an example"):
        EncryptedFileKeyProvider(example)


# -- choosing the provider and its secret -------------------------------------------------


def test_environment_passphrase_comes_first(tmp_path: Path) -> None:
    config = _config(tmp_path)
    provider = open_key_provider(config, {"TASKLEASE_KEY_PASSPHRASE": PASSPHRASE})
    assert isinstance(provider, EncryptedFileKeyProvider)
    assert provider.source == "TASKLEASE_KEY_PASSPHRASE"
    assert not (tmp_path / "data" / "key-passphrase").exists()


def test_a_fresh_data_directory_gets_a_random_passphrase_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(KeyStoreError, match="no key passphrase"):
        open_key_provider(config, {})
    provider = open_key_provider(config, {}, create_kek_file="when-no-keys")
    assert isinstance(provider, EncryptedFileKeyProvider)
    path = tmp_path / "data" / "key-passphrase"
    assert provider.new_passphrase_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 43  # 256 random bits, base64url
    ring = load_or_create_keyring(Path(config.key_dir), provider)
    # Next start: the file is read, not replaced.
    again = open_key_provider(config, {}, create_kek_file="when-no-keys")
    assert isinstance(again, EncryptedFileKeyProvider)
    assert again.new_passphrase_file is None
    assert load_or_create_keyring(Path(config.key_dir), again).active_kid == ring.active_kid


def test_keys_without_their_passphrase_file_are_not_given_a_new_one(tmp_path: Path) -> None:
    config = _config(tmp_path)
    provider = open_key_provider(config, {}, create_kek_file="when-no-keys")
    load_or_create_keyring(Path(config.key_dir), provider)
    (tmp_path / "data" / "key-passphrase").unlink()
    with pytest.raises(KeyStoreError, match="no key passphrase for the encrypted signing keys"):
        open_key_provider(config, {}, create_kek_file="when-no-keys")
    assert not (tmp_path / "data" / "key-passphrase").exists()


def test_a_data_directory_of_plaintext_keys_is_told_how_to_migrate(tmp_path: Path) -> None:
    config = _config(tmp_path)
    load_or_create_keyring(Path(config.key_dir), PlaintextKeyProvider())
    with pytest.raises(KeyStoreError, match="tasklease keys encrypt"):
        open_key_provider(config, {}, create_kek_file="when-no-keys")
    explicit = open_key_provider(dataclasses.replace(config, key_provider="plaintext"), {})
    assert isinstance(explicit, PlaintextKeyProvider)
    load_or_create_keyring(Path(config.key_dir), explicit)


def test_passphrase_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text(PASSPHRASE + "\n")
    for mode in (0o640, 0o604, 0o644):
        path.chmod(mode)
        with pytest.raises(KeyStoreError, match="must be 0600"):
            read_secret_file(path, "key_passphrase_file")
    path.chmod(0o600)
    assert read_secret_file(path, "key_passphrase_file") == PASSPHRASE
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(KeyStoreError, match="symlink"):
        read_secret_file(link, "key_passphrase_file")
    with pytest.raises(KeyStoreError, match="does not exist"):
        read_secret_file(tmp_path / "missing", "key_passphrase_file")
    config = _config(tmp_path, key_passphrase_file=str(path))
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="key_passphrase_file"):
        open_key_provider(config, {})


def test_configured_passphrase_file_is_never_created(tmp_path: Path) -> None:
    config = _config(tmp_path, key_passphrase_file=str(tmp_path / "elsewhere" / "kek"))
    with pytest.raises(KeyStoreError, match="does not exist"):
        open_key_provider(config, {}, create_kek_file="yes")


def test_pkcs11_needs_its_settings_and_a_pin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pkcs11_module and pkcs11_token_label"):
        _config(tmp_path, key_provider="pkcs11")
    with pytest.raises(ValueError, match="key_provider must be one of"):
        _config(tmp_path, key_provider="vault")
    config = _config(tmp_path, key_provider="pkcs11", pkcs11_module="/x.so", pkcs11_token_label="t")
    with pytest.raises(KeyStoreError, match="TASKLEASE_PKCS11_PIN or pkcs11_pin_file"):
        open_key_provider(config, {})


def test_a_signer_the_ring_does_not_hold_signs_tokens_that_verify() -> None:
    """KeyRing through the Signer protocol (what an HSM key is to it)."""

    class Remote:
        def __init__(self) -> None:
            self._key = nacl.signing.SigningKey.generate()
            self.public_key = bytes(self._key.verify_key)
            self.kid = jwk_thumbprint(self.public_key)
            self.calls = 0

        def sign(self, message: bytes) -> bytes:
            self.calls += 1
            return bytes(self._key.sign(message).signature)

    remote = Remote()
    ring = KeyRing(remote)
    assert ring.active_kid == remote.kid
    token = ring.sign(b'{"n":3}', "JWT")
    assert verify_with_jwks(token, ring.jwks()) == {"n": 3}
    signature = ring.sign_detached(b"message")
    ring.verify_key(ring.active_kid).verify(b"message", signature)  # type: ignore[union-attr]
    assert remote.calls == 2

    remote.kid = "A" * 43  # a signer that misnames its key
    with pytest.raises(ValueError, match="not the thumbprint"):
        KeyRing(remote)


def test_umask_does_not_loosen_encrypted_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    previous = os.umask(0o000)
    try:
        load_or_create_keyring(keys, _provider())
        rotate_key(keys, _provider())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in key_files(keys)} == {0o600}


def test_a_confirmed_rotation_writes_an_encrypted_key_only_once_confirmed(tmp_path: Path) -> None:
    """The broker records ``signing_key_rotated`` in ``before_activation``: until then
    the key is pending (encrypted like every key, and never loaded); refused, it is
    gone and the directory is as it was."""
    keys = tmp_path / "keys"
    first = load_or_create_keyring(keys, _provider())
    before = sorted(os.listdir(keys))

    def refuse(key: nacl.signing.VerifyKey) -> None:
        (pending,) = keys.glob(".pending-signing-*.pem")
        assert pending.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert stat.S_IMODE(pending.stat().st_mode) == 0o600
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rotate_key(keys, _provider(), before_activation=refuse)
    assert sorted(os.listdir(keys)) == before
    confirmed: list[nacl.signing.VerifyKey] = []
    kid = rotate_key(keys, _provider(), before_activation=confirmed.append)
    ring = load_or_create_keyring(keys, _provider())
    assert ring.kids() == [kid, first.active_kid]
    assert ring.public_key(kid) == bytes(confirmed[0])
