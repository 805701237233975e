"""What a host (a name or an address) says about where it reaches.

A module of its own, importing nothing of tasklease: the CLI asks it of every broker URL
before it sends a credential, and must not load the configuration's dependencies to
ask. :mod:`tasklease.core.config` re-exports it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address to bind, ``[v6]`` brackets allowed, or ``localhost``)
    reaches this machine only. Any other name is not: it may resolve to anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
