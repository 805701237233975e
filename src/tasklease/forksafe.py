"""What a verifier or an SDK client carries across ``os.fork()``, made safe in the child.

A pre-forking server (gunicorn with ``preload_app``, ``multiprocessing`` with the fork
start method) builds its objects once and forks its workers: each child starts with a
copy of them. Three things in such a copy are not the child's own:

- **connections**: an httpx client's pool holds keep-alive TCP (or TLS) connections, and
  the child's copy names the same sockets as the parent's. Two processes sending on one
  connection read each other's answers (a JWKS, an introspection answer for another
  by-reference token, an app token). The child's pools are emptied: the inherited
  connections are abandoned, never used or shut down (nothing is sent on them; the
  child's file descriptors close, the parent's connection is untouched), and the child
  opens its own.
- **threads**: only the thread that forked is in the child. An object whose thread did
  not come along marks it stopped (``_after_fork_in_child``: the verifier's feed follower
  then starts again at its next use, from the cursor the copy holds).
- **locks**: a lock another thread held at the fork (a JWKS fetch's, a sign-in's) stays
  held in the child, with no thread to release it. Every lock, event and condition the
  object holds is reinitialised, unheld (an ``asyncio.Lock`` is replaced: it belongs to
  the parent's event loop).

Every httpx client the SDK or the verifier builds, and every object of theirs that holds
a lock or a thread, asks for this with :func:`track` (a weak reference: tracking keeps
nothing alive); a lock at module level with :func:`track_lock`. The work is done in the child
right after the fork (``os.register_at_fork``), while it has one thread: the user does
nothing. A client the user built and handed to the SDK (``client=``) is left as it is:
its pool is the user's to manage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import weakref
from typing import Any

__all__ = ["abandon_connections", "track", "track_lock"]

_log = logging.getLogger("tasklease")

_LOCKS = (type(threading.Lock()), type(threading.RLock()), threading.Event, threading.Condition)
# Transports that wrap others (bounds.LoopbackDirect, client._bounded.BoundedTransport and
# their async twins) keep them in these attributes.
_WRAPPED = ("inner", "proxy", "direct")

_tracked: dict[int, weakref.ref[Any]] = {}
_module_locks: list[Any] = []


def track(obj: object) -> None:
    """Make ``obj`` safe in a forked child (module docstring), held by a weak reference:
    an httpx client's pools emptied (:func:`abandon_connections`); any other object's
    locks, events and conditions (its attributes) reinitialised, then its
    ``_after_fork_in_child()`` called, if it has one."""
    key = id(obj)

    def gone(_ref: weakref.ref[Any], key: int = key) -> None:
        _tracked.pop(key, None)

    _tracked[key] = weakref.ref(obj, gone)


def track_lock(lock: Any) -> Any:
    """A module-level ``lock`` reinitialised, unheld, in a forked child. Returns it."""
    _module_locks.append(lock)
    return lock


def abandon_connections(client: Any) -> None:
    """Empty the connection pools of ``client``'s transports (``client`` an
    ``httpx.Client`` or ``AsyncClient``; httpx's own transports, also behind the SDK's and
    the verifier's wrappers) without closing a connection or sending a byte: the next
    request opens a new connection. A transport that is no pool (a test's mock,
    an ASGI app) has nothing to abandon."""
    seen: set[int] = set()
    stack: list[Any] = [getattr(client, "_transport", None)]
    stack.extend(getattr(client, "_mounts", {}).values())
    while stack:
        transport = stack.pop()
        if transport is None or id(transport) in seen:
            continue
        seen.add(id(transport))
        pool = getattr(transport, "_pool", None)
        if pool is not None and isinstance(getattr(pool, "_connections", None), list):
            pool._connections = []
            pool._requests = []
            lock = getattr(pool, "_optional_thread_lock", None)
            if lock is not None:
                pool._optional_thread_lock = type(lock)()
        stack.extend(getattr(transport, name, None) for name in _WRAPPED)
    # http.cookiejar's lock, held by a thread reading cookies at the fork.
    jar = getattr(getattr(client, "cookies", None), "jar", None)
    jar_lock = getattr(jar, "_cookies_lock", None)
    if jar_lock is not None:
        _reinit(jar_lock)


def _reinit(lock: Any) -> None:
    """``lock`` (a lock, an event, a condition) unheld, in place: whoever shares it
    shares the new state (what the standard library's own locks get in a child)."""
    lock._at_fork_reinit()


def _reset(obj: Any) -> None:
    # httpx is imported by whoever built a client: this module needs no more than the
    # standard library (the domain's caches and indexes are tracked too).
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(obj, httpx.Client | httpx.AsyncClient):
        abandon_connections(obj)
        return
    for name, value in list(vars(obj).items()):
        if isinstance(value, _LOCKS):
            _reinit(value)
        elif isinstance(value, asyncio.Lock):
            setattr(obj, name, asyncio.Lock())
    hook = getattr(obj, "_after_fork_in_child", None)
    if hook is not None:
        hook()


def _after_fork_in_child() -> None:
    for lock in _module_locks:
        _reinit(lock)
    for ref in list(_tracked.values()):
        obj = ref()
        if obj is None:
            continue
        try:
            _reset(obj)
        except Exception:  # noqa: BLE001 - one object's failure must not skip the others
            _log.exception("making %s safe after fork() failed", type(obj).__name__)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
