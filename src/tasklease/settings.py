"""Build the one :class:`~tasklease.core.config.Config` from a TOML file and the environment.

Precedence: built-in defaults < the TOML file < ``TASKLEASE_*`` environment variables <
explicit overrides (command-line flags). The file is ``--config``, else
``$TASKLEASE_CONFIG``, else ``<data_dir>/config.toml`` when it exists.

``TASKLEASE_ADMIN_SECRET`` supplies the admin secret in plain text (containers, scripts); it
is hashed with argon2id at start-up and the plain text is not kept.
``TASKLEASE_KEY_PASSPHRASE`` and ``TASKLEASE_PKCS11_PIN`` are secrets, not settings: the
key provider (:func:`tasklease.keystore.open_key_provider`) reads them, and they never
become part of the :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasklease.core.config import Config
from tasklease.core.passwords import hash_secret

__all__ = ["ConfigError", "load_config", "resolve_paths"]

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which setting and why."""


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = type(getattr(Config(), name))
    try:
        if kind is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise TypeError
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise TypeError
        if kind is int:
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind is float:
            return float(value)
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be of type {kind.__name__}") from None


def load_config(
    config_path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    data_dir = (overrides or {}).get("data_dir") or env.get("TASKLEASE_DATA_DIR") or ".tasklease"
    path = config_path or env.get("TASKLEASE_CONFIG")
    if path is None and (Path(data_dir) / "config.toml").is_file():
        path = str(Path(data_dir) / "config.toml")
    if path:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in document.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, path)
    for name in _FIELDS:
        raw = env.get(f"TASKLEASE_{name.upper()}")
        if raw:
            values[name] = _coerce(name, raw, f"TASKLEASE_{name.upper()}")
    secret = env.get("TASKLEASE_ADMIN_SECRET")
    if secret:
        if len(secret) < 16:
            raise ConfigError("TASKLEASE_ADMIN_SECRET must be at least 16 characters")
        values["admin_secret_hash"] = hash_secret(secret)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command line")
    try:
        return resolve_paths(Config(**values))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_paths(config: Config) -> Config:
    """Fill the database and key paths that default to places inside ``data_dir``."""
    data = Path(config.data_dir)
    return dataclasses.replace(
        config,
        database=config.database or str(data / "tasklease.db"),
        key_dir=config.key_dir or str(data / "keys"),
    )
