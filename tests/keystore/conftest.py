"""Fixtures for the key providers: a throwaway SoftHSM2 token, and the ``tasklease`` CLI.

``softhsm`` makes one token for the session in a temp directory (``SOFTHSM2_CONF`` points
to a config of its own, set before this process loads the PKCS#11 module; tests keep
apart by key label). SoftHSM2 missing: ``scripts/ensure-softhsm.sh`` is run once to install
it; if it still cannot be had, the PKCS#11 tests skip, except under ``CI=true``, where
they fail: CI must not pass without having tested the HSM provider.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from keystore_support import REPO, SoftHSM, softhsm_module, unavailable  # noqa: E402


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """A SoftHSM2 token for the session, and the environment that reaches it."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        unavailable("python-pkcs11 is not installed (pip install -e '.[hsm]')")
    if softhsm_module() is None or shutil.which("softhsm2-util") is None:
        ensure = subprocess.run(
            ["sh", str(REPO / "scripts" / "ensure-softhsm.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if ensure.returncode != 0:
            unavailable(f"SoftHSM2 could not be installed: {ensure.stderr.strip()[-500:]}")
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        unavailable("SoftHSM2 (softhsm2-util, libsofthsm2.so) not found after installing it")
    assert module is not None
    root = tmp_path_factory.mktemp("softhsm")
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = SoftHSM(module=module, conf=conf, token_label="tasklease-test", pin="1234-test-pin")
    hsm.init_token(hsm.token_label, hsm.pin)
    try:
        yield hsm
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
