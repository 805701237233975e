"""The operator client's calls on the audit log: events, the checkpoint, proofs and log
keys (:class:`AuditCalls`, a part of ``AdminClient``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import httpx

from tasklease.client._errors import NotFound, error_from_response
from tasklease.rules.auditchain import principal_ref

__all__ = ["AuditCalls"]


class AuditCalls(ABC):
    """The audit log's calls; ``AdminClient`` supplies the signed-in requests."""

    @abstractmethod
    def _authed(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request signed in as the operator."""

    @abstractmethod
    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A signed-in request's JSON object (the broker's error raised)."""

    def audit_events(
        self,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        offset: int = 0,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``{"events": [...], "total", "offset", "limit"}``, in chain order."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        for name, value in (
            ("agent_id", agent_id),
            ("task_id", task_id),
            ("event_type", event_type),
            ("outcome", outcome),
            ("since", since),
            ("until", until),
            ("principal_ref", principal_ref(principal) if principal else None),
        ):
            if value:
                params[name] = value
        return self._json("GET", "/v1/audit/events", params=params)

    def iter_audit_events(
        self,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_size: int = 1000,
        principal: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching event in chain order, fetched page by page.

        Appends made while iterating land after the pages already read, so offset
        paging in ``seq`` order neither skips nor repeats events.
        """
        page_size = max(1, min(page_size, 1000))  # the broker's largest page
        offset = 0
        while True:
            page = self.audit_events(
                agent_id=agent_id,
                task_id=task_id,
                event_type=event_type,
                outcome=outcome,
                since=since,
                until=until,
                limit=page_size,
                offset=offset,
                principal=principal,
            )
            events = page.get("events")
            if not isinstance(events, list) or not events:
                return
            for event in events:
                offset += 1
                yield event
            used = page.get("limit")
            if len(events) < (used if isinstance(used, int) and used > 0 else page_size):
                return

    def audit_total(self) -> int:
        """How many events the log holds."""
        total = self.audit_events(limit=1).get("total")
        return total if isinstance(total, int) else 0

    # -- the transparent audit log (docs/audit.md) -----------------------------------------

    def audit_event(self, seq: int) -> dict[str, Any]:
        """The event ``seq`` (``evt-<seq>``); ``NotFound`` if the log has no such event."""
        events = self.audit_events(limit=1, offset=seq - 1).get("events") if seq > 0 else []
        if not isinstance(events, list) or not events or events[0].get("seq") != seq:
            raise NotFound(f"no audit event evt-{seq:06d}")
        event: dict[str, Any] = events[0]
        return event

    def audit_checkpoint(self) -> str:
        """``GET /v1/audit/checkpoint``: the latest final checkpoint, a signed note."""
        response = self._authed("GET", "/v1/audit/checkpoint")
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.text

    def audit_log_keys(self) -> dict[str, Any]:
        """``GET /v1/audit/log-keys``: the origin, log vkeys, witness vkeys and quorum."""
        return self._json("GET", "/v1/audit/log-keys")

    def audit_inclusion_proof(self, index: int, size: int) -> dict[str, Any]:
        """``GET /v1/audit/proof/inclusion``: ``{"index", "size", "proof", "root"}``."""
        params = {"index": index, "size": size}
        return self._json("GET", "/v1/audit/proof/inclusion", params=params)

    def audit_consistency_proof(self, first: int, second: int) -> dict[str, Any]:
        """``GET /v1/audit/proof/consistency``: ``{"first", "second", "proof"}``."""
        params = {"first": first, "second": second}
        return self._json("GET", "/v1/audit/proof/consistency", params=params)

    def rotate_audit_log_key(self) -> dict[str, Any]:
        """``POST /v1/admin/audit/log-key/rotate``: a new log key signs from now on."""
        return self._json("POST", "/v1/admin/audit/log-key/rotate")
