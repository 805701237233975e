"""Tenants: what a tenant id is, and the registry's operations (create, list, remove).

A broker hosts the default tenant (today's paths, the configured trust domain) and any
number of others, each a SPIFFE trust domain of its own with its own signing keys,
issuer, apps, launch tokens, agents, revocations, operators and audit chain, served under
``/t/<name>/``. Each tenant is served by its own :class:`~tasklease.core.broker.Broker`
over a store limited to its rows (``Store.for_tenant``): isolation is by construction,
not by a check in each route. The registry lives in the default tenant's broker; only
its operators (``admin:tenants:*``) manage tenants.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_TENANT", "TENANT_PATH_PREFIX", "check_tenant_id", "tenant_id_error"]

# The tenant of every row written before tenants existed, and of today's paths.
DEFAULT_TENANT = "default"

# Where a tenant other than the default one is served: /t/<name>/...
TENANT_PATH_PREFIX = "/t/"

# A tenant id is a DNS label: lowercase letters, digits and inner hyphens, 1-63
# characters. It appears in URLs, key directory names and (checked again by the SQL
# dialect) as a literal in the tenant's statements, so nothing else may be in it.
_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def tenant_id_error(tenant: object) -> str | None:
    """Why ``tenant`` is not a valid tenant id, or None if it is."""
    if not isinstance(tenant, str) or _TENANT_ID.fullmatch(tenant) is None:
        return (
            "a tenant name is 1-63 characters from a-z, 0-9 and '-',"
            " not starting or ending with '-'"
        )
    return None


def check_tenant_id(tenant: str) -> str:
    """Return ``tenant`` if it is a valid tenant id, else raise ``ValueError``."""
    problem = tenant_id_error(tenant)
    if problem is not None:
        raise ValueError(f"not a tenant id: {tenant!r}: {problem}")
    return tenant
