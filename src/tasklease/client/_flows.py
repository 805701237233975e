"""The agent's protocol with the broker, written once, without I/O (httpx ``_auth.py`` style).

Every operation is a generator that yields the :class:`httpx.Request` it needs sent and
receives the :class:`httpx.Response`; it returns its result (or raises a
:class:`~tasklease.client.TaskleaseError`). The sync and async agents only pump these
generators through ``httpx.Client.send`` or ``await httpx.AsyncClient.send``, so the
renew-before-expiry decision and every wire detail live here and nowhere else.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol, TypeVar, cast

import httpx
import nacl.signing

from tasklease import bounds
from tasklease.client._errors import (
    CredentialExpired,
    InvalidRequest,
    RateLimited,
    RenewalLimitReached,
    TaskleaseError,
    TransportError,
    Unauthorized,
    Unavailable,
    error_from_response,
)
from tasklease.client._holder import DPoPKey, token_cnf
from tasklease.client._retry import spread_retry_after
from tasklease.rules.messages import challenge_nonce_bytes

__all__ = [
    "SDK",
    "Clock",
    "Credential",
    "Delegation",
    "Flow",
    "Registration",
    "SystemClock",
    "answer_field",
    "challenge_nonce",
    "delegate_flow",
    "endpoint_url",
    "json_request",
    "register_flow",
    "release_flow",
]

T = TypeVar("T")


def _sdk() -> str:
    try:
        return f"tasklease-python/{metadata.version('tasklease')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "tasklease-python"


SDK = _sdk()
"""This SDK's name and version, as an attested agent declares it (``declared.sdk``)."""
_log = logging.getLogger("tasklease.client")
Flow = Generator[httpx.Request, httpx.Response, T]
OUTAGE_BACKOFF = 0.25
"""Seconds before the first renewal attempt after one that could not reach the broker."""
OUTAGE_MAX_BACKOFF = 2.0
"""Longest wait between renewal attempts while the broker is unreachable."""
# Jitter from a generator of our own, not the application's global one.
_jitter = random.Random()  # noqa: S311 - jitter, not a secret


class Clock(Protocol):
    """Where the SDK reads the time: seconds since the epoch (``tasklease`` clocks fit).

    A clock may also have ``monotonic()``: seconds on a clock that steps of the wall clock
    do not move, which the SDK then measures elapsed time by (:func:`elapsed_clock`)."""

    def now(self) -> float:
        """The current time, in seconds since the epoch."""
        ...


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


class SystemClock:
    """The wall clock, and for elapsed time a clock it does not step: ``CLOCK_BOOTTIME``
    where there is one (it counts a suspended host's sleep), else ``time.monotonic``."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        if _BOOTTIME is not None:
            return time.clock_gettime(_BOOTTIME)
        return time.monotonic()  # pragma: no cover - Linux has CLOCK_BOOTTIME


def elapsed_clock(clock: Clock) -> Callable[[], float]:
    """What the SDK measures elapsed time by with ``clock``: its ``monotonic()`` if it has
    one (:class:`SystemClock` has), else its ``now()`` itself (a test's manual clock,
    moved by hand, moves both)."""
    monotonic = getattr(clock, "monotonic", None)
    return cast("Callable[[], float]", monotonic) if callable(monotonic) else clock.now


def endpoint_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def json_request(
    method: str, url: str, body: Any = None, token: str | None = None
) -> httpx.Request:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is None:
        return httpx.Request(method, url, headers=headers)
    return httpx.Request(method, url, headers=headers, json=body)


def expect_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer; the matching exception otherwise.

    Read as the verifier reads the broker's answers (:func:`bounds.json_document`): JSON
    nested deeper than the decoder goes is no JSON (``bad_response``), not the decoder's
    ``RecursionError``."""
    if response.status_code >= 300:  # a redirect too: the SDK follows none (run_flow)
        raise error_from_response(response)
    try:
        data = bounds.json_document(response.content)
    except ValueError:
        raise TaskleaseError(
            "the broker answered with a body that is not JSON",
            code="bad_response",
            status=response.status_code,
        ) from None
    if not isinstance(data, dict):
        raise TaskleaseError(
            "the broker answered with JSON that is not an object",
            code="bad_response",
            status=response.status_code,
        )
    return data


def answer_field(data: dict[str, Any], name: str, kind: type[T]) -> T:
    value = data.get(name)
    if not isinstance(value, kind):
        raise TaskleaseError(f"the broker's answer lacks {name!r}", code="bad_response")
    return value


