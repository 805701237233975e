"""The operators' listings on both SQL stores: agents, outstanding launch tokens and
revocation entries, newest first, one keyset page at a time (``core.inventory``).

The statements are built once per tenant by the :class:`~tasklease.storage._sql.dialect.
Dialect` (``dialect.listings``) from constant text and the checked tenant id; every value
is a bound parameter. A page continues after the previous page's last key, so rows
written meanwhile neither repeat nor shift a page, and each order has an index.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tasklease.core.store import (
    AgentRecord,
    AgentSession,
    AuditEvent,
    LaunchTokenRecord,
    ListQuery,
)
from tasklease.core.store import RevocationRecord as _Revocation

Row = tuple[Any, ...]

__all__ = ["ListingReads", "Listings"]

_MAX_PAGE = 1000
_MENTION = re.compile(r"[A-Za-z0-9_=]{1,128}")


def _qualified(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


class Listings:
    """One tenant's listing statements; ``q`` turns ``?`` into the driver's placeholder."""

    def __init__(
        self,
        tenant: str,
        q: Callable[[str], str],
        *,
        agent: str,
        session: str,
        launch: str,
        audit: str,
        contains: str,
        session_from_row: Callable[[Row], AgentSession],
        revocation_from_row: Callable[[Row], _Revocation],
    ) -> None:
        self.q = q
        self.session_from_row = session_from_row
        self.revocation_from_row = revocation_from_row
        self.agent_width = len(agent.split(","))
        a = f"a.tenant_id = '{tenant}'"
        t = f"tenant_id = '{tenant}'"
        self.agents = (
            f"SELECT {_qualified('a', agent)}, {_qualified('s', session)} FROM agents a"
            " LEFT JOIN agent_sessions s ON s.tenant_id = a.tenant_id"
            f" AND s.agent_id = a.agent_id WHERE {a}"
        )
        self.agent_filters = {
            "app_id": q(" AND a.app_id = ?"),
            "task_id": q(" AND a.task_id = ?"),
            "principal": q(" AND s.principal = ?"),
        }
        self.agents_after = q(
            " AND (a.registered_at < ? OR (a.registered_at = ? AND a.agent_id < ?))"
        )
        self.agents_page = q(" ORDER BY a.registered_at DESC, a.agent_id DESC LIMIT ?")
        self.launch_tokens = q(
            f"SELECT {launch} FROM launch_tokens WHERE {t} AND uses < max_uses AND expires_at > ?"
        )
        self.launch_filters = {
            "app_id": q(" AND app_id = ?"),
            "principal": q(" AND principal = ?"),
        }
        self.launch_after = q(" AND (created_at < ? OR (created_at = ? AND token_hash < ?))")
        self.launch_page = q(" ORDER BY created_at DESC, token_hash DESC LIMIT ?")
        self.revocations = (
            f"SELECT seq, level, target, revoked_at, expires_at FROM revocations WHERE {t}"
        )
        self.revocation_level = q(" AND level = ?")
        self.revocations_after = q(" AND seq < ?")
        self.revocations_page = q(" ORDER BY seq DESC LIMIT ?")
        self.audit_mentioning = q(f"{audit} WHERE {t} AND {contains.format('detail')}")
        self.audit_mentioning_page = q(" ORDER BY seq LIMIT ?")


def _limit(query: ListQuery) -> int:
    if query.limit <= 0:
        raise ValueError("limit must be positive")
    return min(query.limit, _MAX_PAGE)


class _Dialect(Protocol):
    """What the listings need of a dialect (``storage._sql.dialect.Dialect``)."""

    @property
    def listings(self) -> Listings: ...

    def agent_from_row(self, row: Row) -> AgentRecord: ...

    def launch_token_from_row(self, row: Row) -> LaunchTokenRecord: ...


class ListingReads(abc.ABC):
    """The listing reads of :class:`~tasklease.storage._sql.store.SQLStore`."""

    @property
    @abc.abstractmethod
    def dialect(self) -> _Dialect:
        """The tenant's dialect."""

    @abc.abstractmethod
    def _all(self, sql: str, params: Row = ()) -> list[Row]:
        """Every row of a read."""

    def list_agents(self, query: ListQuery) -> list[tuple[AgentRecord, AgentSession | None]]:
        dialect = self.dialect
        statements = dialect.listings
        sql = statements.agents
        params: list[object] = []
        for name in ("app_id", "task_id", "principal"):
            value = getattr(query, name)
            if value is not None:
                sql += statements.agent_filters[name]
                params.append(value)
        if query.after is not None:
            sql += statements.agents_after
            params += [query.after[0], query.after[0], query.after[1]]
        sql += statements.agents_page
        params.append(_limit(query))
        width = statements.agent_width
        found: list[tuple[AgentRecord, AgentSession | None]] = []
        for row in self._all(sql, tuple(params)):
            agent = dialect.agent_from_row(row[:width])
            rest = row[width:]
            found.append((agent, None if rest[0] is None else statements.session_from_row(rest)))
        return found

    def list_launch_tokens(self, query: ListQuery, now: float) -> list[LaunchTokenRecord]:
        dialect = self.dialect
        statements = dialect.listings
        sql = statements.launch_tokens
        params: list[object] = [now]
        for name in ("app_id", "principal"):
            value = getattr(query, name)
            if value is not None:
                sql += statements.launch_filters[name]
                params.append(value)
        if query.after is not None:
            sql += statements.launch_after
            params += [query.after[0], query.after[0], query.after[1]]
        sql += statements.launch_page
        params.append(_limit(query))
        return [dialect.launch_token_from_row(row) for row in self._all(sql, tuple(params))]

    def list_revocations(self, query: ListQuery) -> list[_Revocation]:
        statements = self.dialect.listings
        sql = statements.revocations
        params: list[object] = []
        if query.level is not None:
            sql += statements.revocation_level
            params.append(query.level)
        if query.after is not None:
            sql += statements.revocations_after
            params.append(int(query.after[0]))
        sql += statements.revocations_page
        params.append(_limit(query))
        return [statements.revocation_from_row(row) for row in self._all(sql, tuple(params))]

    def audit_mentioning(
        self, text: str, event_types: Sequence[str], limit: int
    ) -> list[AuditEvent]:
        if not _MENTION.fullmatch(text):
            raise ValueError("text must be letters, digits, = and _")
        statements = self.dialect.listings
        sql = statements.audit_mentioning
        if event_types:
            sql += statements.q(" AND event_type IN (" + ", ".join("?" for _ in event_types) + ")")
        sql += statements.audit_mentioning_page
        params = (text, *event_types, max(1, min(limit, _MAX_PAGE)))
        return [AuditEvent(*row) for row in self._all(sql, params)]
