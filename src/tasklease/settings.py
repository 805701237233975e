"""Build the one :class:`~tasklease.core.config.Config` from a TOML file and the environment.

Precedence: built-in defaults < the TOML file < ``TASKLEASE_*`` environment variables <
explicit overrides (command-line flags). The file is ``--config``, else
``$TASKLEASE_CONFIG``, else ``<data_dir>/config.toml`` when it exists. Whoever may write
the file administers the broker: it must be this user's or root's, and writable by neither
group nor others, or it is refused.

A relative path in the file (``data_dir``, ``key_dir``, a SQLite ``database``, the files
of keys, secrets and certificates, ``policy_dir``) is taken from the file's own directory,
so the file means one broker whatever directory it is read from; in the environment and on
the command line a relative path is taken from the current directory.

``TASKLEASE_ADMIN_SECRET`` supplies the admin secret in plain text (containers, scripts); it
must meet :func:`tasklease.core.passwords.secret_weakness`'s rule, is hashed with argon2id
at start-up and the plain text is not kept; it replaces any ``admin_secret_hash`` not made
from it (at ``serve``'s start, a file's hash of the very secret is kept: one argon2id check
instead of a check and a hash).
``TASKLEASE_KEY_PASSPHRASE`` and ``TASKLEASE_PKCS11_PIN`` are secrets, not settings: the
key provider (:func:`tasklease.keystore.open_key_provider`) reads them, and they never
become part of the :class:`Config`.

Values are checked, never coerced: an integer setting takes an integer (``3600``, not
``3600.5``), a float setting an integer or a float, neither a boolean; the environment's
text is read as the setting's type. A ``TASKLEASE_*`` variable that is neither a setting
nor one of the few other variables tasklease reads (:data:`_NOT_SETTINGS`) is refused, as
an unknown key of the file is: a misspelt setting must not fall back to its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasklease.core.config import Config
from tasklease.core.passwords import hash_secret, secret_weakness, verify_secret
from tasklease.localfiles import foreign_owner, open_regular

__all__ = ["ADMIN_SECRET_ENV", "ConfigError", "load_config", "resolve_paths"]

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_KINDS: dict[str, type] = {name: type(getattr(Config(), name)) for name in _FIELDS}
_ENV_SETTINGS = {f"TASKLEASE_{name.upper()}": name for name in _FIELDS}
ADMIN_SECRET_ENV = "TASKLEASE_ADMIN_SECRET"  # noqa: S105 - a variable's name, not a secret
# The TASKLEASE_* variables that are not settings (every one the repository names: src,
# tests, examples, docs, Makefile). Any other TASKLEASE_* name is refused.
_NOT_SETTINGS = frozenset(
    {
        "TASKLEASE_CONFIG",  # the configuration file (here)
        ADMIN_SECRET_ENV,  # the admin secret in plain text (here); the CLI's credential too
        "TASKLEASE_KEY_PASSPHRASE",  # the `file` key provider's passphrase (keystore)
        "TASKLEASE_PKCS11_PIN",  # the `pkcs11` key provider's PIN (keystore)
        "TASKLEASE_WORKER_CONFIG",  # `serve --workers N`: the parent's Config (server)
        # The CLI as a client: its broker, profile, tenant, operator credentials and TLS.
        "TASKLEASE_URL",
        "TASKLEASE_PROFILE",
        "TASKLEASE_TENANT",
        "TASKLEASE_OPERATOR",
        "TASKLEASE_OPERATOR_SECRET",
        "TASKLEASE_OPERATOR_KEY_FILE",
        "TASKLEASE_INSECURE_HTTP",  # `tasklease --insecure-http` (147), the SDK's opt-in (151)
        "TASKLEASE_CLIENT_CERT",  # `tasklease --client-cert`: for a broker with mtls
        "TASKLEASE_CLIENT_KEY",  # `tasklease --client-key`: that certificate's key
        # examples/ and docs/attestation.md (a CI job's ID token).
        "TASKLEASE_BROKER_URL",
        "TASKLEASE_CLIENT_ID",
        "TASKLEASE_CLIENT_SECRET",
        "TASKLEASE_TOKEN",
        # The test suite and `make soak`.
        "TASKLEASE_CHROMIUM",
        "TASKLEASE_FLEET_OUTAGE",
        "TASKLEASE_FUZZ_EXAMPLES",
        "TASKLEASE_MODEL_EXAMPLES",
        "TASKLEASE_MODEL_STEPS",
    }
)
_WORDS = {True: ("1", "true", "yes", "on"), False: ("0", "false", "no", "off")}
_EXPECTED = {
    tuple: "a list of strings (comma-separated in the environment)",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}

# The settings that name a file or directory. In the config file a relative one is read
# from the file's directory: read from the current directory, the same file named a
# second broker (a new database, key and passphrase) when started from elsewhere.
_PATH_SETTINGS = frozenset(
    {
        "data_dir",
        "database",
        "key_dir",
        "key_passphrase_file",
        "pkcs11_module",
        "pkcs11_pin_file",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "policy_dir",
    }
)


# An empty TASKLEASE_<SETTING> counts as unset (``${VAR:-}`` in Compose, ``VAR=`` in an
# env file), so the setting keeps its default: read as "", ``host`` would be every
# interface and ``data_dir`` the current directory. Except where "" is itself the
# documented value, as in the file: there the variable would otherwise do the opposite
# of what it says (``TASKLEASE_METRICS_LISTEN=`` leaving the listener on).
_EMPTY_IS_A_VALUE = frozenset({"metrics_listen"})


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which setting and why."""


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the setting's type, checked, never converted with a loss: a float is
    no integer, a boolean no number. Text (the environment's) is read as that type."""
    kind = _KINDS[name]
    if isinstance(value, str) and kind is not str:
        value = _from_text(kind, value)
    if kind is tuple and isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return tuple(value)
    elif kind is float and type(value) in (int, float):
        return float(value)
    elif type(value) is kind:  # a bool is no int, an int no bool
        return value
    shown = "" if kind in (str, tuple) else f", not {value!r}"  # a number is no secret
    raise ConfigError(f"{source}: {name} must be {_EXPECTED[kind]}{shown}")


def _from_text(kind: type, text: str) -> Any:
    """``text`` read as ``kind``; ``text`` itself when it does not read as one."""
    if kind is tuple:
        return tuple(v.strip() for v in text.split(",") if v.strip())
    if kind is bool:
        word = text.strip().lower()
        return next((value for value, words in _WORDS.items() if word in words), text)
    try:
        return kind(text)
    except ValueError:
        return text


def _check_environment_names(env: Mapping[str, str]) -> None:
    """Refuse a ``TASKLEASE_*`` variable that nothing reads (a misspelt setting), and one
    whose prefix is ``TASKLEASE_`` misspelt or in another case: ignored, it would leave a
    setting such as ``holder_binding`` at its default without a word."""
    known = _ENV_SETTINGS.keys() | _NOT_SETTINGS
    for name in sorted(env):
        if name not in known and _meant_for_us(name):
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{name} is not a setting{guess}: fix its name or unset it "
                "(docs/configuration.md lists the settings)"
            )