def answer_lifetime(data: dict[str, Any], name: str = "expires_in") -> int:
    """``data[name]``, a lifetime in seconds (:func:`bounds.lifetime`); ``bad_response``
    when it is none (absent, a bool, not 1 to ``MAX_EXPIRES_IN``, a number no float holds)."""
    value = bounds.lifetime(data.get(name))
    if value is None:
        raise TaskleaseError(f"the broker's answer lacks {name!r}", code="bad_response")
    return value


def challenge_nonce(answer: dict[str, Any]) -> tuple[str, bytes]:
    """The nonce of a ``GET /v1/challenge`` answer, and the bytes the agent's key signs for
    it (``rules.messages``): 32 bytes, as the broker issues them, or nothing is signed.

    Whoever answers the challenge (a proxy, a host on a plain-HTTP path) would otherwise
    get the agent key's signature over bytes of its choosing.

    Raises:
        TaskleaseError: ``bad_response``, the nonce is missing or not 64 lowercase hex
            characters.
    """
    nonce = answer_field(answer, "nonce", str)
    try:
        return nonce, challenge_nonce_bytes(nonce)
    except ValueError:
        raise TaskleaseError(
            "the broker's challenge nonce is not 64 lowercase hex characters (32 bytes): "
            "the agent's key signs nothing else",
            code="bad_response",
        ) from None


@dataclass(frozen=True, slots=True)
class Registration:
    agent_id: str
    token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 (a scheme name)


