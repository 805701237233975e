"""The operator's web console at ``/console``: server-rendered pages (Jinja2, autoescaped)
over the same Broker the API calls, a little vendored script for the parts that update
themselves, and a strict Content-Security-Policy (no inline script or style).

Every page authenticates the session's token with the broker (``_session``) for the
scope the API route it mirrors needs (:data:`_PAGES`): reading agents, launch tokens,
revocations and the audit log needs ``admin:audit:*`` (every role), the app registry
``admin:launch-tokens:*`` and revoking ``admin:revoke:*`` (neither the auditor's: its
navigation has no link to the apps and its pages no revoke button, and the broker refuses
them anyway). A refusal shows its ``denial_id``, as a problem body does. Every action is
a Broker call, as the API makes it: no rule is written twice. Turned off with
``console = false`` (docs/console.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, quote, urlencode

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from tasklease.core.auditcheck import ShownCheck, WalkResult, check_shown, walk_log
from tasklease.core.broker import Broker, RequestContext
from tasklease.core.brokerbase import ConsoleFormRefusal
from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.errors import (
    InsufficientScope,
    InvalidRequest,
    NotFound,
    RateLimited,
    TaskleaseError,
    Unauthorized,
    Unavailable,
    failure_summary,
)
from tasklease.core.records import AuditEvent, AuditQuery
from tasklease.core.spiffe import parse_agent_id
from tasklease.core.tenants import DEFAULT_TENANT
from tasklease.core.tokencheck import held_scopes
from tasklease.core.tokens import KIND_ADMIN, Claims
from tasklease.http.admin_routes import APPS_SCOPE, REVOKE_SCOPE, parse_int
from tasklease.http.audit_routes import AUDIT_READ_SCOPE
from tasklease.http.console._charts import MetricSampler, sparkline
from tasklease.http.console._session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    csrf_for,
    login_csrf,
    plain_http_refused,
    same_origin,
    set_cookie,
    valid_csrf,
)
from tasklease.http.console._static import static_route
from tasklease.http.inventory_routes import READ_SCOPE as INVENTORY_SCOPE
from tasklease.http.middleware import is_form
from tasklease.http.problems import status_for
from tasklease.http.ratelimit import limit_sign_in
from tasklease.http.token_routes import RequestURI
from tasklease.rules.controls import escaped
from tasklease.rules.scopes import is_subset

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["CONSOLE_CSP", "WalkFailure", "WalkView", "console_routes"]

_log = logging.getLogger("tasklease.audit")

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ADMIN = frozenset({KIND_ADMIN})
KEYS_SCOPE = "admin:keys:*"
"""The scope of the signing-key routes (``POST /v1/admin/keys/...``): the admin role's."""


class _Page(NamedTuple):
    """A page of the navigation and the scope of the API route it mirrors."""

    key: str
    label: str
    path: str
    scope: str


# The one place a page's scope is written: its route is guarded with it, and the
# navigation links only the pages the session's scopes open.
_PAGES = (
    _Page("overview", "Overview", "/", INVENTORY_SCOPE),
    _Page("agents", "Agents", "/agents", INVENTORY_SCOPE),
    _Page("launch-tokens", "Launch tokens", "/launch-tokens", INVENTORY_SCOPE),
    _Page("apps", "Apps", "/apps", APPS_SCOPE),
    _Page("revocations", "Revocations", "/revocations", INVENTORY_SCOPE),
    _Page("audit", "Audit", "/audit", AUDIT_READ_SCOPE),
    _Page("keys", "Signing keys", "/keys", KEYS_SCOPE),
)
_SCOPE_OF = {page.key: page.scope for page in _PAGES}


def _holds(claims: Claims, scope: str) -> bool:
    """Whether the session's token passes the broker's gate for ``scope``
    (``TokenCheck.authenticate``'s test, for what a page draws)."""
    return is_subset([scope], held_scopes(claims))


_LEVELS = ("token", "agent", "task", "chain")
_EVENTS = 100
"""The audit events a page lists at a time."""

_TITLE_ID = 48
"""Characters of an id a page's title names at most."""


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def _title_id(value: object) -> str:
    """An agent's or a task's id as its page's title names it, so browser tabs and
    history tell the pages apart: an agent's SPIFFE ID by its task and the first 8
    characters of its instance (the trust domain and orchestrator are most often the same
    for all), any id clipped to :data:`_TITLE_ID` characters. Escaped by the template."""
    text = str(value)
    agent = parse_agent_id(text)
    if agent is not None:
        return f"{_clip(agent.task_id, _TITLE_ID - 9)}/{agent.instance_id[:8]}"
    return _clip(text, _TITLE_ID)


