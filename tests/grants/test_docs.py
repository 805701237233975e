"""docs/grants.md and docs/policy.md: every block marked as run by this file runs as
written.

Python blocks run in a fresh interpreter; Cedar blocks load as a tenant's policy set
(with the default policy beside them, except the default itself, which must be the
broker's own); a JSON block marked ``file=<name>`` is written to the document's working
directory; shell blocks run there under ``bash -euo pipefail``, in order, with the
``tasklease`` command on the PATH and a broker to talk to (the application on the memory
store, served on loopback).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from e2e_support import ADMIN_SECRET

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.policy import DEFAULT_POLICY, compile_policies
from tasklease.http.app import create_app
from tasklease.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
ME = "tests/grants/test_docs.py"
_BLOCK = re.compile(
    r"<!--(?P<marker>[^>]*)-->[ \t]*\n```(?P<lang>[A-Za-z]*)[^\n]*\n(?P<body>.*?)^```",
    re.S | re.M,
)
DOCS = ("grants.md", "policy.md")


def blocks(name: str) -> list[tuple[str, str, str]]:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    return [
        (m["lang"], m["marker"].strip(), m["body"])
        for m in _BLOCK.finditer(text)
        if ME in m["marker"]
    ]


def test_the_documents_have_runnable_blocks() -> None:
    langs = {lang for name in DOCS for lang, _, _ in blocks(name)}
    assert langs == {"python", "cedar", "json", "sh"}


def _est(text: str) -> Any:
    return json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]


@pytest.mark.parametrize("name", DOCS)
def test_the_blocks_run_as_written(name: str, tmp_path: Path, serve: Any) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if any(lang == "sh" and "tasklease" in body for lang, _, body in blocks(name)):
        core = Broker(
            Config(admin_secret_hash=hash_secret(ADMIN_SECRET)),
            open_store("memory://"),
            KeyRing.generate(),
            nonce_secret=b"d" * 32,
        )
        served = serve(create_app(core, background=False))
        env.update(TASKLEASE_URL=served.url, TASKLEASE_ADMIN_SECRET=ADMIN_SECRET)
    for lang, marker, body in blocks(name):
        if lang == "python":
            ran = subprocess.run(
                [sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True,
                text=True, timeout=60, check=False,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stderr
        elif lang == "cedar":
            if '@id("issue-within-parent")' in body:  # the default, as the broker has it
                assert _est(body) == _est(DEFAULT_POLICY)
                compile_policies([("default.cedar", body)], name)
            else:
                compiled = compile_policies(
                    [("default.cedar", DEFAULT_POLICY), ("doc.cedar", body)], name
                )
                assert len(compiled.ids) > 3
        elif lang == "json":
            (tmp_path / marker.split("file=", 1)[1].strip()).write_text(body)
        else:
            ran = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env,
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stdout + ran.stderr
            if "policy test" in body:
                assert "DENY  determined by: delegations-up-to-50-eur" in ran.stdout
            if "grant-type list" in body:
                assert "dataset_query" in ran.stdout