def _meant_for_us(name: str) -> bool:
    """Whether ``name`` reads as a ``TASKLEASE_`` variable: that prefix in any case, or a
    prefix one letter from it (``TASKLEAS_``, ``TASKLESE_``)."""
    prefix, sep, _ = name.partition("_")
    if not sep:
        return False
    return prefix.upper() == "TASKLEASE" or bool(
        difflib.get_close_matches(prefix.upper(), ["TASKLEASE"], n=1, cutoff=0.88)
    )


def load_config(
    config_path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    notices: list[str] | None = None,
    check_file: bool = True,
) -> Config:
    """The configuration of ``config_path`` (or the file found as the module says), the
    environment ``env`` (``os.environ`` by default) and ``overrides`` (flags).

    The file must be this user's or root's, and writable by neither group nor others
    (:func:`_check_file_trust`); ``check_file`` false is for ``doctor`` only, which reports
    the file's owner and mode as findings of its own rather than stopping at them.

    ``notices``, when given, receives what an operator should be told at start-up and is
    no error (never a secret): the environment's admin secret replacing another one.

    Raises:
        ConfigError: an unreadable file, an unknown setting or ``TASKLEASE_*`` variable, a
            value of the wrong type or out of its range, or a weak admin secret.
    """
    env = os.environ if env is None else env
    _check_environment_names(env)
    values: dict[str, Any] = {}
    hash_from = ""  # where admin_secret_hash was set, for the notice below
    data_dir = (overrides or {}).get("data_dir") or env.get("TASKLEASE_DATA_DIR") or ".tasklease"
    path = config_path or env.get("TASKLEASE_CONFIG")
    if path is None:
        default = Path(data_dir) / "config.toml"
        try:
            found = default.is_file()
        except OSError as exc:  # a data directory this user may not look into
            raise ConfigError(
                f"cannot look for {default} in the data directory: {exc.strerror or exc}"
            ) from None
        if found:
            path = str(default)
    if path:
        try:
            # A named pipe is refused, not waited on; /dev/null reads as empty (201).
            with open(open_regular(path, devices=True), "rb") as fh:
                if check_file:
                    _check_file_trust(path, os.fstat(fh.fileno()))
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text (TOML is)") from None
        except OSError as exc:  # a directory, a file this user may not read, ...
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        for key, value in document.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _from_file(key, _coerce(key, value, path), Path(path).absolute().parent)
        if values.get("admin_secret_hash"):
            hash_from = f"the admin_secret_hash of {path}"
    for variable, name in _ENV_SETTINGS.items():
        raw = env.get(variable)
        if raw or (raw == "" and name in _EMPTY_IS_A_VALUE):
            values[name] = _coerce(name, raw, variable)
    if env.get("TASKLEASE_ADMIN_SECRET_HASH"):
        hash_from = "TASKLEASE_ADMIN_SECRET_HASH"
    secret = env.get(ADMIN_SECRET_ENV)
    if secret:
        _admin_secret(secret, values, hash_from, notices)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command line")
    try:
        return resolve_paths(Config(**values))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_file_trust(path: str, st: os.stat_result) -> None:
    """Refuse a config file that someone other than this user (or root) can change.

    The file sets the admin secret's hash, the trusted proxies, TLS, the key provider and
    the data directory: whoever may write it administers the broker. Found by default in
    ``.tasklease/`` under the current directory, it could be one planted in a shared
    directory, naming the real data directory and the planter's admin secret. A character
    device (``/dev/null``, which ``init`` reads as an empty file) is made only by root.

    Raises:
        ConfigError: the file is owned by another user, or writable by group or others.
    """
    if foreign_owner(st):
        raise ConfigError(
            f"config file {path} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()}) or root: its owner would administer the broker; "
            f"chown it, or run as its owner"
        )
    if st.st_mode & 0o022 and not stat.S_ISCHR(st.st_mode):
        raise ConfigError(
            f"config file {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): whoever writes it would administer "
            f"the broker; run: chmod go-w {path}"
        )