def _quoted(value: str) -> str:
    """``value`` as an HTTP quoted-string (RFC 9110 section 5.6.4)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shown(value: object) -> object:
    """A value a page writes, every character of ``rules.controls`` in its text (a
    stored event's, a name's) written ``\\uXXXX``: none reorders or breaks a cell."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return escaped(value)
    return value


_environment: list[Environment] = []  # made at the first page served (_templates)
_environment_lock = threading.Lock()


def _templates() -> Environment:
    """The console's templates: made at the first page, not at each broker's start (jinja2
    is imported then; most brokers serve no console page in their life)."""
    with _environment_lock:
        if not _environment:
            from jinja2 import Environment, FileSystemLoader, select_autoescape

            templates = Environment(
                loader=FileSystemLoader(str(files("tasklease.http.console") / "templates")),
                autoescape=select_autoescape(default=True, default_for_string=True),
                trim_blocks=True,
                lstrip_blocks=True,
                finalize=_shown,
            )
            templates.filters["q"] = lambda value: quote(str(value), safe="")
            templates.filters["plural"] = lambda n, word: (
                f"{n} {word}" if n == 1 else f"{n} {word}s"
            )
            templates.filters["title_id"] = _title_id
            templates.filters["when"] = lambda ts: format_rfc3339_seconds(ts) if ts else ""
            _environment.append(templates)
        return _environment[0]


class _SignIn(Exception):
    """No valid session: send the browser to the sign-in page, with the ``denial_id`` of
    the broker's refusal of the session's token ("" when there was no token to refuse)."""

    def __init__(self, denial_id: str = "") -> None:
        super().__init__(denial_id)
        self.denial_id = denial_id


# The shape of a denial id (core.kernel.new_denial_id): what the sign-in page takes from
# its query string, nothing else.
_DENIAL_ID = re.compile(r"den_[0-9a-f]{16}")


class WalkFailure(NamedTuple):
    """The last attempt at a full walk, when it did not finish: when it started and failed
    (the broker's clock) and why, in words that quote nothing it read
    (:func:`~tasklease.core.errors.failure_summary`)."""

    started_at: float
    failed_at: float
    cause: str


class WalkView(NamedTuple):
    """What the audit page says of the full walks: the last finished one's result, when
    the one running started (None: none runs), and the last attempt's failure (None: the
    last attempt finished, or none failed since)."""

    last: WalkResult | None
    running_since: float | None
    failed: WalkFailure | None


class _FullWalks:
    """The full walk of the audit log (:func:`walk_log`: the chain, and the Merkle tree
    rebuilt from every event) for the audit page: ``O(n)``, about 10 s per million events,
    so never in a page's request. A view of the page starts one, in a thread of its own,
    when none is running and none started in the last ``console_audit_walk_interval``
    seconds; every view shows the last one's verdict, when it ran and through which event,
    and, when the last attempt did not finish (the store unreadable, no thread), that it
    failed, when and why: the earlier verdict is then no longer the current one."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._every = broker.config.console_audit_walk_interval
        self._lock = threading.Lock()
        self._started: float | None = None  # monotonic seconds of the latest start
        self._running_since: float | None = None  # the broker's clock, while one runs
        self.last: WalkResult | None = None
        self.failed: WalkFailure | None = None

    def view(self) -> WalkView:
        """The walks' state, once a walk was started if one is due."""
        broker = self._broker
        with self._lock:
            now = time.monotonic()
            due = self._started is None or now - self._started >= self._every
            if self._running_since is None and due:
                self._started = now
                since = self._running_since = broker.kernel.now()
                try:
                    self._launch(since)
                except Exception as exc:  # noqa: BLE001 - shown and logged; tried again later
                    self._running_since = None
                    self._fail(since, exc)
            return WalkView(self.last, self._running_since, self.failed)

    def _launch(self, started: float) -> None:
        """Start the walk begun at ``started`` (the broker's clock) in a thread of its own."""
        thread = threading.Thread(target=self._walk, args=(started,), name="audit-walk")
        thread.daemon = True
        thread.start()

    def _fail(self, started: float, exc: Exception) -> None:
        """Record (under the lock) and log that the attempt begun at ``started`` failed."""
        self.failed = WalkFailure(started, self._broker.kernel.now(), failure_summary(exc))
        _log.error(
            "the full walk of the audit log did not finish: %s; tried again in %g s",
            self.failed.cause,
            self._every,
            exc_info=exc,
        )

    def _walk(self, started: float) -> None:
        broker = self._broker
        result: WalkResult | None = None
        failure: Exception | None = None
        try:
            result = walk_log(broker.store, broker.transparency.log_keys(), broker.kernel.now)
        except Exception as exc:  # noqa: BLE001 - shown and logged; walked again later
            failure = exc
        finally:
            with self._lock:
                self._running_since = None
                if result is not None:
                    self.last, self.failed = result, None
                elif failure is not None:
                    self._fail(started, failure)


