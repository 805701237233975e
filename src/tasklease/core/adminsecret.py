"""A start with another admin secret ends what the built-in admin held before.

The built-in admin's secret lives in the configuration (``admin_secret_hash``, or
``TASKLEASE_ADMIN_SECRET``), not in the store, so changing it is a restart with another
one. Whoever held the old secret may have signed in as the admin and made launch tokens;
those outlived the change. The store keeps the secret's hash the broker last started
with (``admin_credential``); a start with another ends the admin's tokens and the launch
tokens it made, with the entry an operator's rotation writes (level ``agent`` on
``admin``, dated ``clock_skew`` ahead: ``Kernel.revocation_entry``), audited as
``admin_secret_changed``. docs/decisions.md 241.
"""

from __future__ import annotations

from tasklease.core.auditformat import AuditEntry
from tasklease.core.kernel import Service
from tasklease.core.passwords import verify_secret
from tasklease.core.store import RevocationRecord, WriteTx

__all__ = ["ADMIN_SUBJECT", "AdminSecret"]

ADMIN_SUBJECT = "admin"
"""The built-in admin's ``sub``, and the creator its launch tokens name."""


class AdminSecret(Service):
    """Records the admin secret a broker starts with. Thread-safe; one per broker."""

    def started_with(self, secret: str | None = None) -> bool:
        """Record the configured admin secret as the one in force; True when it changed.

        The first start (a database from before the record was kept included) records it
        and ends nothing. A hash that differs from the one on record only by its salt is
        the same secret: ``secret``, the plain text when the environment gave it (each
        start hashes it afresh), is checked against the record, which then stays. The
        record is read and written in one write unit, under the write lock: of replicas
        starting together with the same new secret, one ends the old one's tokens.

        Raises:
            Unavailable: the record or its event could not be written; nothing changed.
        """
        configured = self._config.admin_secret_hash
        if not configured:
            return False
        ending: list[RevocationRecord] = []

        def unit(tx: WriteTx) -> list[AuditEntry]:
            held = tx.get_admin_credential()
            if held == configured or (held and secret and verify_secret(held, secret)):
                return []
            now = self._kernel.now()
            tx.put_admin_credential(configured, now)
            if held is None:
                return []  # nothing was held before this record: nothing to end
            entry = self._kernel.revocation_entry("agent", ADMIN_SUBJECT, at=now)
            tx.insert_revocation(entry)
            ending.append(entry)
            return [
                AuditEntry(
                    "admin_secret_changed",
                    agent_id=ADMIN_SUBJECT,
                    detail="the broker started with another admin secret: the admin's "
                    "tokens and launch tokens made with the one before are ended "
                    f"(level=agent target={ADMIN_SUBJECT} revoked_at={entry.revoked_at:.0f})",
                )
            ]

        self._kernel.commit(unit)
        self._kernel.apply_revocations(ending)
        return bool(ending)