def _admin_secret(
    secret: str, values: dict[str, Any], hash_from: str, notices: list[str] | None
) -> None:
    """Check the environment's plain-text admin secret and put its hash in ``values``."""
    weakness = secret_weakness(secret)
    if weakness is not None:
        raise ConfigError(
            f"{ADMIN_SECRET_ENV} is too weak to be the admin secret: {weakness}; use a random "
            "one, such as python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    # Said unless it is the very secret the hash was made from (one argon2id check); then
    # that hash is kept, and the secret is not hashed again.
    if hash_from and notices is not None:
        if verify_secret(values["admin_secret_hash"], secret):
            return
        notices.append(
            f"the admin secret is {ADMIN_SECRET_ENV} from the environment: {hash_from} is not "
            "used, and the secret it was made from no longer signs in"
        )
    values["admin_secret_hash"] = hash_secret(secret)


def _from_file(name: str, value: Any, folder: Path) -> Any:
    """``value`` of setting ``name`` read from a config file in ``folder``: a relative path
    taken from ``folder``; any other value as it is."""
    if name not in _PATH_SETTINGS or not isinstance(value, str) or not value:
        return value
    if name == "database" and "://" in value:
        return value  # a URL, not a path
    if name == "pkcs11_module" and "/" not in value:
        return value  # a library name, found by the dynamic loader
    path = Path(value)
    if path.is_absolute():
        return value
    if name == "data_dir" and _names_folder(path, folder):
        # `tasklease init --data-dir D` used to write D as given (`.tasklease`) into
        # D/config.toml, relative to where init ran: it names the file's own directory.
        return str(folder)
    return str(folder / path)


def _names_folder(path: Path, folder: Path) -> bool:
    """Whether the relative ``path`` is the end of ``folder`` (``.tasklease`` of
    ``/srv/.tasklease``), as a data directory written from its parent is."""
    parts = path.parts
    return ".." not in parts and folder.parts[-len(parts) :] == parts


def resolve_paths(config: Config) -> Config:
    """Fill the database and key paths that default to places inside ``data_dir``."""
    data = Path(config.data_dir)
    return dataclasses.replace(
        config,
        database=config.database or str(data / "tasklease.db"),
        key_dir=config.key_dir or str(data / "keys"),
    )