def console_routes(
    broker: Broker,
    *,
    context: Callable[[Request], RequestContext],
) -> list[BaseRoute]:
    """The console's routes under ``/console`` (none when the config turns it off).
    Sign-ins spend the broker's admin sign-in limit by client address (``limit_sign_in``):
    the API's admin and operator sign-ins share it, so switching between the two buys
    no attempts."""
    if not broker.config.console:
        return []
    inventory = broker.inventory
    # The process's metrics are the platform's, every tenant's summed (docs/tenants.md):
    # only the default tenant's console draws them; another tenant's operators would
    # read in them how busy the other tenants are.
    sampler = MetricSampler(broker.metrics) if broker.tenant == DEFAULT_TENANT else None
    uri = RequestURI(broker.config)
    walks = _FullWalks(broker)

    def held(events: Sequence[AuditEvent]) -> ShownCheck:
        """The audit events a page shows (just read), each held to the Merkle tree on
        record and that tree to the signed checkpoint (``O(log n)`` each): every page
        listing events marks, from this one check, those not as written."""
        return check_shown(broker.store, events, broker.transparency.log_keys())

    def own_origin(request: Request) -> bool:
        return same_origin(request, uri.origins(request.scope))

    def base(request: Request) -> str:
        # Inside the console's Mount the root path ends with /console already (and starts
        # with /t/<name> for another tenant's console).
        root = str(request.scope.get("root_path", ""))
        return root if root.endswith("/console") else root + "/console"

    def challenged(request: Request, response: Response) -> Response:
        """``response``, with the console's challenge when it is a 401 (RFC 9110 section
        11.6.1: every 401 carries one): its form sign-in and session cookie, in the
        ``Cookie`` scheme's shape (draft-broyer-http-cookie-auth), which no browser
        prompts for."""
        if response.status_code == 401:
            action = _quoted(f"{base(request)}/login")
            response.headers["www-authenticate"] = (
                f'Cookie realm="tasklease console", form-action={action}, '
                f"cookie-name={_quoted(SESSION_COOKIE)}"
            )
        return response

    # Whether "no operator name" signs in with an admin secret here: never at a tenant's
    # console (a tenant has no admin secret; its operators are its own).
    admin_secret = bool(broker.config.admin_secret_hash)

    def page(request: Request, template: str, status: int = 200, **values: Any) -> Response:
        shown = _templates().get_template(template)
        html = shown.render(base=base(request), status=status, admin_secret=admin_secret, **values)
        response = HTMLResponse(html, status)
        response.headers["content-security-policy"] = CONSOLE_CSP
        # Browsers send ``Origin: null`` under no-referrer; the CSRF check reads Origin.
        response.headers["referrer-policy"] = "same-origin"
        return challenged(request, response)

    async def session(request: Request, scope: str) -> tuple[Claims, str]:
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            raise _SignIn
        ctx = context(request)

        def check() -> Claims:
            return broker.authenticate(f"Bearer {token}", ctx, kinds=_ADMIN, scope=scope)

        try:
            return await run_in_threadpool(check), token
        except InsufficientScope:
            raise
        except Unauthorized as exc:
            raise _SignIn(exc.denial_id or "") from None

    def viewer(claims: Claims, token: str) -> dict[str, Any]:
        return {
            "who": claims.sub,
            "pages": [page for page in _PAGES if _holds(claims, page.scope)],
            "can_revoke": _holds(claims, REVOKE_SCOPE),
            "csrf": csrf_for(token),
            "expires": format_rfc3339_seconds(claims.exp),
        }

    def signed_out(request: Request, denial_id: str) -> Response:
        """The answer to a request without a valid session: a fragment's script reloads
        its page on a 401; a page goes to the sign-in page, which names the refusal."""
        if request.headers.get("x-console-fragment"):
            text = "session ended"
            if denial_id:
                why = f"the audit log's event ending denial={denial_id} says why"
                text += f"; refusal {denial_id}: {why}"
            return challenged(request, Response(text + "\n", 401, media_type="text/plain"))
        query = f"?{urlencode({'denial': denial_id})}" if denial_id else ""
        return RedirectResponse(f"{base(request)}/login{query}", 303)

    async def refused_form(
        request: Request, reason: ConsoleFormRefusal, *, operator: str, signed_in: bool
    ) -> Response:
        """A form from another origin or without its page's CSRF value, or any request
        over plain HTTP from beyond loopback: audited once (the broker's
        ``console_form_refused``), answered 403 with the refusal's id."""
        origin = request.headers.get("origin", "")
        try:
            exc = await broker.refuse_console_form(
                reason, context(request), operator=operator, origin=origin
            )
        except TaskleaseError as failed:  # its event could not be written: 503
            exc = failed
        message = _PLAIN_HTTP if reason == "plain_http" else _STALE_FORM
        return page(
            request,
            "error.html",
            status_for(exc.code),
            message=message if exc.denial_id else exc.detail,
            denial_id=exc.denial_id,
            signed_in=signed_in,
        )

    async def plain_http(request: Request) -> Response:
        """A request over plain HTTP from beyond loopback (``plain_http_refused``)."""
        return await refused_form(request, "plain_http", operator="", signed_in=False)

    def guarded(
        handler: Callable[[Request, dict[str, Any]], Any], scope: str
    ) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            if plain_http_refused(request):
                return await plain_http(request)
            if request.method == "POST" and not own_origin(request):
                # Before the session: another site's forged form comes without the session
                # cookie (SameSite=Strict), and is refused and audited all the same.
                return await refused_form(request, "cross_origin", operator="", signed_in=False)
            try:
                claims, token = await session(request, scope)
                result: Response = await handler(request, viewer(claims, token))
                return result
            except _SignIn as ended:
                return signed_out(request, ended.denial_id)
            except NotFound as exc:
                return page(request, "error.html", 404, message=exc.detail, signed_in=True)
            except TaskleaseError as exc:
                # The status the API answers the same error with (problems.status_for).
                refused = page(
                    request,
                    "error.html",
                    status_for(exc.code),
                    message=exc.detail,
                    denial_id=exc.denial_id,
                    signed_in=True,
                )
                if exc.retry_after is not None:
                    refused.headers["retry-after"] = str(exc.retry_after)
                return refused

        run.__name__ = getattr(handler, "__name__", "page")
        return run

    # -- sign-in ------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        if plain_http_refused(request):
            return await plain_http(request)
        value = login_csrf()
        # Sent here from a page whose session the broker refused: name that refusal. Only
        # a denial id's exact shape is shown; anything else in the query is ignored.
        shown = request.query_params.get("denial", "")
        ended = shown if _DENIAL_ID.fullmatch(shown) else ""
        response = page(
            request,
            "login.html",
            csrf=value,
            error=_ENDED if ended else "",
            denial_id=ended,
        )
        set_cookie(response, request, LOGIN_COOKIE, value, path=base(request), max_age=600)
        return response

    async def login(request: Request) -> Response:
        if plain_http_refused(request):
            return await plain_http(request)
        if not own_origin(request):
            return await refused_form(request, "cross_origin", operator="", signed_in=False)
        form = await _form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not valid_csrf(expected, form.get("csrf", "")):
            return await refused_form(request, "stale_form", operator="", signed_in=False)
        try:
            await limit_sign_in(broker, "admin", request)
        except TaskleaseError as exc:  # 429, or 503: its run's event could not be written
            limited = isinstance(exc, RateLimited)
            return sign_in_refused(request, exc, expected, _TOO_MANY if limited else "")
        name, secret = form.get("operator", "").strip(), form.get("secret", "")
        ctx = context(request)

        def sign_in() -> tuple[str, int]:
            if name:
                issued, _ = broker.operator_auth(
                    name=name, secret=secret, nonce=None, signature=None, ctx=ctx
                )
            else:
                issued = broker.admin_auth(secret, ctx)
            return issued.token, issued.expires_in

        try:
            token, lifetime = await run_in_threadpool(sign_in)
        except TaskleaseError as exc:
            refused = exc
            if not exc.denial_id:
                # Refused before the broker audited it (a malformed name, no secret, the
                # store out): audited now, if the log can be written (else no refusal
                # can be named).
                try:
                    refused = await broker.refuse_console_sign_in(exc, ctx, operator=name)
                except TaskleaseError as failed:
                    refused = failed
            if isinstance(refused, Unavailable):
                # Not "check the secret": the secret may well be right.
                return sign_in_refused(request, refused, expected, "")
            # One message whichever was wrong; the denial id leads to the audited reason.
            # The name typed is not sent back: a secret typed one field too early lands
            # there, and keeping only the names of operators would say which exist.
            return page(
                request,
                "login.html",
                401,
                csrf=expected,
                error=_WRONG,
                denial_id=refused.denial_id,
            )
        response = RedirectResponse(f"{base(request)}/", 303)
        set_cookie(response, request, SESSION_COOKIE, token, path=base(request), max_age=lifetime)
        set_cookie(response, request, LOGIN_COOKIE, "", path=base(request), max_age=0)
        return response

    def sign_in_refused(request: Request, exc: TaskleaseError, csrf: str, message: str) -> Response:
        """The sign-in page for a sign-in refused for a while (429) or while the broker
        cannot sign anyone in (503): its status, ``Retry-After`` and ``denial_id``, and
        ``message`` or, for a 503, when to come back, never its cause."""
        if not message:
            wait = f" (in {exc.retry_after} s)" if exc.retry_after else ""
            message = f"{_UNAVAILABLE}{wait}."
        response = page(
            request,
            "login.html",
            status_for(exc.code),
            csrf=csrf,
            error=message,
            denial_id=exc.denial_id,
        )
        if exc.retry_after is not None:
            response.headers["retry-after"] = str(exc.retry_after)
        return response

    async def logout(request: Request) -> Response:
        form = await _form(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if not own_origin(request):
            return await refused_form(request, "cross_origin", operator="", signed_in=False)
        if not (token and valid_csrf(csrf_for(token), form.get("csrf", ""))):
            return await refused_form(request, "stale_form", operator="", signed_in=False)
        ctx = context(request)

        def end() -> None:
            # The session's token is revoked, not only forgotten by this browser: a copy
            # of the cookie stops working too. One no longer valid has nothing to end.
            with contextlib.suppress(Unauthorized):
                claims = broker.authenticate(f"Bearer {token}", ctx, kinds=_ADMIN)
                broker.end_session(claims, ctx=ctx)

        try:
            await run_in_threadpool(end)
        except TaskleaseError as exc:  # not recorded (storage): keep the cookie, say so
            message = f"signing out could not be recorded: {exc.detail}"
            return page(request, "error.html", 503, message=message, signed_in=True)
        response = RedirectResponse(f"{base(request)}/login", 303)
        set_cookie(response, request, SESSION_COOKIE, "", path=base(request), max_age=0)
        return response

    # -- pages --------------------------------------------------------------------------

    async def overview(request: Request, me: dict[str, Any]) -> Response:
        return page(request, "overview.html", me=me, nav="overview", **await _overview())

    async def overview_live(request: Request, me: dict[str, Any]) -> Response:
        return page(request, "_overview_live.html", me=me, **await _overview())

    async def _overview() -> dict[str, Any]:
        def read() -> dict[str, Any]:
            agents = inventory.agents(state="active", limit=500)
            tokens = inventory.launch_tokens(limit=500)
            revocations = inventory.revocations(limit=500)
            counts: dict[str, Any] = {
                "live_agents": len(agents.items),
                "more_agents": bool(agents.next_cursor),
                "launch_tokens": len(tokens.items),
                "more_launch_tokens": bool(tokens.next_cursor),
                "revocations": len(revocations.items),
                "more_revocations": bool(revocations.next_cursor),
                "platform": sampler is not None,
            }
            if sampler is None:
                return {**counts, "charts": [], "p99": ""}
            charts, p99 = sampler.charts()
            return {
                **counts,
                "charts": [(c, Markup(sparkline(c.rates))) for c in charts],  # noqa: S704 - numbers only
                "p99": _seconds_text(p99),
            }

        return await run_in_threadpool(read)

    def _agent_filters(request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q.get(k, "") for k in ("app_id", "task_id", "principal", "state") if q.get(k)}

    async def agents(request: Request, me: dict[str, Any]) -> Response:
        filters = _agent_filters(request)
        return page(
            request,
            "agents.html",
            me=me,
            nav="agents",
            filters=filters,
            **await _agents(filters, request.query_params.get("cursor") or None),
        )

    async def agents_rows(request: Request, me: dict[str, Any]) -> Response:
        filters = _agent_filters(request)
        listing = await _agents(filters, request.query_params.get("cursor") or None)
        return page(request, "_agent_rows.html", me=me, **listing)

    async def _agents(filters: dict[str, str], cursor: str | None) -> dict[str, Any]:
        found = await run_in_threadpool(
            lambda: inventory.agents(
                app_id=filters.get("app_id"),
                task_id=filters.get("task_id"),
                principal=filters.get("principal"),
                state=filters.get("state"),
                cursor=cursor,
                limit=100,
            )
        )
        older = found.next_cursor
        return {
            "agents": found.items,
            "query": urlencode(filters),
            # The table's refresh keeps to the page shown (a cursor's page, not the
            # newest), and draws the link to the next page with the rows it shows: the
            # rows a refresh pushes off this page are the next page's first.
            "refresh": urlencode({**filters, "cursor": cursor} if cursor else filters),
            "older": urlencode({**filters, "cursor": older}) if older else "",
            "paged": cursor is not None,
        }

    async def agent(request: Request, me: dict[str, Any]) -> Response:
        agent_id = request.path_params["agent_id"]

        def read() -> dict[str, Any]:
            view = inventory.agent(agent_id)
            task = inventory.task(view.agent.task_id)
            # Its latest events, as the task page lists its task's (the log is in chain
            # order, oldest first).
            events, total = broker.audit_events(AuditQuery(agent_id=agent_id, limit=_EVENTS))
            if total > _EVENTS:
                query = AuditQuery(agent_id=agent_id, limit=_EVENTS, offset=total - _EVENTS)
                events, total = broker.audit_events(query)
            return {
                "view": view,
                "task": task,
                "events": events,
                "events_total": total,
                "shown": held(events),
            }

        return page(request, "agent.html", me=me, nav="agents", **await run_in_threadpool(read))

    async def task(request: Request, me: dict[str, Any]) -> Response:
        task_id = request.path_params["task_id"]

        def read() -> dict[str, Any]:
            view = inventory.task(task_id)
            return {"task": view, "shown": held(view.events)}

        return page(request, "task.html", me=me, nav="agents", **await run_in_threadpool(read))

    async def token(request: Request, me: dict[str, Any]) -> Response:
        jti = request.path_params["jti"]
        view = await run_in_threadpool(lambda: inventory.delegations(jti))
        return page(request, "token.html", me=me, nav="agents", view=view)

    async def launch_tokens(request: Request, me: dict[str, Any]) -> Response:
        found = await run_in_threadpool(
            lambda: inventory.launch_tokens(cursor=request.query_params.get("cursor"), limit=100)
        )
        return page(
            request,
            "launch_tokens.html",
            me=me,
            nav="launch-tokens",
            tokens=found.items,
            next_cursor=found.next_cursor,
            paged=bool(request.query_params.get("cursor")),
        )

    async def apps(request: Request, me: dict[str, Any]) -> Response:
        found = await run_in_threadpool(broker.list_apps)
        return page(request, "apps.html", me=me, nav="apps", apps=found)

    async def revocations(request: Request, me: dict[str, Any]) -> Response:
        level = request.query_params.get("level") or None
        found = await run_in_threadpool(
            lambda: inventory.revocations(
                level=level, cursor=request.query_params.get("cursor"), limit=100
            )
        )
        return page(
            request,
            "revocations.html",
            me=me,
            nav="revocations",
            level=level or "",
            entries=found.items,
            next_cursor=found.next_cursor,
            paged=bool(request.query_params.get("cursor")),
            levels=_LEVELS,
        )

    def _audit_query(
        request: Request, limit: int, offset: int
    ) -> tuple[AuditQuery, dict[str, str]]:
        q = request.query_params
        names = ("agent_id", "task_id", "event_type", "outcome")
        filters = {k: q.get(k, "") for k in names if q.get(k)}
        if filters.get("outcome") not in (None, "success", "denied"):
            filters.pop("outcome")
        return AuditQuery(limit=limit, offset=offset, **filters), filters  # type: ignore[arg-type]

    async def audit(request: Request, me: dict[str, Any]) -> Response:
        # Without an offset (or with one that is no number), the latest page: the log is
        # in chain order, oldest first, and an operator comes to it for what just happened.
        raw = request.query_params.get("offset")
        try:
            asked = max(0, parse_int(raw, "offset", 0)) if raw else None
        except InvalidRequest:
            asked = None
        query, filters = _audit_query(request, _EVENTS, asked or 0)

        def read() -> dict[str, Any]:
            # The events shown, each held to the Merkle tree (O(log n) each); every event
            # by the last full walk, which this view starts when one is due (_FullWalks).
            events, total = broker.audit_events(query)
            offset = query.offset
            if asked is None and total > _EVENTS:
                offset = total - _EVENTS
                events, total = broker.audit_events(dataclasses.replace(query, offset=offset))
            shown = held(events)
            walks_now = walks.view()
            return {
                "events": events,
                "total": total,
                "offset": offset,
                # The pages around this one (offsets; None: no such page): past the end,
                # "earlier" leads back to the last page.
                "earlier": max(0, min(offset, total) - _EVENTS) if offset > 0 else None,
                "later": offset + _EVENTS if offset + len(events) < total else None,
                "shown": shown,
                "walk": walks_now.last,
                "walking_since": walks_now.running_since,
                "walk_failed": walks_now.failed,
                "walk_every": _interval_text(broker.config.console_audit_walk_interval),
            }

        return page(
            request,
            "audit.html",
            me=me,
            nav="audit",
            filters=filters,
            query=urlencode(filters),
            **await run_in_threadpool(read),
        )

    async def audit_export(request: Request, me: dict[str, Any]) -> Response:
        import json

        query, _ = _audit_query(request, 100_000, 0)

        def read() -> bytes:
            events, _ = broker.audit_events(query)
            lines = (
                json.dumps({k: getattr(e, k) for k in _EXPORTED}, separators=(",", ":"))
                for e in events
            )
            return ("\n".join(lines) + "\n").encode() if events else b""

        body = await run_in_threadpool(read)
        return Response(
            body,
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="audit.jsonl"'},
        )

    async def keys(request: Request, me: dict[str, Any]) -> Response:
        kids = broker.keyring.kids()
        return page(request, "keys.html", me=me, nav="keys", active=kids[0], older=kids[1:])

    async def retire_confirm(request: Request, me: dict[str, Any]) -> Response:
        kid = request.query_params.get("kid", "")
        if kid not in broker.keyring.kids()[1:]:
            raise NotFound("no older signing key has this kid")
        return page(request, "retire.html", me=me, nav="keys", kid=kid)

    async def retire(request: Request, me: dict[str, Any]) -> Response:
        form = await _form(request)
        # Its origin was checked before its session (guarded).
        if not valid_csrf(me["csrf"], form.get("csrf", "")):
            return await refused_form(request, "stale_form", operator=me["who"], signed_in=True)
        token = request.cookies.get(SESSION_COOKIE, "")
        ctx = context(request)

        def act() -> None:
            # The broker authenticates the session for the keys' scope, then retires: the
            # refusals (the active key, a kid gone) are audited there.
            claims = broker.authenticate(f"Bearer {token}", ctx, kinds=_ADMIN, scope=KEYS_SCOPE)
            broker.retire_signing_key(claims, form.get("kid", ""), ctx)

        await run_in_threadpool(act)
        return RedirectResponse(f"{base(request)}/keys", 303)

    async def revoke_confirm(request: Request, me: dict[str, Any]) -> Response:
        level = request.query_params.get("level", "")
        target = request.query_params.get("target", "")
        back = _local(request.query_params.get("back", ""), base(request))
        preview = await run_in_threadpool(lambda: inventory.preview(level, target))
        return page(request, "revoke.html", me=me, nav="", preview=preview, back=back)

    async def revoke(request: Request, me: dict[str, Any]) -> Response:
        form = await _form(request)
        # Its origin was checked before its session (guarded).
        if not valid_csrf(me["csrf"], form.get("csrf", "")):
            return await refused_form(request, "stale_form", operator=me["who"], signed_in=True)
        token = request.cookies.get(SESSION_COOKIE, "")
        ctx = context(request)
        level, target = form.get("level", ""), form.get("target", "")

        def act() -> int:
            # The broker authenticates the session for the revocation scope, then revokes:
            # an auditor's session is refused here whatever the page showed.
            claims = broker.authenticate(f"Bearer {token}", ctx, kinds=_ADMIN, scope=REVOKE_SCOPE)
            return broker.revoke(claims, level=level, target=target, ctx=ctx)

        await run_in_threadpool(act)
        back = _local(form.get("back", ""), base(request))
        return RedirectResponse(back, 303)

    async def unknown(request: Request) -> Response:
        return page(request, "error.html", 404, message="No such console page.")

    # Each route under the scope of the navigation page it belongs to (_PAGES); the
    # agent, task and token pages mirror the inventory routes, as the agents page does.
    routes = [
        Route("/", guarded(overview, _SCOPE_OF["overview"]), methods=["GET"]),
        Route("/live/overview", guarded(overview_live, _SCOPE_OF["overview"]), methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/agents", guarded(agents, _SCOPE_OF["agents"]), methods=["GET"]),
        Route("/live/agents", guarded(agents_rows, _SCOPE_OF["agents"]), methods=["GET"]),
        Route("/agents/{agent_id:path}", guarded(agent, _SCOPE_OF["agents"]), methods=["GET"]),
        Route("/tasks/{task_id:path}", guarded(task, _SCOPE_OF["agents"]), methods=["GET"]),
        Route("/tokens/{jti}", guarded(token, _SCOPE_OF["agents"]), methods=["GET"]),
        Route(
            "/launch-tokens",
            guarded(launch_tokens, _SCOPE_OF["launch-tokens"]),
            methods=["GET"],
        ),
        Route("/apps", guarded(apps, _SCOPE_OF["apps"]), methods=["GET"]),
        Route("/revocations", guarded(revocations, _SCOPE_OF["revocations"]), methods=["GET"]),
        Route("/audit", guarded(audit, _SCOPE_OF["audit"]), methods=["GET"]),
        Route("/audit/export", guarded(audit_export, _SCOPE_OF["audit"]), methods=["GET"]),
        Route("/revoke", guarded(revoke_confirm, REVOKE_SCOPE), methods=["GET"]),
        Route("/revoke", guarded(revoke, REVOKE_SCOPE), methods=["POST"]),
        Route("/keys", guarded(keys, KEYS_SCOPE), methods=["GET"]),
        Route("/keys/retire", guarded(retire_confirm, KEYS_SCOPE), methods=["GET"]),
        Route("/keys/retire", guarded(retire, KEYS_SCOPE), methods=["POST"]),
        static_route(),
        # Last: any other path under the console (a mistyped or stale link) is a page
        # saying so, not the API's problem body. It reads no session and shows nothing.
        Route("/{rest:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    return [
        Route("/console", home, methods=["GET"], include_in_schema=False),
        # A Router of its own: ``Mount(routes=...)`` makes one that redirects a trailing
        # slash away, naming whatever host the request's ``Host`` header gave.
        Mount("/console", app=Router(routes=routes, redirect_slashes=False)),
    ]


async def home(request: Request) -> Response:
    """``/console`` itself: on to ``/console/``, by path alone. The routers redirect no
    slashes (they would name whatever host the request's ``Host`` header gave)."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/console/", 307)


_PLAIN_HTTP = (
    "The console is served over plain HTTP to this machine only: its session cookie would "
    "cross the network in clear. Turn TLS on (tls_mode) to use it from elsewhere."
)
_STALE_FORM = "This form is stale or came from another site. Reload the page and try again."
_WRONG = "Sign-in failed: check the operator name and secret."
_ENDED = "The session ended or was refused: sign in again."
_TOO_MANY = "Too many sign-in attempts: wait a little and try again."
_UNAVAILABLE = "Signing in is unavailable just now: try again shortly"
_EXPORTED = (
    "id",
    "seq",
    "timestamp",
    "event_type",
    "agent_id",
    "task_id",
    "orch_id",
    "detail",
    "resource",
    "outcome",
    "deleg_depth",
    "deleg_chain_hash",
    "request_id",
    "hash",
    "prev_hash",
)


def _interval_text(seconds: float) -> str:
    """``seconds`` as the audit page says how often its full walk runs."""
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} hour" + ("" if seconds == 3600 else "s")
    if seconds % 60 == 0:
        return f"{seconds / 60:g} minute" + ("" if seconds == 60 else "s")
    return f"{seconds:g} seconds"


def _seconds_text(value: float | None) -> str:
    if value is None:
        return "none yet"
    return "over 10 s" if value == float("inf") else f"{value:.3f} s"


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (the last value of each field); no field at all for a
    body of another ``Content-Type`` (``middleware.is_form``), whose control characters
    the edge judged as JSON's, not by their percent-escapes: it holds no CSRF value."""
    if not is_form(request.headers.get("content-type")):
        return {}
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _local(path: str, fallback: str) -> str:
    """``path`` when it is a path on this console (never another site), else ``fallback``."""
    if path.startswith(fallback) and "//" not in path and "\\" not in path:
        return path
    return fallback + "/"
