"""What a tenant id is: the name every layer checks (routes, storage, the CLI's
``--tenant``) before it reaches a URL, a key directory or an SQL literal; and the names
made of it (the path it is served under, its audit log's origin).

A module of its own, importing nothing of tasklease, so that checking a name costs no
more than the check: :mod:`tasklease.core.tenants` (the registry) re-exports it.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_TENANT",
    "TENANT_PATH_PREFIX",
    "check_tenant_id",
    "log_origin",
    "tenant_id_error",
]

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


def log_origin(config_origin: str, explicit: bool, tenant: str) -> str:
    """The origin a tenant's checkpoints name: an origin derived from the issuer is the
    tenant's already (its issuer is); an explicit one gets ``/t/<tenant>`` for tenants
    other than the default one (:mod:`tasklease.core.transparency` re-exports it)."""
    if explicit and tenant != DEFAULT_TENANT:
        return f"{config_origin}{TENANT_PATH_PREFIX}{tenant}"
    return config_origin
