"""The names of the directories inside a broker's ``key_dir``: the audit log key's and the
other tenants'.

A module of its own, importing nothing, so that a command that only walks the key
directories (``tasklease doctor``, ``tasklease keys encrypt``) does not load the broker
to learn two names: :mod:`tasklease.core.transparency` and :mod:`tasklease.core.tenants`
re-export them.
"""

from __future__ import annotations

__all__ = ["LOG_KEY_DIR", "TENANT_KEY_DIRS"]

# The directory, in a tenant's key directory, of its audit log's key (docs/audit.md).
LOG_KEY_DIR = "log"
# The directory, in the default tenant's key directory, of the other tenants' key
# directories (one per tenant, named after it).
TENANT_KEY_DIRS = "tenants"
