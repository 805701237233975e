"""Secrets at rest: what an unknown name is checked against costs what a stored hash
does, and loading the module hashes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from argon2 import extract_parameters
from argon2.exceptions import VerifyMismatchError

from tasklease.core import passwords
from tasklease.core.passwords import hash_secret, verify_secret

SECRET = "a3f1c9e07b5d2468ace0bdf13579acef"


def test_a_stored_hash_accepts_its_secret_and_nothing_else() -> None:
    stored = hash_secret(SECRET)
    assert verify_secret(stored, SECRET)
    assert not verify_secret(stored, SECRET + "x")
    assert not verify_secret("$argon2id$not-a-hash", SECRET)


def test_an_unknown_name_runs_the_stored_hashes_parameters_and_never_matches() -> None:
    stand_in = passwords._UNMATCHED_HASH
    # The same work as a stored hash: its parameters, not a cheaper set.
    assert extract_parameters(stand_in) == extract_parameters(hash_secret(SECRET))
    # A well-formed hash whose digest differs: the whole check runs, then mismatches (a
    # malformed one would be refused before any work, answering an unknown name faster).
    with pytest.raises(VerifyMismatchError):
        passwords._hasher.verify(stand_in, SECRET)
    assert not verify_secret(None, SECRET)
    assert not verify_secret("", SECRET)


def test_each_process_has_its_own_stand_in() -> None:
    code = "from tasklease.core import passwords; print(passwords._UNMATCHED_HASH)"
    made = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(made) == 2 and passwords._UNMATCHED_HASH not in made


def test_loading_the_module_hashes_nothing() -> None:
    # Every CLI command and every broker process loads it: a hash at import is a fifth
    # of a second of CPU each.
    code = (
        "import argon2._password_hasher as ph\n"
        "calls = []\n"
        "real = ph.hash_secret\n"
        "ph.hash_secret = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "import tasklease.core.passwords\n"
        "print(len(calls))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


def test_the_product_hashes_at_rfc_9106s_second_recommended_cost() -> None:
    # In a process of its own: the test processes hash cheaply (tests/conftest.py).
    code = "from tasklease.core.passwords import hash_secret; print(hash_secret('s' * 32))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    made = extract_parameters(done.stdout.strip())
    assert (made.time_cost, made.memory_cost, made.parallelism) == (3, 65536, 4)
    assert made.type.name == "ID"
