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

The responder shows its token in the answer to a hello, which anyone who reaches it can
send; so it answers only with a sender-constrained token (bound to a DPoP key or a client
certificate, or an offline chain from such a token), which nobody can present without a
key or certificate this agent holds: a bearer token would go to whoever asked. Where every
peer that can reach the endpoint is trusted, ``show_bearer_token=True`` lets it show one.

The responder keeps nothing for a hello, which anyone who reaches it can send: the state
it needs to check the finish travels sealed in the answer's cookie, and the finish comes
back with it; only a finish that verifies is remembered (one use each, a bounded number
per holder key), so a flood of hellos costs it CPU but takes no room that a legitimate
peer needs (decision 149).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import nacl.signing

from tasklease import forksafe
from tasklease.client._errors import Unauthorized
from tasklease.client._holder import sender_constrained
from tasklease.rules import jws
from tasklease.rules import peerauth as rules
from tasklease.rules.binding import (
    DPoPProofError,
    MemoryProofLedger,
    ProofLedger,
    access_token_hash,
    remember_proof,
)

__all__ = ["AuthenticatedPeer", "OfflinePeerAuth", "PeerAuthenticationFailed", "PeerToken"]

_log = logging.getLogger("tasklease.client")

PEER_HOLDER_QUOTA = 500
"""Finishes one holder key may have remembered at once by a responder, by default: each is
kept for the window and a second (31 s), so 500 is 16 handshakes a second from one agent
(and the offline chains derived from its token) to one responder process, sustained; it
takes 20 keys to fill the default ledger of 10,000 (decision 149, as decision 141)."""

BEARER_REFUSED = (
    "this agent's token is a bearer token (bound to no DPoP key or client certificate):"
    " an answer would hand it to whoever sent the hello; register the agent with DPoP"
    " (dpop=True) or mTLS (cert=), or pass show_bearer_token=True where every peer that"
    " can reach this endpoint is trusted"
)
"""Why a responder with a bearer token refuses every hello (the reason, and the warning)."""


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
    """A hello this agent sent, awaiting its answer (the initiator's side only)."""

    hello: rules.Hello
    channel: str
    deadline: float


def _holder_key(token: PeerToken) -> bytes:
    """The key the verified token says its holder registered (an offline chain: the last
    delegate's key)."""
    chain = getattr(token, "offline", None)
    key = getattr(chain, "holder_key", None)
    if isinstance(key, bytes) and len(key) == 32:
        return key
    return rules.holder_key(token.claims)


def _quota_holder(token: PeerToken) -> str:
    """Whose quota a verified finish counts against: the thumbprint of the token's holder
    key (``agent_jwk``); for an offline chain, the root token's holder key, since a holder
    can derive any number of chains to delegate keys of its own making (decision 141)."""
    chain = getattr(token, "offline", None)
    root = getattr(chain, "root_holder_jkt", None)
    if isinstance(root, str) and root:
        return root
    return jws.jwk_thumbprint(_holder_key(token))


