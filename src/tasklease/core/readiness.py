"""Liveness and readiness: what the health routes say, without waiting on storage.

Two checks read storage, each on a thread of its own, one at a time, started by
:meth:`Readiness.refresh` when due (the HTTP layer calls it every second and on demand):

* the *report*: the broker's health report (``Broker.health``), which reads the audit
  head (is storage reachable, how many events);
* the *write check*: the store's optional ``check_writable()`` (``storage``: SQLite checks
  free space and the write lock, PostgreSQL that the server answers and is not
  read-only).

:meth:`Readiness.health` and :meth:`Readiness.ready` answer from what those checks last
found and never wait: a check that has run longer than ``bound`` counts as storage not
answering. Readiness also fails while the audit log's recent batches failed (a full disk,
a lost database): the broker then refuses every operation that changes state; and while
the active signing key does not sign (``KeyRing.signing_problem``: an HSM's key lost to a
failed signature, a key retired elsewhere), when every issuance and sign-in would be
refused. Then a third check, on its own thread, has the key looked for again
(``KeyRing.recover_signing``): a broker no signing request reaches recovers by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from tasklease.core.errors import TaskleaseError
from tasklease.core.kernel import Kernel
from tasklease.core.keys import KeyRing

__all__ = ["BOUND", "INTERVAL", "Readiness", "Verdict"]

BOUND = 2.0
"""Seconds a check may run before storage counts as not answering."""

INTERVAL = 1.0
"""Seconds a check's result is used before the check is run again."""

