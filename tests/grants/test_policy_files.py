"""A tenant's policy files (``tasklease.policyfiles``) followed by the policy engine
(``core.policy``): loaded whole or not at all, reloaded when they change, the default
without files, and no set in force (every decision denies) when they cannot be loaded at
the start; nothing of a reload takes effect before its audit event is durable."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.policy import DEFAULT_POLICY, DEFAULT_SOURCE, PolicyEngine, Reloaded
from tasklease.core.policyrequest import Actor, PolicyRequest
from tasklease.policyfiles import PolicyDirectory
from tasklease.storage import MemoryStore

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


def test_a_policy_file_that_can_no_longer_be_read_fails_the_reload(tmp_path: Path) -> None:
    """A ``.cedar`` link whose target is gone (a shared or mounted file) is not a file to
    leave out: its ``forbid`` rules would vanish with it. The reload fails, and the set in
    force (with the cap) stays; the same for the tenant's directory as a dangling link."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cap.cedar").write_text(CAP)
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").symlink_to(shared / "cap.cedar")
    engine = PolicyEngine()
    assert engine.use_source(PolicyDirectory(tmp_path, "acme")) is not None
    assert not engine.decide(DELEGATE).allowed
    (shared / "cap.cedar").unlink()
    reloaded = engine.reload()
    assert reloaded is not None and reloaded.error is not None
    assert "cap.cedar" in str(reloaded.error)
    assert "delegations-up-to-50-eur" in engine.current.ids
    assert not engine.decide(DELEGATE).allowed

    linked = tmp_path / "linked"
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "all.cedar").write_text(DEFAULT_POLICY + "\n" + CAP)
    linked.symlink_to(tmp_path / "real")
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "linked"))
    assert not engine.decide(DELEGATE).allowed
    (tmp_path / "real" / "all.cedar").unlink()
    (tmp_path / "real").rmdir()
    reloaded = engine.reload()
    assert reloaded is not None and reloaded.error is not None
    assert engine.current.origin != DEFAULT_SOURCE and not engine.decide(DELEGATE).allowed


def test_a_policy_dir_that_is_gone_fails_the_reload(tmp_path: Path) -> None:
    """Found by review: ``policy_dir`` itself (a link to the release in force, a mounted
    volume) whose target went read as "no directory for this tenant", so every tenant
    fell back to the default set, its ``forbid`` rules gone. A ``policy_dir`` that is not
    a directory fails the load as a tenant directory that is a dangling link does: the
    set in force stays, and at the start no set is in force."""
    release = tmp_path / "release-1"
    (release / "acme").mkdir(parents=True)
    (release / "acme" / "all.cedar").write_text(DEFAULT_POLICY + "\n" + CAP)
    root = tmp_path / "policies"
    root.symlink_to(release)
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(root, "acme"))
    assert not engine.decide(DELEGATE).allowed
    (release / "acme" / "all.cedar").unlink()
    (release / "acme").rmdir()
    release.rmdir()
    reloaded = engine.reload()
    assert reloaded is not None and reloaded.error is not None
    assert "delegations-up-to-50-eur" in engine.current.ids
    assert not engine.decide(DELEGATE).allowed
    assert engine.reload() is None  # the same failure: reported once

    (tmp_path / "release-2" / "acme").mkdir(parents=True)
    (tmp_path / "release-2" / "acme" / "default.cedar").write_text(DEFAULT_POLICY)
    root.unlink()
    root.symlink_to(tmp_path / "release-2")
    loaded = engine.reload()
    assert loaded is not None and loaded.policies is not None and engine.decide(DELEGATE).allowed

    for gone in (tmp_path / "missing", tmp_path / "release-2" / "acme" / "default.cedar"):
        engine = PolicyEngine()
        outcome = engine.use_source(PolicyDirectory(gone, "acme"))
        assert outcome is not None and outcome.error is not None
        assert not engine.decide(DELEGATE).allowed


def test_a_policy_entry_that_is_not_a_file_fails_the_load_at_once(tmp_path: Path) -> None:
    """A ``.cedar`` entry that is a pipe, or a link to a device, is not a file: reading it
    waited forever for a writer (the reload holding the engine's lock, every later reload
    and ``POST /v1/admin/policy/reload`` stuck behind it; at the start, the broker never
    served) or read without end. It fails the load as a directory of that name does."""
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "acme"))
    os.mkfifo(folder / "pipe.cedar")
    outcome: list[Reloaded | None] = []
    reader = threading.Thread(target=lambda: outcome.append(engine.reload()), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let it go: a writer that writes nothing
        with open(folder / "pipe.cedar", "wb"):
            pass
        reader.join(10)
    assert outcome and outcome[0] is not None and outcome[0].error is not None
    assert "pipe.cedar" in str(outcome[0].error) and not reader.is_alive()
    (folder / "pipe.cedar").unlink()
    (folder / "zero.cedar").symlink_to("/dev/zero")
    refused = engine.reload()
    assert refused is not None and refused.error is not None and "zero.cedar" in str(refused.error)
    assert engine.decide(DELEGATE).allowed  # the set in force stays


@pytest.mark.parametrize("text", ["", "\n  \n", "// cap: being rewritten\n"])
def test_a_policy_file_with_no_policy_fails_the_load(tmp_path: Path, text: str) -> None:
    """A file being written in place (an editor, ``cat >``) is empty for an instant: loaded
    then, the set would lose its ``forbid`` rules until the next reload. A ``.cedar`` file
    that holds no policy fails the load instead; the set in force stays."""
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").write_text(CAP)
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "acme"))
    assert not engine.decide(DELEGATE).allowed
    (folder / "cap.cedar").write_text(text)
    refused = engine.reload()
    assert refused is not None and refused.error is not None
    assert "cap.cedar holds no policy" in str(refused.error)
    assert not engine.decide(DELEGATE).allowed  # the forbid in force stays


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


