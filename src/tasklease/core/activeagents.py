"""``tasklease_active_agents``: the deployment's live agents, read from the store.

The figure counts what the operators' word "active agent" means, for the whole
deployment (every replica and worker reads the same rows, so they agree): the agents of
every tenant not removed whose registration is live now. Live, as the store can count it
exactly in one statement (:meth:`tasklease.core.store.Store.live_agents`):

* registered within its ceiling: ``now`` before its registration's second plus the
  configured ``renewal_ceiling``, and before its own ``ceiling`` when it has one (an
  attestation policy's ``lifetime``): :func:`tasklease.core.lineage.registration_ceiling`;
* not revoked at level agent (its status, which that revocation and the liveness sweeper
  set), nor released or swept (its session, when it has one);
* its app, if any, not deregistered;
* not matched by a task-level revocation of its task made since it registered, nor by a
  chain-level one on its app or on an ancestor its registration lists (its attestation,
  a federated domain).

What it leaves to the kernel's standing (:meth:`tasklease.core.kernel.Kernel.standing`,
the console's per-agent state): a registration whose ``attest`` record does not parse,
and, for agents registered before their lineage was kept (schema 28), a chain-level
revocation of the attestation they registered through. It counts registrations, not
tokens: an agent whose last token was released or expired is live until its ceiling,
since it may resume.

The count is refreshed at each housekeeping tick (``prune_interval``) by the default
tenant's broker only, one statement that reads indexes rather than the agents' rows
(schema 30): the agents registered within ``renewal_ceiling``, active and within their
ceiling, are counted from one index holding those columns, and those of them that are
not live are found from the rows that end them (sessions not active, apps not active,
revocation entries in force), each through an index. Its cost follows the index entries
of the agents within the ceiling and the agents ended, not their rows; a chain-level
entry in force on an id a lineage lists (an attestation, a federated domain; no index
finds one) has the lineage of each agent within the ceiling read once. An agent whose
app has no row at all (the broker deletes no app) is counted by its other tests. A
count that took a quarter of a second or more is not made again before
:data:`ACTIVE_AGENTS_DUTY` times as long has passed, so a slow one never takes more than
5 % of one database connection; one the statement timeout cut alike, the gauge keeping
the last count. Each process
sets its gauge to what it read, and with ``--workers`` a scrape reports the most recent
worker's (``livemostrecent``), never a sum.
"""

from __future__ import annotations

import math

from tasklease.core.config import Config
from tasklease.core.store import Store

__all__ = ["ACTIVE_AGENTS_DUTY", "ACTIVE_AGENTS_SLOW", "live_agents", "registered_from"]

# A count that took at least ACTIVE_AGENTS_SLOW seconds is not made again before
# ACTIVE_AGENTS_DUTY times as long has passed.
ACTIVE_AGENTS_DUTY = 20
ACTIVE_AGENTS_SLOW = 0.25


def registered_from(now: float, config: Config) -> float:
    """The earliest ``registered_at`` whose registration is within the configured
    ``renewal_ceiling`` at ``now``: ``now < int(registered_at) + renewal_ceiling``."""
    return float(math.floor(now - config.renewal_ceiling) + 1)


def live_agents(store: Store, now: float, config: Config) -> int:
    """The deployment's live agents at ``now`` (the module's definition)."""
    return store.live_agents(now, registered_from(now, config))