# A failed audit batch keeps the broker not ready this long unless a batch commits: long
# enough to span the pauses between a client's retries, short enough that a broker no
# one sends writes to (a load balancer took it out) is not kept out by an old failure.
_FAILURE_MEMORY = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the broker is ready to serve, and if not why (safe to show)."""

    ready: bool
    reason: str = ""


class _Check:
    """One kind of check: run on a thread of its own, never two at once, the last result
    (or error) kept with the monotonic time it was found."""

    def __init__(self, name: str, work: Callable[[], Any], monotonic: Callable[[], float]) -> None:
        self._name = name
        self._work = work
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.running: Future[None] | None = None
        self.started = 0.0
        self.result: Any = None
        self.error: BaseException | None = None
        self.found: float | None = None  # when the last run ended; None before the first

    def due(self, now: float, interval: float) -> bool:
        return self.running is None and (self.found is None or now - self.found >= interval)

    def start(self) -> Future[None]:
        """Start a run unless one is under way; the future of the run under way."""
        with self._lock:
            if self.running is not None:
                return self.running
            done: Future[None] = Future()
            self.running = done
            self.started = self._monotonic()
        thread = threading.Thread(target=self._run, args=(done,), name=self._name, daemon=True)
        thread.start()
        return done

    def _run(self, done: Future[None]) -> None:
        try:
            result, error = self._work(), None
        except Exception as exc:  # noqa: BLE001 - a failed check is a finding, not a crash
            result, error = None, exc
        with self._lock:
            self.result, self.error = result, error
            self.found = self._monotonic()
            self.running = None
        if not done.done():  # nobody may cancel it, but a waiter's mistake must not kill us
            done.set_result(None)

    def overdue(self, now: float, bound: float) -> bool:
        """True while a run has lasted longer than ``bound``."""
        return self.running is not None and now - self.started > bound


class Readiness:
    """Health and readiness of one broker process (see the module docstring).

    ``report`` makes the broker's health report; it may read storage, and runs only on a
    check's thread. ``skeleton`` gives the report's fields that need no storage (the
    version, the signing key id), for answers before the first report is in.
    ``revocations_current``, when given, says now (no I/O) whether the revocation index is
    current, instead of the last report. ``keyring``, when given, is the current signing
    key ring (its :meth:`~KeyRing.signing_problem` asked at each answer, no I/O).
    ``monotonic`` is the clock checks are timed with (tests replace it).
    """

    def __init__(
        self,
        kernel: Kernel,
        report: Callable[[], dict[str, Any]],
        *,
        skeleton: Callable[[], dict[str, Any]] | None = None,
        revocations_current: Callable[[], bool] | None = None,
        keyring: Callable[[], KeyRing] | None = None,
        bound: float = BOUND,
        interval: float = INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kernel = kernel
        self._skeleton = skeleton
        self._current = revocations_current
        self._keyring = keyring
        self._bound = bound
        self._interval = interval
        self._monotonic = monotonic
        self._report = _Check("tasklease-health", report, monotonic)
        writable = getattr(kernel.store, "check_writable", None)
        self._writable = (
            None if writable is None else _Check("tasklease-writable", writable, monotonic)
        )
        self._signing = (
            None
            if keyring is None
            else _Check("tasklease-signing", lambda: keyring().recover_signing(), monotonic)
        )

    @property
    def bound(self) -> float:
        return self._bound

    def refresh(self) -> Future[None]:
        """Start the checks that are due; return a future done when those finished (done
        at once when none was due). Never waits."""
        now = self._monotonic()
        # The signing key is looked for again only while it is lost.
        signing = self._signing if self._signing_problem() else None
        started = [
            check.start()
            for check in (self._report, self._writable, signing)
            if check is not None and check.due(now, self._interval)
        ]
        if len(started) == 1:
            return started[0]
        both: Future[None] = Future()
        if not started:
            both.set_result(None)
            return both
        remaining = [len(started)]
        lock = threading.Lock()

        def one_done(_: Future[None]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last and not both.done():
                both.set_result(None)

        for future in started:
            future.add_done_callback(one_done)
        return both

    def reported(self) -> bool:
        """True once the first report is in (until then :meth:`health` has no counts)."""
        return self._report.found is not None

    def stale(self) -> bool:
        """True when the last findings are older than two intervals (nobody refreshed):
        a caller that can wait briefly should await :meth:`refresh` first."""
        found = self._report.found
        return found is None or self._monotonic() - found > 2 * self._interval

    def health(self) -> dict[str, Any]:
        """The broker's health report as last found, corrected by what is known since.

        ``status`` is ``degraded``, with a ``reason``, when storage did not answer the
        last check (or has not answered for ``bound`` seconds), when writes fail, or when
        the revocation index is not current. Never waits.
        """
        now = self._monotonic()
        report: dict[str, Any] = dict(self._report.result or self._before_first_report())
        report.pop("reason", None)
        report["uptime"] = int(now - self._kernel.started_at)
        if "audit_events_count" in report:
            # What this process committed since the check is known without storage.
            count = max(int(report["audit_events_count"]), self._kernel.audit.last_seq)
            report["audit_events_count"] = count
        reasons = self._problems(now)
        if self._report.found is None or self._report.overdue(now, self._bound):
            report["db_connected"] = False
        report["revocations_current"] = self._revocations_current()
        report["status"] = "degraded" if reasons else "ok"
        if reasons:
            report["reason"] = "; ".join(reasons)
        return report

    def ready(self) -> Verdict:
        """Ready: storage answers and takes writes, the revocation index is current, and
        the signing key signs.

        From the last checks (see :meth:`refresh`); never waits.
        """
        reasons = self._problems(self._monotonic())
        return Verdict(not reasons, "; ".join(reasons))

    def _before_first_report(self) -> dict[str, Any]:
        kernel = self._kernel
        return {
            **(self._skeleton() if self._skeleton is not None else {}),
            "db_connected": False,
            "audit_events_count": kernel.audit.last_seq,
            "revocation_entries": len(kernel.revocations),
        }

    def _revocations_current(self) -> bool:
        if self._current is not None:
            return self._current()
        result = self._report.result
        return result is None or bool(result.get("revocations_current", True))

    def _problems(self, now: float) -> list[str]:
        """Everything that keeps the broker from serving, in words safe to show."""
        reasons: list[str] = []
        report = self._report
        if report.found is None or report.overdue(now, self._bound):
            reasons.append(f"storage did not answer within {self._bound:g}s")
        elif report.result is not None and not report.result.get("db_connected", True):
            reasons.append("storage is unreachable")
        if not self._revocations_current():
            bound = self._kernel.config.revocation_staleness_bound
            reasons.append(
                f"revocation state not confirmed current within {bound:g}s: protected "
                "requests fail closed"
            )
        writes = self._write_problem(now)
        if writes:
            reasons.append(writes)
        signing = self._signing_problem()
        if signing:
            reasons.append(f"signing fails: {signing}")
        return reasons

    def _signing_problem(self) -> str:
        """Why the active signing key does not sign now, or "" (no I/O)."""
        return "" if self._keyring is None else self._keyring().signing_problem()

    def _write_problem(self, now: float) -> str:
        """Why writes would fail now, or ""."""
        failure = self._kernel.audit.failure()
        if failure is not None and now - failure.last < _FAILURE_MEMORY:
            return f"writes fail: {failure.summary}"
        check = self._writable
        if check is None:
            return ""
        if check.overdue(now, self._bound):
            return f"storage did not answer a write check within {self._bound:g}s"
        error = check.error
        if error is None:
            return ""
        if isinstance(error, TaskleaseError):
            return f"storage is not writable: {error.detail}"
        return f"storage is not writable: {type(error).__name__}"