def register_flow(
    base_url: str,
    launch_token: str | None,
    orch_id: str,
    task_id: str,
    scope: Sequence[str],
    key: nacl.signing.SigningKey,
    *,
    attestation: Mapping[str, str] | None = None,
    declared: Mapping[str, str] | None = None,
    resource: str | None = None,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> Flow[Registration]:
    """Challenge, sign the hex-decoded nonce with ``key``, register (AgentWrit wire rule).

    ``attestation`` (``{"type", "evidence"[, "attestor"]}``) is workload evidence in place
    of ``launch_token`` or beside it; ``declared`` what the agent says of itself;
    ``resource`` the one resource (RFC 8707) the token is for, among the launch token's;
    ``authorization_details`` structured grants (RFC 9396) besides ``scope``.
    """
    if isinstance(scope, str):
        raise InvalidRequest("scope must be a list of scope strings, not one string")
    if not launch_token and attestation is None:
        raise InvalidRequest("give a launch token or workload evidence (attestation)")
    challenge = expect_json((yield json_request("GET", endpoint_url(base_url, "/v1/challenge"))))
    nonce, message = challenge_nonce(challenge)
    signature = key.sign(message).signature
    body: dict[str, Any] = {
        "launch_token": launch_token,
        "nonce": nonce,
        "public_key": base64.b64encode(bytes(key.verify_key)).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
        "orch_id": orch_id,
        "task_id": task_id,
        "requested_scope": list(scope),
    }
    if not launch_token:
        del body["launch_token"]
    if attestation is not None:
        body["attestation"] = dict(attestation)
        # An attested agent says which SDK it runs (a declared fact, never trusted).
        declared = {"sdk": SDK, **(declared or {})}
    if declared:
        body["declared"] = dict(declared)
    if resource is not None:
        body["resource"] = resource
    if authorization_details:
        body["authorization_details"] = [dict(d) for d in authorization_details]
        if not scope:
            del body["requested_scope"]
    answer = expect_json((yield json_request("POST", endpoint_url(base_url, "/v1/register"), body)))
    token_type = answer.get("token_type")
    return Registration(
        agent_id=answer_field(answer, "agent_id", str),
        token=answer_field(answer, "access_token", str),
        expires_in=answer_lifetime(answer),
        token_type=token_type if isinstance(token_type, str) else "Bearer",
    )


@dataclass(frozen=True, slots=True)
class Delegation:
    token: str
    expires_in: int
    delegation_chain: list[dict[str, Any]]


def delegate_flow(
    base_url: str,
    token: str,
    delegate_to: str,
    scope: Sequence[str],
    ttl: int | None,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> Flow[Delegation]:
    if isinstance(scope, str):
        raise InvalidRequest("scope must be a list of scope strings, not one string")
    body: dict[str, Any] = {"delegate_to": delegate_to, "scope": list(scope)}
    if authorization_details:
        body["authorization_details"] = [dict(d) for d in authorization_details]
        if not scope:
            del body["scope"]
    if ttl is not None:
        body["ttl"] = ttl
    answer = expect_json(
        (yield json_request("POST", endpoint_url(base_url, "/v1/delegate"), body, token))
    )
    chain = answer.get("delegation_chain")
    return Delegation(
        token=answer_field(answer, "access_token", str),
        expires_in=answer_lifetime(answer),
        delegation_chain=[r for r in chain if isinstance(r, dict)]
        if isinstance(chain, list)
        else [],
    )


def release_flow(base_url: str, token: str) -> Flow[None]:
    """Give ``token`` up. A token the broker no longer accepts counts as released.

    Only a 401 that refuses the token itself (``invalid_token``) says so: one for the
    request's proof (``invalid_dpop_proof``, ``use_dpop_nonce``) or without a reason
    leaves a live token behind, so it is raised.
    """
    response = yield json_request("POST", endpoint_url(base_url, "/v1/token/release"), None, token)
    if 200 <= response.status_code < 300:
        return
    error = error_from_response(response)
    if response.status_code == 401 and error.oauth_error == "invalid_token":
        return
    raise error


def holder_dpop(key: DPoPKey | None, registration: Registration) -> DPoPKey | None:
    """``key`` if the broker bound the token to it; None (bearer) if it did not.

    A JWT's ``cnf.jkt`` decides; an opaque (by-reference) token trusts the answer's
    ``token_type`` and otherwise the request: the broker binds whenever a proof is sent.
    """
    if key is None:
        return None
    if registration.token.count(".") == 2:
        if token_cnf(registration.token).get("jkt") == key.thumbprint:
            return key
        _log.warning("the broker did not bind the token to the DPoP key: using it as bearer")
        return None
    return key


HANDSHAKE_SPAN = 30.0
"""Seconds a handshake's steps may span (the broker's offer and answer live 30 s): a token
that would be renewed within them, ending the one the handshake presented, is renewed
before it starts (docs/decisions.md 271)."""


class Credential:
    """One agent's token and the decision when to renew it (the state machine).

    Its time: a token lives ``expires_in`` seconds (the broker's answer) from when it was
    received, measured on the clock's elapsed time (:func:`elapsed_clock`), which steps of
    the host's wall clock do not move; the wall clock (``expires_at``) only brings a
    renewal forward, never back, and never makes the token dead by itself.

    States: *live* (renew when the token expires within ``renew_margin`` seconds),
    *at its limit* (the broker refused renewal with ``renewal_count_exceeded`` or
    ``renewal_ceiling_exceeded``: never renew again, keep using the token until it
    expires, then raise that error), *released* (every use raises
    :class:`~tasklease.client.Unauthorized`). Not thread-safe by itself: the sync and
    async agents serialize :meth:`refresh_flow` behind a lock.

    *Broker unreachable* (a renewal that could not reach the broker, or a 503): the token
    is used on until its ``exp`` while renewal is tried again after a backoff (from
    :data:`OUTAGE_BACKOFF` doubling to :data:`OUTAGE_MAX_BACKOFF`, jittered), so the first
    request after the broker is back renews; at ``exp`` the token is dead and every use
    raises :class:`~tasklease.client.CredentialExpired` until a renewal succeeds (which
    the broker then refuses: an expired token is not renewed; resume or register again).

    *Answer lost* (a renewal sent, and no answer read: the connection dropped, the read
    timed out): the broker may have renewed, and revoked this token with it. When the
    next renewal is then refused as unauthorized, the agent resumes instead (``resume``:
    it proves its registered key, and its DPoP key or certificate, for a fresh token of
    the same identity), if it was given the means to; else the refusal is raised.
    """

    def __init__(
        self,
        base_url: str,
        registration: Registration,
        scope: Sequence[str],
        *,
        clock: Clock,
        renew_margin: float,
        dpop: DPoPKey | None = None,
        mtls: bool = False,
        resume: Callable[[], Flow[Registration]] | None = None,
    ) -> None:
        if renew_margin < 0:
            raise ValueError("renew_margin must not be negative")
        self.base_url = base_url
        # The DPoP key the token is bound to (every request then carries a proof), or None.
        self.dpop = holder_dpop(dpop, registration)
        # The agent presents a client certificate to the broker (``cert``): a broker in
        # ``mtls`` mode requires one and binds the agent's tokens to it (RFC 8705).
        self.mtls = mtls
        self.agent_id = registration.agent_id
        self.scope: tuple[str, ...] = tuple(scope)
        self.clock = clock
        self._elapsed = elapsed_clock(clock)
        self.renew_margin = renew_margin
        self.limit: RenewalLimitReached | None = None
        self.released = False
        # While renewals cannot reach the broker: since when, how many failed, and when
        # the next may be tried (in elapsed time).
        self.unreachable_since: float | None = None
        self.renewal_failures = 0
        self._retry_at = -float("inf")
        # The agent's resumption (its registered key's proof), to recover from a renewal
        # whose answer was lost; and whether the last renewal sent went unanswered.
        self._resume = resume
        self._renewal_unanswered = False
        self._set(registration.token, registration.expires_in)

    def _set(self, token: str, expires_in: int) -> None:
        self.token = token
        # The token's life from now, on elapsed time; ``expires_at`` is the same end on
        # the wall clock (the agent's ``expires_at``).
        self._lifetime = float(expires_in)
        self._received = self._elapsed()
        self.expires_at = self.clock.now() + expires_in
        self.unreachable_since = None
        self.renewal_failures = 0
        self._retry_at = -float("inf")

    def holder_bound(self) -> bool:
        """Whether the broker bound this agent's tokens to a key or certificate it holds,
        as far as the agent knows: what an opaque (by-reference) token does not say of
        itself (:func:`~tasklease.client._holder.sender_constrained` reads a JWT's
        ``cnf``). A DPoP key counts once :func:`holder_dpop` kept it; a certificate given
        as ``cert`` counts, since a broker asks for one only in ``mtls`` mode, which binds
        to it."""
        return self.dpop is not None or self.mtls

    def life_left(self) -> float:
        """Seconds the token lives on: its lifetime less the time elapsed since it was
        received (negative once it is dead). A step of the wall clock does not move it."""
        return self._lifetime - (self._elapsed() - self._received)

    def unreachable_for(self) -> float | None:
        """Seconds (elapsed) since renewals began failing to reach the broker, or None."""
        since = self.unreachable_since
        return None if since is None else self._elapsed() - since

    def renewal_due(self, ahead: float = 0.0) -> bool:
        """True when the next request should renew first; ``ahead``: seconds more the
        token must last beyond ``renew_margin`` (a handshake's steps).

        Due by elapsed time, or earlier if the wall clock says so (a host that slept
        through part of the token's life), never later: a wall clock stepped back does
        not keep a token past its end, nor does one stepped ahead renew more than once."""
        if self.released or self.limit is not None:
            return False
        left = min(self.life_left(), self.expires_at - self.clock.now())
        return left <= self.renew_margin + ahead and self._elapsed() >= self._retry_at

    def check_usable(self) -> None:
        """Raise when the token must not be sent: released, past a renewal limit, or past
        its ``exp`` while the broker was unreachable and the next renewal attempt is not
        due yet (a token is never used after its ``exp``)."""
        if self.released:
            raise Unauthorized("the agent's credential has been released", code="released")
        dead = self.life_left() <= 0
        if self.limit is not None and dead:
            raise self.limit
        if self.unreachable_since is not None and dead and self._elapsed() < self._retry_at:
            raise self._expired()

    def _expired(self) -> CredentialExpired:
        ago = max(0.0, -self.life_left())
        if self.unreachable_since is None:
            return CredentialExpired(
                f"the agent's token expired {ago:.1f} s ago and nothing "
                "renewed it before (an agent is renewed when it is used: call ensure_fresh() "
                "while it idles); resume it with its registered key (Agent.resume) or "
                "register again"
            )
        return CredentialExpired(
            f"the agent's token expired {ago:.1f} s ago while the "
            f"broker could not be reached to renew it (unreachable for "
            f"{self.unreachable_for() or 0.0:.1f} s, {self.renewal_failures} attempts)"
        )

    def renewal_unreachable(self, error: TaskleaseError) -> None:
        """A due renewal could not reach the broker (``error``: a TransportError, a 503, or
        a 429 whose ``Retry-After`` is honoured).

        Keeps the token while it lives and schedules the next attempt; raises
        :class:`CredentialExpired` (from ``error``) once the token is past its ``exp``.
        """
        now = self._elapsed()
        if self.unreachable_since is None:
            self.unreachable_since = now
        self.renewal_failures += 1
        left = self.life_left()
        if left <= 0:
            raise self._expired() from error
        wait = min(OUTAGE_MAX_BACKOFF, OUTAGE_BACKOFF * 2.0 ** (self.renewal_failures - 1))
        wait *= 0.5 + _jitter.random() / 2
        asked = getattr(error, "retry_after", None)  # a 429's Retry-After: honoured
        if isinstance(asked, int | float) and asked > wait:
            # Spread as every Retry-After is, not past the token's end.
            wait = spread_retry_after(float(asked), max(float(asked), left))
        self._retry_at = now + wait
        _log.warning(
            "renewal could not reach the broker (%s); the token stays in use for %.1f s, "
            "next attempt in %.2f s",
            error,
            left,
            wait,
        )

    def refresh_flow(self, ahead: float = 0.0) -> Flow[None]:
        """Before a request: renew if the token is about to expire (see the class doc),
        or would within ``ahead`` seconds more.

        A token already past its ``exp`` is dead, and the broker renews no dead token: it
        is not sent to be renewed, :class:`CredentialExpired` is raised instead (nothing
        renewed it in time: the agent was idle longer than its token lives). Unless the
        last renewal went unanswered: that one may have been made, and the renewal sent
        now recovers from it by resuming (``renew_flow``)."""
        self.check_usable()
        if self.renewal_due(ahead):
            if self.life_left() <= 0 and not self._renewal_unanswered:
                raise self._expired()
            yield from self.renew_flow()

    def renew_flow(self) -> Flow[None]:
        """Renew now; on a renewal limit remember it (and stop renewing) and raise it."""
        self.check_usable()
        if self.limit is not None:
            raise self.limit
        lost = self._renewal_unanswered
        # Set until an answer is read: a flow abandoned on a transport error leaves it.
        self._renewal_unanswered = True
        response = yield json_request(
            "POST", endpoint_url(self.base_url, "/v1/token/renew"), None, self.token
        )
        self._renewal_unanswered = False
        try:
            answer = expect_json(response)
        except RenewalLimitReached as exc:
            self.limit = exc
            raise
        except Unauthorized as refused:
            if not lost or self._resume is None:
                raise
            # Still to recover until the resumption is answered: one that is interrupted
            # (the broker out of reach, the caller cancelled) is made again next time.
            self._renewal_unanswered = True
            yield from self._resume_after_lost_answer(refused)
            return
        self._set(answer_field(answer, "access_token", str), answer_lifetime(answer))

    def _resume_after_lost_answer(self, refused: Unauthorized) -> Flow[None]:
        """The renewal before this one went unanswered and this one is refused: the broker
        renewed then, most likely, and revoked this token. Resume for a fresh token (the
        successor whose answer was lost expires unused); raise ``refused`` if the broker
        will not resume this agent either. A resumption the broker did not answer (out of
        reach, a 503 or 429, or this flow abandoned: the caller cancelled) leaves the
        renewal unanswered, so the next one resumes again; its error is raised as is."""
        if self._resume is None:  # pragma: no cover - checked by the caller
            raise refused
        try:
            registration = yield from self._resume()
        except (TransportError, Unavailable, RateLimited):
            raise  # the broker did not answer it: the next renewal resumes again
        except TaskleaseError as exc:
            self._renewal_unanswered = False
            raise refused from exc
        self._renewal_unanswered = False
        _log.warning(
            "the answer to a renewal of %s was lost and its token was no longer accepted: "
            "it resumed with its registered key",
            self.agent_id,
        )
        self._set(registration.token, registration.expires_in)

    def release_flow(self) -> Flow[None]:
        if self.released:
            return
        yield from release_flow(self.base_url, self.token)
        self.released = True

    def delegate_flow(
        self,
        delegate_to: str,
        scope: Sequence[str],
        ttl: int | None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
    ) -> Flow[Delegation]:
        self.check_usable()
        sent = self.token
        try:
            return (
                yield from delegate_flow(
                    self.base_url, sent, delegate_to, scope, ttl, authorization_details
                )
            )
        except Unauthorized:
            if self.token == sent:
                raise
        # The agent's own renewal (another thread or task of it) replaced the token while
        # the request was on its way, and ended the token it carried: the broker refused
        # it and changed nothing. Once more with the successor.
        self.check_usable()
        return (
            yield from delegate_flow(
                self.base_url, self.token, delegate_to, scope, ttl, authorization_details
            )
        )
