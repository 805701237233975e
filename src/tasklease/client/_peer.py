"""Offline peer mutual authentication, the agent's side: two agents authenticate each other
with no broker round trip (the formats and checks: ``tasklease.rules.peerauth``).

    # both agents hold a tasklease.verify.Verifier following the broker's feed
    alice_side = alice.offline_peer(verifier.verify_peer)
    bob_side = bob.offline_peer(verifier.verify_peer)

    hello = alice_side.hello(bob.agent_id, channel="https://bob.internal:8443/")
    answer = bob_side.answer(hello, channel="https://bob.internal:8443/")
    finish, bob_seen = alice_side.finish(answer)        # Bob, authenticated
    alice_seen = bob_side.accept(finish)                # Alice, authenticated

``check`` verifies a peer's token offline (signature from the broker's cached JWKS, claims,
revocation from the feed, the staleness bound): pass
:meth:`tasklease.verify.Verifier.verify_peer`. What it raises (an invalid, revoked or
foreign token; a revocation state too stale to vouch for it) is raised as is; a protocol
failure raises :class:`PeerAuthenticationFailed`. The online handshake through the broker
(:meth:`Agent.handshake`) stays for high-assurance cases (docs/broker-optional.md).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import nacl.signing

from tasklease.client._errors import Unauthorized
from tasklease.rules import jws
from tasklease.rules import peerauth as rules
from tasklease.rules.binding import DPoPProofError, MemoryProofLedger, ProofLedger

__all__ = ["AuthenticatedPeer", "OfflinePeerAuth", "PeerAuthenticationFailed", "PeerToken"]


class PeerToken(Protocol):
    """A verified token as the check returns it (``tasklease.verify.VerifiedToken``)."""

    @property
    def sub(self) -> str: ...

    @property
    def scope(self) -> tuple[str, ...]: ...

    @property
    def exp(self) -> int: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


class PeerAuthenticationFailed(Unauthorized):
    """A peer message failed a check; ``reason`` is for logs, never for the peer."""

    code = "peer_authentication_failed"

    def __init__(self, reason: str) -> None:
        super().__init__("peer authentication failed")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuthenticatedPeer:
    """The other agent, authenticated: its SPIFFE ID, scope and verified token.

    As good as the moment it was made: recheck ``token`` with the verifier on a long
    conversation (a revocation reaches the verifier through its feed), and stop at
    ``expires_at`` (the peer's token ``exp``).
    """

    agent_id: str
    scope: tuple[str, ...]
    expires_at: int
    channel: str
    token: PeerToken


@dataclass(slots=True)
class _Pending:
    hello: rules.Hello
    channel: str
    token: str  # the token we presented (the responder's), its hash in the transcript
    deadline: float


def _holder_key(token: PeerToken) -> bytes:
    """The key the verified token says its holder registered (an offline chain: the last
    delegate's key)."""
    chain = getattr(token, "offline", None)
    key = getattr(chain, "holder_key", None)
    if isinstance(key, bytes) and len(key) == 32:
        return key
    return rules.holder_key(token.claims)


class OfflinePeerAuth:
    """One agent's side of offline peer authentication, in either role. Thread-safe.

    Args:
        agent_id: this agent's SPIFFE ID.
        token: returns the token to present (the agent's current access token).
        key: the Ed25519 key this agent registered (its token's ``agent_jwk``).
        check: verifies a peer's token offline and returns it (``Verifier.verify_peer``).
        window: seconds an answer or a finish may take, and a hello's ``iat`` may be off.
        clock: seconds since the epoch.
        replay: where the responder remembers the hello nonces it has seen (default: this
            process); share one across processes that answer for the same agent.
        capacity: most challenges awaiting their answer or finish; past it new ones are
            refused (fail closed).
    """

    def __init__(
        self,
        agent_id: str,
        token: Callable[[], str],
        key: nacl.signing.SigningKey,
        check: Callable[[str], PeerToken],
        *,
        window: int = rules.WINDOW,
        clock: Callable[[], float] = time.time,
        replay: ProofLedger | None = None,
        capacity: int = 10_000,
    ) -> None:
        if not 1 <= window <= 300:
            raise ValueError("window must be between 1 and 300 seconds")
        self.agent_id = agent_id
        self._token = token
        self._key = key
        self._check = check
        self._window = window
        self._clock = clock
        self._replay = replay if replay is not None else MemoryProofLedger(capacity)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._asked: dict[str, _Pending] = {}  # initiator: by our nonce
        self._answered: dict[str, _Pending] = {}  # responder: by our nonce

    # --- initiator ------------------------------------------------------------------------

    def hello(self, peer_id: str, *, channel: str) -> str:
        """Step 1 (initiator): a challenge for ``peer_id``; send it over ``channel``.

        ``channel`` is what both ends know of the connection (the responder's endpoint
        URI as addressed, or a TLS exporter value): the responder must name the same.
        """
        if not peer_id or peer_id == self.agent_id:
            raise PeerAuthenticationFailed("an agent does not authenticate itself")
        _channel(channel)
        now = self._clock()
        hello = rules.Hello(self.agent_id, peer_id, _fresh_nonce(), int(now))
        self._hold(self._asked, hello.nonce, _Pending(hello, channel, "", now + self._window))
        return rules.hello_message(hello)

    def finish(self, answer: str) -> tuple[str, AuthenticatedPeer]:
        """Step 3 (initiator): check the responder's answer; returns the finish message to
        send back and the responder, authenticated.

        Raises:
            PeerAuthenticationFailed: the answer is malformed, late, replayed, for another
                challenge, or its signature does not verify with the responder's key.
            tasklease.verify.VerificationError: the responder's token failed the check.
        """
        parsed = _parse(rules.parse_answer, answer)
        pending = self._pending(self._asked, parsed.initiator_nonce, "answer")
        hello = pending.hello
        peer = self._check(parsed.token)
        if not rules.same(peer.sub, hello.responder):
            raise PeerAuthenticationFailed("the answer comes from another agent than asked")
        fields = {
            "initiator": hello.initiator,
            "responder": hello.responder,
            "initiator_nonce": hello.nonce,
            "responder_nonce": parsed.nonce,
            "iat": hello.iat,
            "channel": pending.channel,
            "responder_token": parsed.token,
        }
        _verify(rules.peer_transcript("responder", **fields), parsed.signature, peer)
        self._spend(self._asked, parsed.initiator_nonce, "answer")
        ours = self._token()
        signature = rules.sign_transcript(
            rules.peer_transcript("initiator", **fields, initiator_token=ours), self._key
        )
        message = rules.finish_message(rules.Finish(parsed.nonce, ours, signature))
        return message, _authenticated(peer, pending.channel)

    # --- responder ------------------------------------------------------------------------

    def answer(self, hello: str, *, channel: str) -> str:
        """Step 2 (responder): answer a challenge received over ``channel`` (what this end
        knows of the connection: the URI it serves, or a TLS exporter value).

        Raises:
            PeerAuthenticationFailed: the hello is malformed, for another agent, from this
                agent itself, too old or too new, or seen before.
        """
        parsed = _parse(rules.parse_hello, hello)
        _channel(channel)
        if not rules.same(parsed.responder, self.agent_id):
            raise PeerAuthenticationFailed("the hello is for another agent")
        if rules.same(parsed.initiator, self.agent_id):
            raise PeerAuthenticationFailed("reflection: the hello names this agent as initiator")
        now = self._clock()
        if abs(now - parsed.iat) > self._window:
            raise PeerAuthenticationFailed("the hello is too old or dated in the future")
        try:
            fresh = self._replay.remember(
                "peer-hello\n" + parsed.nonce, parsed.iat + 2 * self._window + 1, now
            )
        except DPoPProofError:
            raise PeerAuthenticationFailed("too many challenges remembered") from None
        if not fresh:
            raise PeerAuthenticationFailed("a hello seen before (replay)")
        ours = self._token()
        nonce = _fresh_nonce()
        signature = rules.sign_transcript(
            rules.peer_transcript(
                "responder",
                initiator=parsed.initiator,
                responder=self.agent_id,
                initiator_nonce=parsed.nonce,
                responder_nonce=nonce,
                iat=parsed.iat,
                channel=channel,
                responder_token=ours,
            ),
            self._key,
        )
        self._hold(self._answered, nonce, _Pending(parsed, channel, ours, now + self._window))
        return rules.answer_message(rules.Answer(parsed.nonce, nonce, ours, signature))

    def accept(self, finish: str) -> AuthenticatedPeer:
        """Step 4 (responder): check the initiator's finish; returns the initiator,
        authenticated.

        Raises:
            PeerAuthenticationFailed: as :meth:`finish`.
            tasklease.verify.VerificationError: the initiator's token failed the check.
        """
        parsed = _parse(rules.parse_finish, finish)
        pending = self._pending(self._answered, parsed.responder_nonce, "finish")
        hello = pending.hello
        peer = self._check(parsed.token)
        if not rules.same(peer.sub, hello.initiator):
            raise PeerAuthenticationFailed("the finish comes from another agent than the hello")
        transcript = rules.peer_transcript(
            "initiator",
            initiator=hello.initiator,
            responder=hello.responder,
            initiator_nonce=hello.nonce,
            responder_nonce=parsed.responder_nonce,
            iat=hello.iat,
            channel=pending.channel,
            responder_token=pending.token,
            initiator_token=parsed.token,
        )
        _verify(transcript, parsed.signature, peer)
        self._spend(self._answered, parsed.responder_nonce, "finish")
        return _authenticated(peer, pending.channel)

    # --- pending challenges -------------------------------------------------------------------

    def _hold(self, table: dict[str, _Pending], nonce: str, pending: _Pending) -> None:
        with self._lock:
            now = self._clock()
            for old in [n for n, p in table.items() if p.deadline < now]:
                del table[old]
            if len(table) >= self._capacity:
                raise PeerAuthenticationFailed("too many challenges awaiting an answer")
            table[nonce] = pending

    def _pending(self, table: dict[str, _Pending], nonce: str, what: str) -> _Pending:
        """The challenge ``nonce`` answers, if still open and in its window. It stays open
        until a message that verifies spends it, so a forged one cannot cancel it."""
        with self._lock:
            pending = table.get(nonce)
            if pending is not None and self._clock() > pending.deadline:
                del table[nonce]
                raise PeerAuthenticationFailed(f"the {what} came after the window")
        if pending is None:
            raise PeerAuthenticationFailed(f"the {what} answers no open challenge (replay?)")
        return pending

    def _spend(self, table: dict[str, _Pending], nonce: str, what: str) -> None:
        """Close the challenge: one verified answer (or finish) each, whoever came first."""
        with self._lock:
            if table.pop(nonce, None) is None:
                raise PeerAuthenticationFailed(f"the {what} answers a spent challenge (replay)")


def _fresh_nonce() -> str:
    return jws.b64url_encode(secrets.token_bytes(32))


def _channel(channel: str) -> None:
    if not isinstance(channel, str) or not channel or len(channel) > 2048:
        raise ValueError("channel must name the connection (1 to 2048 characters)")


def _parse(parser: Callable[[object], Any], text: object) -> Any:
    try:
        return parser(text)
    except rules.PeerRejected as exc:
        raise PeerAuthenticationFailed(exc.reason) from None


def _verify(transcript: bytes, signature: bytes, peer: PeerToken) -> None:
    try:
        rules.verify_transcript(transcript, signature, _holder_key(peer))
    except rules.PeerRejected as exc:
        raise PeerAuthenticationFailed(exc.reason) from None


def _authenticated(peer: PeerToken, channel: str) -> AuthenticatedPeer:
    return AuthenticatedPeer(peer.sub, tuple(peer.scope), int(peer.exp), channel, peer)