# -- a set is in force only once its load is audited ----------------------------------------


def _refuse(outcome: Reloaded) -> None:
    raise OSError("disk full")  # what the broker's audit write raises, as Unavailable


def test_a_set_whose_load_cannot_be_audited_is_not_put_in_force(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    folder.mkdir()
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "acme"))
    before = engine.current
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").write_text(CAP)
    with pytest.raises(OSError, match="disk full"):
        engine.reload(_refuse)
    assert engine.current is before and engine.decide(DELEGATE).allowed
    audited: list[Reloaded] = []
    loaded = engine.reload(audited.append)  # the next run: the same change, audited now
    assert loaded is not None and loaded.policies is not None and audited == [loaded]
    assert not engine.decide(DELEGATE).allowed
    assert engine.reload(audited.append) is None and len(audited) == 1


def test_a_refusal_that_cannot_be_audited_is_reported_again(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "cap.cedar").write_text(DEFAULT_POLICY + CAP)
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "acme"))
    (folder / "more.cedar").write_text('@id("x") permit (principal, action, resource) when {')
    with pytest.raises(OSError, match="disk full"):
        engine.reload(_refuse)
    assert engine.failure is None
    audited: list[Reloaded] = []
    refused = engine.reload(audited.append)
    assert refused is not None and refused.error is not None and audited == [refused]
    assert engine.failure is refused.error and not engine.decide(DELEGATE).allowed


def test_a_source_whose_first_load_cannot_be_audited_denies_everything(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "default.cedar").write_text(DEFAULT_POLICY)
    engine = PolicyEngine()
    assert engine.decide(DELEGATE).allowed  # the built-in default, before any source
    with pytest.raises(OSError, match="disk full"):
        engine.use_source(PolicyDirectory(tmp_path, "acme"), _refuse)
    assert not engine.decide(DELEGATE).allowed  # neither the source's set nor the default
    loaded = engine.reload(lambda outcome: None)
    assert loaded is not None and loaded.policies is not None
    assert engine.decide(DELEGATE).allowed


class _FlakyStore(MemoryStore):
    """A memory store whose writes (audit appends among them) fail while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def write(self) -> Any:
        if self.failing:
            raise OSError("disk full")
        return super().write()


def test_a_policy_set_is_in_force_only_once_its_load_is_audited(tmp_path: Path) -> None:
    """Found by review: a reloaded set was put in force (and its files remembered as
    seen) before ``policy_loaded`` was written; when that write failed the set decided
    issuance unaudited, and every later reload saw "no change"."""
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    store = _FlakyStore()
    broker = Broker(Config(), store, KeyRing.generate(), nonce_secret=b"n" * 32)
    broker.use_policy_source(PolicyDirectory(tmp_path, "default"))
    before = broker.policy.current.digest
    (folder / "cap.cedar").write_text(CAP)
    store.failing = True
    with pytest.raises(Unavailable) as info:
        broker.reload_policies()  # the housekeeping job, every 2 s
    assert "nothing was changed" in info.value.detail
    assert broker.policy.current.digest == before
    store.failing = False
    assert broker.reload_policies()  # its next run
    now_in_force = broker.policy.current.digest
    assert now_in_force != before and "delegations-up-to-50-eur" in broker.policy.current.ids
    loaded = [e.detail for e in store.iter_audit() if e.event_type == "policy_loaded"]
    assert len(loaded) == 2 and f"policy set {now_in_force[:12]} " in loaded[1]
    assert not broker.reload_policies()  # nothing new


def test_policies_another_user_could_change_fail_the_load(tmp_path: Path) -> None:
    """Whoever may write a tenant's policy files decides its issuances (a ``forbid`` of
    everything, or a ``permit`` the default does not give). A policy directory, a file,
    or the directory a linked file sits in, that group or others may write (or, as root,
    one another user owns) fails the load as an unreadable one does: the set in force
    stays, and at the start every decision denies. It used to be loaded."""
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "default.cedar").write_text(DEFAULT_POLICY)
    (folder / "cap.cedar").write_text(CAP)
    engine = PolicyEngine()
    engine.use_source(PolicyDirectory(tmp_path, "acme"))
    assert "delegations-up-to-50-eur" in engine.current.ids
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "open.cedar").write_text('@id("open") permit (principal, action, resource);')
    places = [(tmp_path, 0o775), (folder, 0o777), (folder / "cap.cedar", 0o646), (shared, 0o777)]
    for place, mode in places:
        if place == shared:
            (folder / "open.cedar").symlink_to(shared / "open.cedar")
        place.chmod(mode)
        refused = engine.reload()
        assert refused is not None and refused.error is not None, place
        assert f"{place} is writable by group or others" in str(refused.error)
        assert "delegations-up-to-50-eur" in engine.current.ids  # the set in force stays
        assert "open" not in engine.current.ids
        fresh = PolicyEngine()
        fresh.use_source(PolicyDirectory(tmp_path, "acme"))
        assert not fresh.decide(PolicyRequest("register", DELEGATE.actor)).allowed
        place.chmod(0o700 if place.is_dir() else 0o600)
    loaded = engine.reload()
    assert loaded is not None and loaded.error is None and "open" in engine.current.ids
    if os.geteuid() == 0:
        os.chown(folder / "cap.cedar", 12345, 12345)
        refused = engine.reload()
        assert refused is not None and "is owned by uid 12345" in str(refused.error)
