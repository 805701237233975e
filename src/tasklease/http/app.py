"""The HTTP adapter: the Starlette application, its middleware and its lifespan.

The routes live by area in ``lease_routes`` (an agent's lease), ``agent_routes`` (agents
that trust each other), ``token_routes`` (RFC 7009 and RFC 7662), ``admin_routes``
(operators and apps), ``health_routes`` (health, metrics, discovery documents) and
``feed`` (the revocation feed); each parses, calls the Broker and translates. No
decisions are made here.

Blocking operations (anything that commits, and argon2 checks) run in the thread pool;
token validation is pure CPU and runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount

from tasklease.core.broker import Broker
from tasklease.core.errors import FailureRun, failure_run
from tasklease.core.readiness import INTERVAL, Readiness
from tasklease.federation import refresh_due
from tasklease.federation.revocations import FeedFollowers
from tasklease.http import wire
from tasklease.http._handling import http_error, request_context
from tasklease.http.access import AccessMiddleware
from tasklease.http.following import follow_revocations, open_wake
from tasklease.http.middleware import EnvelopeMiddleware, TrustedProxyMiddleware
from tasklease.http.oauth_routes import inserted_metadata_routes
from tasklease.http.ratelimit import gate_refusals
from tasklease.http.tenant_routes import (
    TENANT_MOUNT,
    Closer,
    TenantApps,
    tenant_admin_routes,
    tenant_routes,
)
from tasklease.http.token_routes import RequestURI
from tasklease.http.witnesses import (
    CHECKPOINT_TICK,
    WitnessClient,
    checkpoint_job,
    final_checkpoint,
)
from tasklease.tenancy import RECHECK, Tenancy

__all__ = ["create_app"]

_log = logging.getLogger("tasklease.http")
# How often a process looks for signing keys another process added (`keys rotate`).
KEY_REFRESH_INTERVAL = 1.0
# How often a process looks for federated bundles that are due (each has its own
# schedule, from its refresh hint: core.federation.Federation.next_refresh).
FEDERATION_REFRESH_INTERVAL = 1.0
# How often each tenant's policy directory is looked at for changes (docs/policy.md).
POLICY_RELOAD_INTERVAL = 2.0


def create_app(
    broker: Broker,
    *,
    background: bool = True,
    close_store: bool = False,
    metrics_render: Callable[[], bytes] | None = None,
    tenancy: Tenancy | None = None,
    tracer_provider: object | None = None,
) -> Starlette:
    """Build the ASGI application around a ready :class:`Broker`.

    ``background`` starts the housekeeping tasks (pruning, picking up revocations that
    other processes committed); tests that drive time by hand turn it off.
    ``close_store`` closes the broker's store when the application shuts down (the server
    owns the store; in-process tests usually keep it).
    ``metrics_render`` makes the text ``/v1/metrics`` answers with (when
    ``metrics_public`` is ``token``); by default the broker's own metrics, a worker of
    several passes the sum over all workers (``tasklease.http.metrics``).
    ``tenancy`` serves the other tenants under ``/t/<name>/`` (by default one made for
    ``broker``, which serves the default tenant at the root and the tenant registry).
    ``tracer_provider`` (an OpenTelemetry ``TracerProvider``) turns tracing on
    (``tasklease.http.tracing``); so does a global one configured before this is called.
    """
    cfg = broker.config
    tenancy = tenancy or Tenancy(broker)
    render = metrics_render or broker.metrics.render
    closers: list[Closer] = []
    routes: list[BaseRoute] = [
        *tenant_routes(broker, render_metrics=render, closers=closers),
        *tenant_admin_routes(tenancy, context=request_context(RequestURI(cfg))),
        # RFC 8414 section 3.1: a tenant's metadata, its issuer's path after the well-known
        # (behind the default tenant's refusal budget, as every route is behind one).
        *gate_refusals(broker, inserted_metadata_routes(tenancy, uri=RequestURI(cfg))),
        Mount(TENANT_MOUNT, app=TenantApps(tenancy, render_metrics=render, closers=closers)),
    ]
    readiness = broker.readiness
    # The federated domains' revocation feeds, followed by one process of the deployment.
    followers = FeedFollowers()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        witness_client = WitnessClient()
        # A store that notifies (PostgreSQL) is followed by a watch thread; others polled,
        # and woken by the process that committed (SQLite's datagram: its socket first).
        notified = getattr(broker.store, "start_watch", None) is not None
        wake = open_wake(broker.store) if background and not notified else None
        if background:
            # The index was loaded when the broker was built, before the application and
            # the server: what other processes revoked since (a worker respawned beside
            # others, a replica restarting) reached no wake-up or watch of ours. Read once
            # more before the first request is answered; later commits wake the socket
            # opened above, or the watch's reading on connecting takes them.
            await run_in_threadpool(_each(tenancy, Broker.refresh_revocations))
        # Tenant brokers made later start theirs when they are made (Tenancy.watching).
        stop_watch = broker.watch_revocations() if background else None
        if background:
            tenancy.watching = stop_watch is not None
            tasks.append(asyncio.create_task(_refreshing(readiness)))
            for interval, job in (
                # With tasklease_active_agents, read from the store (default tenant only).
                (cfg.prune_interval, Broker.prune),
                # What a store that went back in time lost, and this process holds.
                (KEY_REFRESH_INTERVAL, Broker.write_back_revocations),
                (KEY_REFRESH_INTERVAL, Broker.refresh_keys),
                # The trust bundle follows the keys (its sequence grows on each change).
                (KEY_REFRESH_INTERVAL, Broker.publish_trust_bundle),
                (FEDERATION_REFRESH_INTERVAL, refresh_due),
                (FEDERATION_REFRESH_INTERVAL, followers.tick),
                # Liveness: a silent agent is revoked within one interval of its deadline.
                (cfg.heartbeat_interval, Broker.sweep_silent_agents),
                # Issuance policies: a changed policy directory is in force within this.
                (POLICY_RELOAD_INTERVAL, Broker.reload_policies),
                # The audit log's checkpoints, and their witnesses' cosignatures.
                (CHECKPOINT_TICK, functools.partial(checkpoint_job, client=witness_client)),
            ):
                tasks.append(asyncio.create_task(_every(interval, _each(tenancy, job))))
            # The deployment's live agents from the start, not one interval later.
            tasks.append(asyncio.create_task(_once(_each(tenancy, Broker.refresh_active_agents))))
            # Tenants removed by another process or replica stop being served here, with
            # their revocation streams, even when no request for them comes here.
            tasks.append(asyncio.create_task(_every(RECHECK, tenancy.recheck)))
        if background and stop_watch is None:
            # Woken by the process that committed (SQLite's datagram), polled as well.
            follow = follow_revocations(
                _each(tenancy, Broker.refresh_revocations),
                interval=cfg.revocation_poll_interval,
                wake=wake,
                on_loop=broker.store.local_reads,
            )
            tasks.append(asyncio.create_task(follow))
        try:
            yield
        finally:
            if stop_watch is not None:
                await run_in_threadpool(stop_watch)
            for close in closers:
                await close()
            # The jobs end first (each after its round under way: ``_every``), so none
            # starts a feed follower or takes a lease again once given up below.
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await run_in_threadpool(followers.close)
            if background:
                # What the store lost (it went back in time) and this process still holds
                # is written back now, not at a round that will not come: gone with the
                # process, it would be lost for good (decision 259).
                await run_in_threadpool(_each(tenancy, Broker.write_back_revocations))
                # What this process wrote gets a checkpoint, so the anchor kept beside the
                # log key covers it: a restore to before it is refused (core.rollback).
                await run_in_threadpool(_each(tenancy, final_checkpoint))
                # Then the leases go, so another process signs checkpoints, sweeps and
                # follows the feeds at once, not when they expire (a crash still waits).
                await run_in_threadpool(_each(tenancy, Broker.release_leases))
            await run_in_threadpool(tenancy.close)
            witness_client.close()
            # Whatever the committer thread still has queued is written before we go.
            await run_in_threadpool(broker.audit.close)
            if close_store:
                # Here, not after uvicorn returns: on SIGTERM uvicorn re-raises the signal
                # once the lifespan has finished, and the process ends there.
                broker.store.close()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    # No redirect from a path with a trailing slash to one without: Starlette builds its
    # Location from the request's Host header, which a cache in front may not key on.
    app.router.redirect_slashes = False
    app.add_middleware(
        EnvelopeMiddleware,
        max_body=cfg.max_body_bytes,
        config=cfg,
        multiline=wire.MULTILINE_FIELDS,
    )
    # Around the envelope (its own refusals are requests too); it reads the request id,
    # the route and the client once the answer is done.
    app.add_middleware(AccessMiddleware, metrics=broker.metrics)
    if tracing_configured(tracer_provider):
        from tasklease.http.tracing import TracingMiddleware, instrument

        instrument(broker, tracer_provider=tracer_provider)  # type: ignore[arg-type]
        app.add_middleware(TracingMiddleware)
    if cfg.trusted_proxies:
        # Outermost, so every layer sees the client a trusted proxy names. The server does
        # no proxy-header handling of its own (see server.py and docs/decisions.md).
        app.add_middleware(TrustedProxyMiddleware, trusted=cfg.trusted_proxies)
    app.state.broker = broker
    return app


def tracing_configured(tracer_provider: object | None) -> bool:
    """Whether to trace: a provider given, or OpenTelemetry installed with a global
    provider that records (set by ``opentelemetry-instrument`` or the embedding program)."""
    if tracer_provider is not None:
        return True
    if importlib.util.find_spec("opentelemetry") is None:
        return False
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _each(tenancy: Tenancy, job: Callable[[Broker], object]) -> Callable[[], None]:
    """``job`` run on every tenant's broker in turn; one failing does not stop the rest.

    A job fails every round for as long as what it needs is away (storage locked, the key
    directory moved, a module's token gone), every second or so: the first failure of a
    run is logged with its traceback, a cause the run has not had again, and the end of
    the run once, with every round since its first failure (``core.errors.failure_run``,
    as the audit writes' runs are); the rounds in between only at debug level."""
    name = getattr(getattr(job, "func", job), "__name__", "job")
    runs: dict[str, FailureRun] = {}  # tenant: its run of failures under way

    def run() -> None:
        for broker in tenancy.brokers():
            tenant = broker.tenant
            try:
                job(broker)
            except Exception as exc:  # noqa: BLE001 - housekeeping must never take the server down
                failures, new = failure_run(runs.get(tenant), exc, time.monotonic())
                runs[tenant] = failures
                if new:
                    _log.exception(
                        "background job %s failed for tenant %s (logged once a run): %s",
                        name,
                        tenant,
                        failures.summary,
                    )
                else:
                    _log.debug("background job %s failed again for tenant %s", name, tenant)
                continue
            ended = runs.pop(tenant, None)
            if ended is not None:
                _log.warning(
                    "background job %s succeeds again for tenant %s after %d failed rounds "
                    "in %.1fs (%s)",
                    name,
                    tenant,
                    ended.rounds,
                    time.monotonic() - ended.since,
                    "; ".join(sorted(ended.causes)),
                )

    return run


async def _refreshing(readiness: Readiness) -> None:
    """Start the health checks every interval, on the loop (they run on their own
    threads): a thread pool taken up by requests stuck on storage cannot delay them."""
    while True:
        readiness.refresh()
        await asyncio.sleep(INTERVAL)


async def _every(interval: float, job: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval)
        # Cancelled, it still waits for the round under way (a thread is not cancelled):
        # nothing a round does comes after what the stop does next (a lease given up).
        round_ = asyncio.ensure_future(run_in_threadpool(job))
        try:
            await asyncio.shield(round_)
        except asyncio.CancelledError:
            await asyncio.wait([round_])
            _failed(round_)
            raise
        except Exception:  # noqa: BLE001 - housekeeping must never take the server down
            _log.exception("background job failed")


async def _once(job: Callable[[], object]) -> None:
    """``job`` run once, at once, on a thread (``_each`` logs what it raises)."""
    await run_in_threadpool(job)


def _failed(round_: asyncio.Future[object]) -> None:
    """Log the exception a finished round raised, if it raised one."""
    exc = None if round_.cancelled() else round_.exception()
    if exc is not None:
        _log.error("background job failed", exc_info=exc)