class OfflinePeerAuth:
    """One agent's side of offline peer authentication, in either role. Thread-safe.

    Args:
        agent_id: this agent's SPIFFE ID.
        token: returns the token to present (the agent's current access token).
        key: the Ed25519 key this agent registered (its token's ``agent_jwk``).
        check: verifies a peer's token offline and returns it (``Verifier.verify_peer``).
        window: seconds an answer or a finish may take, and a hello's ``iat`` may be off.
        clock: seconds since the epoch.
        replay: where the responder remembers the finishes it has accepted, each until its
            challenge closes (default: this process, ``capacity`` of them, at most
            ``holder_quota`` per holder key); nothing else goes there, and nothing before
            the finish has verified. Processes that answer for the same agent and share a
            ``challenge_key`` share one.
        capacity: most finishes remembered at once (past it new ones are refused: fail
            closed), and most hellos this agent may have awaiting their answer.
        holder_quota: most finishes one holder key may have remembered at once in the
            default ledger (an offline chain counts as its root token's holder).
        challenge_key: the secret the responder seals its cookies under
            (``rules.peerauth.CHALLENGE_KEY_BYTES`` random bytes; a fresh one per instance
            by default, so a finish must come back to the instance that answered). Give
            the instances that answer for the same agent the same key and the same
            ``replay`` ledger (required with a key), and a finish may reach any of them.
        show_bearer_token: answer with a bearer token too. Off by default: a hello is
            unsigned, so the responder's answer goes to whoever sent one, and a bearer
            token in it can be presented anywhere by them. Only where every peer that can
            reach this endpoint is trusted.
        opaque_token_bound: for an opaque (by-reference) token, which does not say it:
            whether the broker bound it to this agent's DPoP key or client certificate
            (``Agent.offline_peer`` passes what the agent knows). Without it, an opaque
            token counts as a bearer token. A JWT's ``cnf`` speaks for itself.
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
        holder_quota: int = PEER_HOLDER_QUOTA,
        challenge_key: bytes | None = None,
        show_bearer_token: bool = False,
        opaque_token_bound: Callable[[], bool] | None = None,
    ) -> None:
        if not 1 <= window <= 300:
            raise ValueError("window must be between 1 and 300 seconds")
        if challenge_key is None:
            challenge_key = secrets.token_bytes(rules.CHALLENGE_KEY_BYTES)
        elif (
            not isinstance(challenge_key, bytes) or len(challenge_key) != rules.CHALLENGE_KEY_BYTES
        ):
            raise ValueError(f"challenge_key must be {rules.CHALLENGE_KEY_BYTES} random bytes")
        elif replay is None:
            # A cookie that opens elsewhere must be spent where the others look: a ledger
            # of this instance's own would let one finish be accepted once per instance.
            raise ValueError("a shared challenge_key needs the shared replay ledger too")
        self.agent_id = agent_id
        self._token = token
        self._key = key
        self._check = check
        self._window = window
        self._clock = clock
        self._replay = (
            replay if replay is not None else MemoryProofLedger(capacity, holder_quota=holder_quota)
        )
        self._capacity = capacity
        self._challenge_key = challenge_key
        self._show_bearer_token = show_bearer_token
        self._opaque_token_bound = opaque_token_bound
        self._bearer_warned = False
        self._lock = threading.Lock()
        forksafe.track(self)
        self._asked: dict[str, _Pending] = {}  # initiator: our hellos, by our nonce

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
        self._hold(hello.nonce, _Pending(hello, channel, now + self._window))
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
        pending = self._pending(parsed.initiator_nonce)
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
        self._spend(parsed.initiator_nonce)
        ours = self._token()
        signature = rules.sign_transcript(
            rules.peer_transcript("initiator", **fields, initiator_token=ours), self._key
        )
        # The cookie goes back as it came (none from a version 1 responder, which keeps its
        # own state): it is the responder's, opaque here, and covered by nothing we sign.
        finish = rules.Finish(parsed.nonce, ours, signature, parsed.cookie)
        return rules.finish_message(finish), _authenticated(peer, pending.channel)

    # --- responder ------------------------------------------------------------------------

    def answer(self, hello: str, *, channel: str) -> str:
        """Step 2 (responder): answer a challenge received over ``channel`` (what this end
        knows of the connection: the URI it serves, or a TLS exporter value).

        Nothing is kept: what :meth:`accept` will need goes into the answer's cookie,
        sealed under this responder's ``challenge_key``. A hello sent again gets a new
        answer (a new challenge), which nobody but the initiator it names can finish, and
        it only once: it holds one open hello for the nonce, spent by the first answer.

        The token shown must be sender-constrained unless ``show_bearer_token`` was
        given: it is read at each answer (it changes on renewal), its ``cnf`` unverified.

        Raises:
            PeerAuthenticationFailed: the hello is malformed, for another agent, from this
                agent itself, or too old or too new; this agent's token is a bearer token
                (:data:`BEARER_REFUSED`, logged once as a warning).
        """
        parsed = _parse(rules.parse_hello, hello)
        _channel(channel)
        if not rules.same(parsed.responder, self.agent_id):
            raise PeerAuthenticationFailed("the hello is for another agent")
        if rules.same(parsed.initiator, self.agent_id):
            raise PeerAuthenticationFailed("reflection: the hello names this agent as initiator")
        now = self._clock()
        # Compared with the clock, never subtracted from it: a hello's iat is any JSON
        # integer, and one no float holds would raise OverflowError (decision 228).
        if not now - self._window <= parsed.iat <= now + self._window:
            raise PeerAuthenticationFailed("the hello is too old or dated in the future")
        ours = self._token()
        if not self._show_bearer_token and not sender_constrained(ours, self._opaque_token_bound):
            self._refuse_bearer()
        challenge = rules.Challenge(
            responder=self.agent_id,
            initiator=parsed.initiator,
            initiator_nonce=parsed.nonce,
            responder_nonce=_fresh_nonce(),
            iat=parsed.iat,
            channel=channel,
            responder_token_hash=access_token_hash(ours),
            answered_at=round(now, 3),
        )
        signature = rules.sign_transcript(
            rules.peer_transcript(
                "responder",
                initiator=challenge.initiator,
                responder=challenge.responder,
                initiator_nonce=challenge.initiator_nonce,
                responder_nonce=challenge.responder_nonce,
                iat=challenge.iat,
                channel=challenge.channel,
                responder_token=ours,
            ),
            self._key,
        )
        cookie = rules.seal_challenge(challenge, self._challenge_key)
        return rules.answer_message(
            rules.Answer(parsed.nonce, challenge.responder_nonce, ours, signature, cookie)
        )

    def accept(self, finish: str) -> AuthenticatedPeer:
        """Step 4 (responder): check the initiator's finish; returns the initiator,
        authenticated.

        The cookie is opened first (a made-up or altered one costs a MAC check); then the
        initiator's token and signature are checked; only then is the challenge spent, in
        the ``replay`` ledger, counted against the initiator's holder key.

        Raises:
            PeerAuthenticationFailed: as :meth:`finish`; a finish with no cookie (from an
                initiator that speaks version 1 of the messages); the initiator's key has
                its quota of finishes remembered, or the ledger is full.
            tasklease.verify.VerificationError: the initiator's token failed the check.
        """
        parsed = _parse(rules.parse_finish, finish)
        if not parsed.cookie:
            raise PeerAuthenticationFailed(
                "the finish carries no cookie (an initiator speaking version 1 of the messages)"
            )
        try:
            challenge = rules.open_challenge(parsed.cookie, self._challenge_key)
        except rules.PeerRejected as exc:
            raise PeerAuthenticationFailed(exc.reason) from None
        if not rules.same(challenge.responder, self.agent_id):
            raise PeerAuthenticationFailed("the finish answers another agent's challenge")
        if not rules.same(parsed.responder_nonce, challenge.responder_nonce):
            raise PeerAuthenticationFailed("the finish names another challenge than its cookie")
        now = self._clock()
        if now > challenge.answered_at + self._window:
            raise PeerAuthenticationFailed("the finish came after the window")
        peer = self._check(parsed.token)
        if not rules.same(peer.sub, challenge.initiator):
            raise PeerAuthenticationFailed("the finish comes from another agent than the hello")
        _verify(rules.challenge_transcript(challenge, parsed.token), parsed.signature, peer)
        try:
            fresh = remember_proof(
                self._replay,
                "peer-finish\n" + challenge.responder_nonce,
                challenge.answered_at + self._window + 1,
                self._clock(),
                holder=_quota_holder(peer),
            )
        except DPoPProofError:
            raise PeerAuthenticationFailed(
                "too many finishes remembered (quota or capacity)"
            ) from None
        if not fresh:
            raise PeerAuthenticationFailed("the finish answers a spent challenge (replay)")
        return _authenticated(peer, challenge.channel)

    def _refuse_bearer(self) -> NoReturn:
        """Refuse to show a bearer token; warn the operator the first time (a misconfigured
        agent would otherwise log once per hello, and anyone can send hellos)."""
        with self._lock:
            first, self._bearer_warned = not self._bearer_warned, True
        if first:
            _log.warning("offline peer %s refuses to answer: %s", self.agent_id, BEARER_REFUSED)
        raise PeerAuthenticationFailed(BEARER_REFUSED)

    # --- the initiator's open hellos ----------------------------------------------------------

    def _hold(self, nonce: str, pending: _Pending) -> None:
        with self._lock:
            now = self._clock()
            for old in [n for n, p in self._asked.items() if p.deadline < now]:
                del self._asked[old]
            if len(self._asked) >= self._capacity:
                raise PeerAuthenticationFailed("too many challenges awaiting an answer")
            self._asked[nonce] = pending

    def _pending(self, nonce: str) -> _Pending:
        """The hello ``nonce`` answers, if still open and in its window. It stays open
        until an answer that verifies spends it, so a forged one cannot cancel it."""
        with self._lock:
            pending = self._asked.get(nonce)
            if pending is not None and self._clock() > pending.deadline:
                del self._asked[nonce]
                raise PeerAuthenticationFailed("the answer came after the window")
        if pending is None:
            raise PeerAuthenticationFailed("the answer answers no open challenge (replay?)")
        return pending

    def _spend(self, nonce: str) -> None:
        """Close the hello: one verified answer each, whoever came first."""
        with self._lock:
            if self._asked.pop(nonce, None) is None:
                raise PeerAuthenticationFailed("the answer answers a spent challenge (replay)")


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
