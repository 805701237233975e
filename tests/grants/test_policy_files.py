"""A tenant's policy files (``tasklease.policyfiles``) followed by the policy engine
(``core.policy``): loaded whole or not at all, reloaded when they change, the default
without files, and no set in force (every decision denies) when they cannot be loaded at
the start."""

from __future__ import annotations

from pathlib import Path

from tasklease.core.policy import DEFAULT_POLICY, DEFAULT_SOURCE, PolicyEngine
from tasklease.core.policyrequest import Actor, PolicyRequest
from tasklease.policyfiles import PolicyDirectory

CAP = (
    '@id("delegations-up-to-50-eur")\n'
    'forbid (principal, action == Action::"delegate", resource)\n'
    'when { resource has max_amount && resource.max_amount.greaterThan(decimal("50.0")) };\n'
)
PAYMENT = {
    "type": "resource_access",
    "actions": ["pay"],
    "limits": {"max_amount": "100", "currency": "EUR"},
}
DELEGATE = PolicyRequest("delegate", Actor("Agent", "spiffe://t/agent/o/t/1"), details=(PAYMENT,))


def test_files_are_followed_and_a_broken_set_is_refused_whole(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    engine = PolicyEngine()
    assert engine.use_source(PolicyDirectory(tmp_path, "acme")) is not None
    assert engine.current.origin == DEFAULT_SOURCE and engine.decide(DELEGATE).allowed
    folder.mkdir()
    (folder / "notes.txt").write_text("not a policy")
    assert engine.reload() is None  # no .cedar file: still the default, nothing changed
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").write_text(CAP)
    loaded = engine.reload()
    assert loaded is not None and loaded.error is None
    assert "delegations-up-to-50-eur" in engine.current.ids
    decision = engine.decide(DELEGATE)
    assert not decision.allowed and decision.policies == ("delegations-up-to-50-eur",)
    assert engine.reload() is None  # unchanged files: nothing to do

    (folder / "more.cedar").write_text('@id("x") permit (principal, action, resource) when {')
    refused = engine.reload()
    assert refused is not None and refused.error is not None and refused.policies is None
    assert engine.failure is not None and "more.cedar" in str(engine.failure)
    assert not engine.decide(DELEGATE).allowed  # the set in force stays, cap included
    twice = '@id("delegations-up-to-50-eur") permit (principal, action, resource);'
    (folder / "more.cedar").write_text(twice)
    refused = engine.reload()
    assert refused is not None and refused.error is not None  # an @id used twice
    (folder / "more.cedar").unlink()
    assert engine.reload() is not None and engine.failure is None

    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    back = engine.reload()
    assert back is not None and back.policies is not None
    assert engine.current.origin == DEFAULT_SOURCE and engine.decide(DELEGATE).allowed


def test_policies_that_do_not_load_at_the_start_deny_everything(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "a.cedar").write_text("permit (principal, action, resource);")  # no @id
    engine = PolicyEngine()
    outcome = engine.use_source(PolicyDirectory(tmp_path, "acme"))
    assert outcome is not None and outcome.error is not None
    decision = engine.decide(DELEGATE)
    assert not decision.allowed and decision.errors
    (folder / "a.cedar").write_text(DEFAULT_POLICY)
    assert engine.reload() is not None and engine.decide(DELEGATE).allowed
