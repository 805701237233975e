"""Helpers for the key-provider tests: SoftHSM2, the CLI, and checks on keys and tokens.

Named ``keystore_support`` (not ``conftest``) so test modules can import it unambiguously.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import jwt
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
TASKLEASE = str(VENV_BIN / "tasklease") if (VENV_BIN / "tasklease").exists() else "tasklease"
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
PASSPHRASE = "test-passphrase-0123456789abcdef"


def unavailable(reason: str, env: Mapping[str, str] | None = None) -> NoReturn:
    """Skip a test that needs something missing; under ``CI=true`` fail instead."""
    env = os.environ if env is None else env
    if env.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PKCS#11 tests must run)", pytrace=False)
    pytest.skip(reason)


def softhsm_module() -> str | None:
    """The path of SoftHSM2's PKCS#11 module, if installed."""
    return next((path for path in SOFTHSM_MODULES if Path(path).is_file()), None)


@dataclass(frozen=True)
class SoftHSM:
    """A SoftHSM2 installation with its own config (``conf``) and one initialized token."""

    module: str
    conf: Path
    token_label: str
    pin: str

    def init_token(self, label: str, pin: str) -> None:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label]
            + ["--pin", pin, "--so-pin", "so-" + pin],
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            capture_output=True,
            check=True,
            timeout=60,
        )

    def env(self, key_label: str) -> dict[str, str]:
        """What a ``tasklease`` process needs to use this token under ``key_label``."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "TASKLEASE_KEY_PROVIDER": "pkcs11",
            "TASKLEASE_PKCS11_MODULE": self.module,
            "TASKLEASE_PKCS11_TOKEN_LABEL": self.token_label,
            "TASKLEASE_PKCS11_PIN": self.pin,
            "TASKLEASE_PKCS11_KEY_LABEL": key_label,
        }

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A logged-in session of the test's own on the token (not the provider's)."""
        import pkcs11

        token = pkcs11.lib(self.module).get_token(token_label=self.token_label)
        try:
            session = token.open(user_pin=self.pin)
        except pkcs11.exceptions.UserAlreadyLoggedIn:  # a provider of this process did
            session = token.open()
        with session:
            yield session

    @staticmethod
    def private_keys(session: Any, label_prefix: str) -> dict[str, Any]:
        """The private keys on the token whose label starts with ``label_prefix``."""
        from pkcs11 import Attribute, ObjectClass

        return {
            key[Attribute.LABEL]: key
            for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            if key[Attribute.LABEL].startswith(label_prefix)
        }

    def protection(self, label_prefix: str) -> dict[str, dict[str, bool]]:
        """Each such key's protection attributes, as the token itself reports them."""
        from pkcs11 import Attribute

        names = (
            "SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "TOKEN",
            "MODIFIABLE", "COPYABLE", "SIGN_RECOVER", "DECRYPT", "DERIVE", "UNWRAP",
        )  # fmt: skip
        with self.session() as session:
            return {
                label: {name: bool(key[getattr(Attribute, name)]) for name in names}
                for label, key in self.private_keys(session, label_prefix).items()
            }


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without TASKLEASE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    env.update(extra or {})
    return env


def cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tasklease`` in ``cwd`` with a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "tasklease.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=str(cwd),
        env=clean_env(env),
        check=False,
    )


def key_files(key_dir: Path) -> list[Path]:
    return sorted(key_dir.glob("signing-*.pem"))


def verify_with_jwks(token: str, jwks: dict[str, Any], audience: str | None = None) -> Any:
    """Verify ``token`` with PyJWT against the broker's published JWKS alone."""
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    key = jwt.PyJWK.from_dict(jwk)
    return jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=audience,
        options={"verify_aud": audience is not None},
    )
