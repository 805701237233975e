"""``InsufficientScope`` is one class under both import paths: a program using the SDK
and the verifier catches the broker's refusal and the verifier's with either name, and
each keeps the shape its own tree promised (a ``Forbidden`` of the SDK with the broker's
``detail``; a ``VerificationError`` whose ``str()`` is generic and whose ``reason`` is
internal). Neither package imports the other for it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

import tasklease.client
import tasklease.verify
from tasklease.client import Forbidden, TaskleaseError
from tasklease.client._errors import error_from_response
from tasklease.verify import VerificationError, VerifiedToken


def _broker_refusal() -> TaskleaseError:
    body = {
        "error_code": "insufficient_scope",
        "detail": "the token lacks admin:audit:*",
        "denial_id": "den_1",
        "request_id": "req_1",
    }
    return error_from_response(httpx.Response(403, json=body))


def _verifier_refusal() -> VerificationError:
    token = VerifiedToken.__new__(VerifiedToken)
    object.__setattr__(token, "scope", ("read:data:1",))
    verifier = tasklease.verify.Verifier.__new__(tasklease.verify.Verifier)
    try:
        verifier.require_scope(token, "write:data:1")
    except VerificationError as exc:
        return exc
    raise AssertionError("the scope was not required")


def test_one_class_under_both_names() -> None:
    assert tasklease.client.InsufficientScope is tasklease.verify.InsufficientScope
    assert tasklease.client.InsufficientScope.__module__ == "tasklease.client"


@pytest.mark.parametrize("name", ["client", "verify"])
def test_either_name_catches_both_refusals(name: str) -> None:
    caught = getattr(tasklease, name).InsufficientScope
    for refusal in (_broker_refusal(), _verifier_refusal()):
        with pytest.raises(caught):
            raise refusal


def test_the_broker_refusal_keeps_the_sdk_shape() -> None:
    error = _broker_refusal()
    assert isinstance(error, Forbidden) and isinstance(error, TaskleaseError)
    assert isinstance(error, VerificationError)
    assert (error.code, error.status, error.denial_id) == ("insufficient_scope", 403, "den_1")
    assert str(error) == error.detail == "the token lacks admin:audit:*"
    assert "den_1" in repr(error) and "req_1" in repr(error)


def test_the_verifier_refusal_keeps_the_verifier_shape() -> None:
    error = _verifier_refusal()
    assert isinstance(error, tasklease.verify.InsufficientScope)
    assert isinstance(error, TaskleaseError)
    assert error.code == "insufficient_scope" and error.status is None
    assert error.required == "write:data:1"
    assert error.reason == "token lacks required scope: write:data:1"
    # What goes outward stays generic: the reason is for logs only.
    assert str(error) == error.message == error.detail == "token lacks the required scope"
    assert "write:data:1" in repr(error)


_IMPORTS = """
import json, sys
import {name}
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tasklease."))))
"""


@pytest.mark.parametrize(
    ("name", "absent"),
    [("tasklease.verify", "tasklease.client"), ("tasklease.client", "tasklease.verify")],
)
def test_neither_package_imports_the_other(name: str, absent: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", _IMPORTS.format(name=name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(ran.stdout)
    assert not [m for m in loaded if m == absent or m.startswith(absent + ".")]
