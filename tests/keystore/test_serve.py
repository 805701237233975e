"""Key providers in real ``tasklease init`` / ``serve`` / ``keys encrypt`` processes over HTTP."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from e2e_support import (
    RunningBroker,
    free_port,
    jwt_parts,
    launch_broker,
    run_cli,
    stop_broker,
)
from keystore_support import PASSPHRASE, SoftHSM, clean_env, cli, key_files, verify_with_jwks

from tasklease.core.keys import load_or_create_keyring
from tasklease.keystore import EncryptedFileKeyProvider, PlaintextKeyProvider

pytestmark = pytest.mark.slow

ENCRYPTED_HEADER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"


@pytest.fixture
def brokers() -> Iterator[list[RunningBroker]]:
    """Brokers a test starts (stopped at its end)."""
    started: list[RunningBroker] = []
    yield started
    for running in started:
        stop_broker(running)


def _start(
    brokers: list[RunningBroker], data: Path, env: dict[str, str] | None = None, **kwargs: object
) -> RunningBroker:
    running = launch_broker(data, env, **kwargs)  # type: ignore[arg-type,unused-ignore]
    brokers.append(running)
    return running


def _serve_refused(data: Path, env: dict[str, str] | None = None) -> str:
    """Run ``tasklease serve`` expecting it to refuse to start; return what it said."""
    port = str(free_port())
    env = {"TASKLEASE_ADMIN_SECRET": "a-test-admin-secret-" + "x" * 16, **(env or {})}
    result = cli("serve", "--data-dir", str(data), "--port", port, cwd=data.parent, env=env)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def _jwks(running: RunningBroker) -> dict[str, list[dict[str, str]]]:
    response = running.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _wait_for_kid(running: RunningBroker, kid: str) -> None:
    deadline = time.monotonic() + 10.0
    while kid not in {k["kid"] for k in _jwks(running)["keys"]}:
        assert time.monotonic() < deadline, "the other process never adopted the new key"
        time.sleep(0.1)


# -- file (the default) ---------------------------------------------------------------


def test_init_and_serve_keep_only_encrypted_keys_and_tokens_verify_by_the_jwks(
    tmp_path: Path, brokers: list[RunningBroker]
) -> None:
    data = tmp_path / "data"
    init = cli("init", "--data-dir", "data", "--secret-file", "data/admin-secret", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    said = " ".join(init.stdout.split())
    assert "Key passphrase (KEK) written to data/key-passphrase (mode 0600)" in said
    kek = data / "key-passphrase"
    assert kek.stat().st_mode & 0o777 == 0o600
    assert 'key_provider = "file"' in (data / "config.toml").read_text()
    secret = (data / "admin-secret").read_text().strip()

    running = _start(brokers, data, admin_secret=secret, use_env_secret=False)
    assert "signing keys: encrypted PKCS#8 files" in running.log()
    agent = running.register(["read:data:*"])
    claims = verify_with_jwks(agent.access_token, _jwks(running))
    assert claims["sub"] == agent.agent_id
    assert running.is_valid(agent.access_token)

    # On disk: encrypted PKCS#8 only; nothing opens without the passphrase.
    (path,) = key_files(data / "keys")
    pem = path.read_bytes()
    assert pem.startswith(ENCRYPTED_HEADER)
    assert not [
        p for p in data.rglob("*") if p.is_file() and b"BEGIN PRIVATE KEY" in p.read_bytes()
    ]
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    assert serialization.load_pem_private_key(pem, password=kek.read_bytes().strip())
    stop_broker(brokers.pop())

    # Without its passphrase the broker does not start, and says why.
    kek.rename(tmp_path / "kek-moved")
    said = _serve_refused(data)
    assert "no key passphrase for the encrypted signing keys" in said
    assert not kek.exists()  # no new passphrase is made for keys that have one
    # A wrong passphrase: a clear error, exit 2.
    said = _serve_refused(data, {"TASKLEASE_KEY_PASSPHRASE": "not-the-passphrase-at-all"})
    assert "wrong key passphrase" in said
    # The passphrase from the environment instead of the file.
    moved = (tmp_path / "kek-moved").read_text().strip()
    running = _start(
        brokers,
        data,
        {"TASKLEASE_KEY_PASSPHRASE": moved},
        admin_secret=secret,
        use_env_secret=False,
    )
    assert running.is_valid(agent.access_token)


def test_serve_on_a_fresh_data_directory_makes_no_key_and_no_passphrase(tmp_path: Path) -> None:
    """Only ``tasklease init`` makes a broker's keys (docs/decisions.md 145): ``serve``
    on an empty data directory refuses, and leaves it as it found it."""
    data = tmp_path / "fresh"
    data.mkdir(mode=0o700)
    said = _serve_refused(data)
    assert "no broker here" in said and "Only `tasklease init` creates a broker" in said
    assert list(data.iterdir()) == []


def test_rotation_with_the_file_provider_reaches_a_second_process(
    tmp_path: Path, brokers: list[RunningBroker]
) -> None:
    data = tmp_path / "data"
    one = _start(brokers, data)
    two = _start(brokers, data)
    old = one.register(["read:data:*"])
    old_kid = jwt_parts(old.access_token)[0]["kid"]
    rotated = one.post("/v1/admin/keys/rotate", headers=one.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid
    _wait_for_kid(two, new_kid)
    # The JWKS keeps the old key while its tokens live; both processes sign with the new.
    jwks = _jwks(two)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    assert verify_with_jwks(old.access_token, jwks)["sub"] == old.agent_id
    fresh = two.register(["read:data:*"])
    assert jwt_parts(fresh.access_token)[0]["kid"] == new_kid
    assert one.is_valid(fresh.access_token) and one.is_valid(old.access_token)
    files = key_files(data / "keys")
    assert len(files) == 2
    assert all(p.read_bytes().startswith(ENCRYPTED_HEADER) for p in files)


# -- plaintext, and the way out of it ----------------------------------------------------


def test_plaintext_keys_need_the_explicit_setting_and_keys_encrypt_migrates_them(
    tmp_path: Path, brokers: list[RunningBroker]
) -> None:
    # A data directory as before key providers: plaintext keys, and no key_provider setting.
    data = tmp_path / "old"
    made = run_cli(["init", "--data-dir", str(data), "--key-provider", "plaintext"], clean_env())
    assert made.returncode == 0, made.stderr
    config = data / "config.toml"
    config.write_text(config.read_text().replace('key_provider = "plaintext"\n', ""))
    ring = load_or_create_keyring(data / "keys", PlaintextKeyProvider())
    said = _serve_refused(data)
    assert "holds an unencrypted signing key" in said
    assert "tasklease keys encrypt" in said
    assert 'key_provider = "plaintext"' in said
    assert not (data / "key-passphrase").exists()

    # Explicitly: it serves, with its old key.
    running = _start(brokers, data, {"TASKLEASE_KEY_PROVIDER": "plaintext"})
    assert "UNENCRYPTED" in running.log()
    token = running.register(["read:data:*"]).access_token
    assert jwt_parts(token)[0]["kid"] == ring.active_kid
    stop_broker(brokers.pop())

    encrypted = cli("keys", "encrypt", "--data-dir", str(data), cwd=tmp_path)
    assert encrypted.returncode == 0, encrypted.stderr
    said = " ".join(encrypted.stdout.split())
    assert "Encrypted 2 signing key(s)" in said  # the token key and the audit log's
    assert f"Key passphrase (KEK) written to {data / 'key-passphrase'}" in said
    assert all(p.read_bytes().startswith(ENCRYPTED_HEADER) for p in key_files(data / "keys"))
    again = cli("keys", "encrypt", "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 0 and "already encrypted" in again.stdout

    # With the default provider now: same key, same tokens.
    running = _start(brokers, data)
    assert jwt_parts(running.admin_token())[0]["kid"] == ring.active_kid
    assert running.is_valid(token)
    # And plaintext is now refused even when asked for: the files are encrypted.
    stop_broker(brokers.pop())
    said = _serve_refused(data, {"TASKLEASE_KEY_PROVIDER": "plaintext"})
    assert 'encrypted signing key (key_provider = "file")' in said


def test_keys_encrypt_uses_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    ring = load_or_create_keyring(data / "keys", PlaintextKeyProvider())
    env = {"TASKLEASE_KEY_PASSPHRASE": PASSPHRASE}
    result = cli("keys", "encrypt", "--data-dir", str(data), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "TASKLEASE_KEY_PASSPHRASE" in result.stdout
    assert not (data / "key-passphrase").exists()
    opened = load_or_create_keyring(data / "keys", EncryptedFileKeyProvider(PASSPHRASE.encode()))
    assert opened.active_kid == ring.active_kid


def test_init_with_the_plaintext_provider_says_so(tmp_path: Path) -> None:
    result = cli(
        "init",
        "--data-dir",
        "d",
        "--key-provider",
        "plaintext",
        "--secret-file",
        "s",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "NOT encrypted" in result.stdout
    assert 'key_provider = "plaintext"' in (tmp_path / "d" / "config.toml").read_text()
    (path,) = key_files(tmp_path / "d" / "keys")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    bad = cli("init", "--data-dir", "e", "--key-provider", "vault", cwd=tmp_path)
    assert bad.returncode == 2


def test_init_force_replaces_secret_files_never_writing_into_them(tmp_path: Path) -> None:
    """``init --force`` over an existing secret file that others can read (or that is a
    link elsewhere) leaves a new 0600 file of this user: the new secret is never written
    into the old file, whatever its mode."""
    first = cli("init", "--data-dir", "d", "--secret-file", "s/admin-secret", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    secret = tmp_path / "s" / "admin-secret"
    old = secret.read_text()
    secret.chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched\n")
    operator = tmp_path / "s" / "operator-admin-secret"
    operator.unlink()
    operator.symlink_to(elsewhere)
    again = cli("init", "--data-dir", "d", "--secret-file", "s/admin-secret", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr  # no --force
    forced = cli(
        "init", "--data-dir", "d", "--secret-file", "s/admin-secret", "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    for path in (secret, operator):
        assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    assert secret.read_text() != old
    assert elsewhere.read_text() == "untouched\n"
    assert not list((tmp_path / "s").glob(".*.tmp"))


def test_init_makes_the_secret_files_directory_before_it_writes_the_config(
    tmp_path: Path,
) -> None:
    """A passphrase from the environment makes no passphrase file beside the secret, so
    nothing else creates the secret file's directory: init makes it (0700), and never
    leaves a configuration whose admin secret was not saved."""
    env = {"TASKLEASE_KEY_PASSPHRASE": PASSPHRASE}
    done = cli(
        "init", "--data-dir", "d", "--secret-file", "new/dir/admin-secret", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    secret = tmp_path / "new" / "dir" / "admin-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new" / "dir").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "d" / "config.toml").exists()


# -- pkcs11 ------------------------------------------------------------------------------


def test_a_broker_on_softhsm_registers_agents_and_rotates(
    softhsm: SoftHSM, tmp_path: Path, brokers: list[RunningBroker]
) -> None:
    label = f"e2e-{secrets.token_hex(4)}-"
    env = softhsm.env(label)
    data = tmp_path / "data"
    one = _start(brokers, data, env)
    assert f"PKCS#11 token '{softhsm.token_label}'" in one.log()
    agent = one.register(["read:data:*"])
    jwks = _jwks(one)
    assert verify_with_jwks(agent.access_token, jwks)["sub"] == agent.agent_id
    resp = one.post("/v1/token/validate", json={"token": agent.access_token})
    assert resp.json()["valid"] is True
    # The directory holds public keys only; the private key stays in the token.
    (path,) = key_files(data / "keys")
    assert path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert not (data / "key-passphrase").exists()
    # Two token keys: the signing key and the audit log's key (docs/audit.md).
    assert len(softhsm.protection(label)) == 2
    for protection in softhsm.protection(label).values():
        assert protection["EXTRACTABLE"] is False
        assert protection["SENSITIVE"] is True
        assert protection["NEVER_EXTRACTABLE"] is True

    # Rotation: a new token key; the second process sharing the directory adopts it.
    two = _start(brokers, data, env)
    rotated = one.post("/v1/admin/keys/rotate", headers=one.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    _wait_for_kid(two, new_kid)
    assert len(softhsm.protection(label)) == 3
    later = two.register(["read:data:*"])
    assert jwt_parts(later.access_token)[0]["kid"] == new_kid
    jwks = _jwks(one)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, jwt_parts(agent.access_token)[0]["kid"]]
    assert verify_with_jwks(agent.access_token, jwks)["sub"] == agent.agent_id
    assert one.is_valid(later.access_token) and two.is_valid(agent.access_token)


def test_a_wrong_pin_stops_the_broker_with_a_clear_error(softhsm: SoftHSM, tmp_path: Path) -> None:
    made = cli("init", "--data-dir", "data", cwd=tmp_path, env=softhsm.env("pin-test-"))
    assert made.returncode == 0, made.stderr
    env = {**softhsm.env("pin-test-"), "TASKLEASE_PKCS11_PIN": "0000-wrong"}
    data = tmp_path / "data"
    said = _serve_refused(data, env)
    assert "refused the PIN" in said
    assert "0000-wrong" not in said


def test_init_with_pkcs11_writes_its_settings(softhsm: SoftHSM, tmp_path: Path) -> None:
    label = f"init-{secrets.token_hex(4)}-"
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    env = {**softhsm.env(label), "TASKLEASE_PKCS11_PIN_FILE": str(pin_file)}
    del env["TASKLEASE_PKCS11_PIN"]
    result = cli("init", "--data-dir", "d", "--secret-file", "s", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "d" / "config.toml").read_text()
    assert 'key_provider = "pkcs11"' in config
    assert f"pkcs11_token_label = {json.dumps(softhsm.token_label)}" in config
    assert f"pkcs11_pin_file = {json.dumps(str(pin_file))}" in config
    assert len(softhsm.protection(label)) == 2  # the signing key and the audit log's


def test_the_key_directory_s_nonce_secret_and_lock_are_refused_when_others_could_swap_them(
    tmp_path: Path,
) -> None:
    data, keys = tmp_path / "data", tmp_path / "data" / "keys"
    init = run_cli(
        ["init", "--data-dir", str(data), "--secret-file", str(data / "admin-secret")], clean_env()
    )
    assert init.returncode == 0, init.stderr
    keys.mkdir(mode=0o700, exist_ok=True)
    nonce = keys / "nonce.secret"
    nonce.write_bytes(secrets.token_bytes(32))
    nonce.chmod(0o644)
    said = _serve_refused(data)
    assert f"nonce secret {nonce} is accessible by group or others (mode 0644" in said
    assert f"chmod 600 {nonce}" in said

    nonce.chmod(0o600)
    elsewhere = tmp_path / "planted"
    (keys / ".lock").unlink(missing_ok=True)
    (keys / ".lock").symlink_to(elsewhere)
    said = _serve_refused(data)
    assert f"lock file {keys / '.lock'} is a symlink" in said
    assert not elsewhere.exists()  # the link's target was never created
