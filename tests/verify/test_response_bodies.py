"""The verifier reads the broker's answers (its JWKS, introspection, counted calls, its
sign-ins with app credentials, offline use reports) off the wire with a size cap, never
inflated: a hostile or broken broker answering a gzip bomb, an endless body, a malformed
count or sign-in is refused, and fails closed.

Over loopback HTTP, against a fake broker (uvicorn in a thread, answers_support) that
answers what each test sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import nacl.signing
import pytest
from answers_support import GZIP, PEAK_BYTES, Answer, FakeServer, bomb, peak_memory, serving

from tasklease.rules import jws
from tasklease.verify import (
    AppCredentials,
    InsufficientScope,
    InvalidToken,
    Verifier,
    VerifierUnavailable,
)
from tasklease.verify._grants import CallCount, count_call
from tasklease.verify._introspection import BrokerIntrospector
from tasklease.verify._jwks import KeySet
from tasklease.verify._usereports import UseReporter

REFERENCE = "tlr_" + "a" * 43


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeServer) -> Iterator[tuple[FakeServer, httpx.Client]]:
    server.reset()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield server, client


def _jwks() -> tuple[str, bytes]:
    public = bytes(nacl.signing.SigningKey.generate().verify_key)
    kid = jws.jwk_thumbprint(public)
    key = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": jws.b64url_encode(public)}
    return kid, json.dumps({"keys": [key]}).encode()


def _key_set(client: httpx.Client) -> KeySet:
    return KeySet(client, ttl=0.0, min_interval=0.0)


def test_a_gzip_bomb_for_the_jwks_fails_the_fetch_uninflated_and_keeps_the_keys(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    # Would fail if: the verifier read the JWKS whole, inflated by httpx, before checking
    # its size (100 MB here; a 509 KB bomb took about 1 GB).
    broker, client = fake
    kid, document = _jwks()
    broker.answer(Answer(body=document))
    keys = _key_set(client)
    assert keys.refresh() and keys.kids == [kid]
    broker.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak:
        assert not keys.refresh()
    assert peak.bytes < PEAK_BYTES
    assert keys.kids == [kid]
    assert broker.encodings == ["identity", "identity"]


def test_an_endless_uncompressed_jwks_is_cut_off_at_the_cap(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    # Would fail if: the body was read to its end before its size was checked (50 MB of
    # chunks with no content-length to refuse it by).
    broker, client = fake
    kid, document = _jwks()
    broker.answer(Answer(body=document))
    keys = _key_set(client)
    assert keys.refresh()
    broker.answer(Answer(body=b" " * 65536, chunks=800))
    with peak_memory() as peak:
        assert not keys.refresh()
    assert peak.bytes < PEAK_BYTES
    assert keys.kids == [kid]


def _introspector(client: httpx.Client, forgotten: list[str] | None = None) -> BrokerIntrospector:
    dropped = forgotten if forgotten is not None else []
    return BrokerIntrospector(
        client,
        audience="svc-a",
        token_source=lambda: "app-token",
        forget_token=lambda: dropped.append("token"),
    )


def test_a_gzip_bomb_for_an_introspection_is_unavailable_uninflated(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    broker, client = fake
    broker.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(VerifierUnavailable) as refused:
        _introspector(client).introspect("tlr_" + "a" * 43)
    assert peak.bytes < PEAK_BYTES
    assert "compressed" in refused.value.reason
    assert broker.encodings == ["identity"]


def test_introspection_retries_once_after_a_401_without_reading_its_body(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    # Would fail if: the body of a status the introspector does not use was read whole.
    broker, client = fake
    forgotten: list[str] = []
    broker.answer(Answer(status=401, body=bomb(), headers=GZIP), Answer(body=b'{"active": true}'))
    with peak_memory() as peak:
        answer = _introspector(client, forgotten).introspect("tlr_" + "a" * 43)
    assert answer == {"active": True}
    assert forgotten == ["token"]
    assert peak.bytes < PEAK_BYTES


def test_an_introspection_answer_over_the_cap_is_unavailable(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    broker, client = fake
    padded = b'{"active": false, "pad": "' + b"x" * 65536 + b'"}'
    broker.answer(Answer(body=padded))
    with pytest.raises(VerifierUnavailable) as refused:
        _introspector(client).introspect("tlr_" + "a" * 43)
    assert "larger than 65536 bytes" in refused.value.reason


def _count(client: httpx.Client) -> CallCount:
    return count_call(
        client,
        "token",
        "resource_access",
        audience="svc-a",
        presented=None,
        call={"action": "pay"},
    )


def test_a_gzip_bomb_for_a_count_is_unavailable_uninflated(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    # Would fail if: the count was read whole and inflated (and then, not JSON, raised a
    # ValueError outside the documented errors).
    broker, client = fake
    broker.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(VerifierUnavailable):
        _count(client)
    assert peak.bytes < PEAK_BYTES
    assert broker.encodings == ["identity"]


def test_a_refusal_with_a_gzip_bomb_is_still_a_refusal_uninflated(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    broker, client = fake
    broker.answer(Answer(status=403, body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(InsufficientScope) as refused:
        _count(client)
    assert peak.bytes < PEAK_BYTES
    assert refused.value.reason == "broker refused the call: HTTP 403"


def test_a_refusal_names_its_detail(fake: tuple[FakeServer, httpx.Client]) -> None:
    broker, client = fake
    problem = {"detail": "calls used up", "denial_id": "d-1"}
    broker.answer(Answer(status=401, body=json.dumps(problem).encode()))
    with pytest.raises(InvalidToken) as refused:
        _count(client)
    assert refused.value.reason == "broker refused the token: calls used up (denial_id=d-1)"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"x"',
        b"null",
        b"not json",
        b'{"counted": "false"}',
        b'{"remaining": 3, "max_calls": 5}',
        b'{"counted": true, "remaining": "3", "max_calls": 5}',
        b'{"counted": true, "remaining": 3, "max_calls": 5.0}',
        b'{"counted": true, "remaining": true, "max_calls": 5}',
        b"[" * 60_000,  # under the cap, too deep for the decoder (a RecursionError)
    ],
)
def test_a_malformed_count_is_unavailable(
    fake: tuple[FakeServer, httpx.Client], body: bytes
) -> None:
    # Would fail if: such an answer raised AttributeError, TypeError or ValueError (outside
    # the documented errors), or passed ("false" is a true string).
    broker, client = fake
    broker.answer(Answer(body=body))
    with pytest.raises(VerifierUnavailable):
        _count(client)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"counted": true, "remaining": 3, "max_calls": 5}', CallCount(True, 3, 5)),
        (b'{"counted": false, "remaining": null, "max_calls": null}', CallCount(False, None, None)),
        (b'{"counted": false, "sub": "agent", "jti": "j"}', CallCount(False, None, None)),
    ],
)
def test_a_well_formed_count_is_returned(
    fake: tuple[FakeServer, httpx.Client], body: bytes, expected: CallCount
) -> None:
    broker, client = fake
    broker.answer(Answer(body=body))
    assert _count(client) == expected


# --- the verifier's sign-in with its app credentials (POST /v1/app/auth) ----------------


@pytest.fixture
def signing_in(fake: tuple[FakeServer, httpx.Client]) -> Iterator[tuple[FakeServer, Verifier]]:
    """A verifier with app credentials and no feed: a by-reference token makes it sign in,
    then introspect."""
    broker, _ = fake
    verifier = Verifier(
        broker.url,
        audience="svc-a",
        credentials=AppCredentials("app-1", "s" * 40),
        feed=False,
        report_uses=False,
        timeout=10,
    )
    try:
        yield broker, verifier  # not started: no JWKS is fetched
    finally:
        verifier.close()


def test_a_gzip_bomb_for_a_sign_in_is_unavailable_uninflated(
    signing_in: tuple[FakeServer, Verifier],
) -> None:
    # Would fail if: the sign-in's answer was read whole and inflated (100 MB here).
    broker, verifier = signing_in
    broker.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(VerifierUnavailable) as refused:
        verifier.verify(REFERENCE)
    assert peak.bytes < PEAK_BYTES
    assert "compressed" in refused.value.reason
    assert broker.paths == ["/v1/app/auth"]
    assert broker.encodings == ["identity"]


def test_a_sign_in_answer_over_the_cap_is_unavailable(
    signing_in: tuple[FakeServer, Verifier],
) -> None:
    broker, verifier = signing_in
    broker.answer(Answer(body=b" " * 65536, chunks=800))
    with peak_memory() as peak, pytest.raises(VerifierUnavailable) as refused:
        verifier.verify(REFERENCE)
    assert peak.bytes < PEAK_BYTES
    assert "larger than 65536 bytes" in refused.value.reason


@pytest.mark.parametrize(
    "body",
    [
        # One of each kind; every kind is in test_bounded_body.py (read_app_token).
        b"[]",
        b'{"access_token": 5, "expires_in": 600}',
        b'{"access_token": "t", "expires_in": 1' + b"0" * 400 + b"}",
    ],
)
def test_a_malformed_sign_in_is_unavailable_and_nothing_is_introspected(
    signing_in: tuple[FakeServer, Verifier], body: bytes
) -> None:
    # Would fail if: such an answer raised TypeError, KeyError or OverflowError out of
    # verify(), or its access_token ("5", "") was sent on as a bearer token.
    broker, verifier = signing_in
    broker.answer(Answer(body=body))
    with pytest.raises(VerifierUnavailable) as refused:
        verifier.verify(REFERENCE)
    assert "signing in to the broker" in refused.value.reason
    assert broker.paths == ["/v1/app/auth"]


def test_a_sign_in_is_the_bearer_of_the_introspection(
    signing_in: tuple[FakeServer, Verifier],
) -> None:
    broker, verifier = signing_in
    broker.answer(
        Answer(body=b'{"access_token": "app-token", "expires_in": 600}'),
        Answer(body=b'{"active": false}'),
    )
    with pytest.raises(InvalidToken):
        verifier.verify(REFERENCE)
    assert broker.paths == ["/v1/app/auth", "/v1/introspect"]
    assert broker.asked[1].authorization == "Bearer app-token"
    assert broker.encodings == ["identity", "identity"]


def test_a_count_carries_the_verifiers_credential_and_a_401_drops_it(
    signing_in: tuple[FakeServer, Verifier],
) -> None:
    # A certificate-bound token's calls are counted only for an authenticated resource
    # server: the verifier's app token goes with every count, signed in again after a 401.
    broker, verifier = signing_in
    broker.answer(
        Answer(body=b'{"access_token": "app-token", "expires_in": 600}'),
        Answer(body=b'{"counted": true, "remaining": 1, "max_calls": 2}'),
        Answer(status=401, body=b'{"detail": "refused", "denial_id": "d-1"}'),
        Answer(body=b'{"access_token": "app-token-2", "expires_in": 600}'),
        Answer(body=b'{"counted": true, "remaining": 0, "max_calls": 2}'),
    )
    assert verifier.count_call("token", "resource_access", action="read").remaining == 1
    with pytest.raises(InvalidToken):
        verifier.count_call("token", "resource_access", action="read")
    assert verifier.count_call("token", "resource_access", action="read").remaining == 0
    assert broker.paths == [
        "/v1/app/auth",
        "/v1/token/calls",
        "/v1/token/calls",
        "/v1/app/auth",
        "/v1/token/calls",
    ]
    assert [broker.asked[i].authorization for i in (1, 2, 4)] == [
        "Bearer app-token",
        "Bearer app-token",
        "Bearer app-token-2",
    ]


# --- offline use reports (POST /v1/audit/offline) ---------------------------------------


def _reporter(client: httpx.Client, forgotten: list[str]) -> UseReporter:
    reporter = UseReporter(client, lambda: "app-token", lambda: forgotten.append("token"))
    reporter.used("chain", 1_000_000.0)
    return reporter


def test_a_use_report_answered_with_a_gzip_bomb_is_settled_by_its_status_uninflated(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    # Would fail if: the answer was read whole and inflated (100 MB here) before its
    # status was looked at.
    broker, client = fake
    broker.answer(Answer(body=bomb(), headers=GZIP))
    reporter = _reporter(client, [])
    with peak_memory() as peak:
        assert reporter.flush(1_000_000.0, everything=True) == 1
    assert peak.bytes < PEAK_BYTES
    assert reporter.pending == 0
    assert broker.encodings == ["identity"]


@pytest.mark.parametrize("status", [401, 503])
def test_a_use_report_refused_with_a_gzip_bomb_is_kept_uninflated(
    fake: tuple[FakeServer, httpx.Client], status: int
) -> None:
    broker, client = fake
    broker.answer(Answer(status=status, body=bomb(), headers=GZIP))
    forgotten: list[str] = []
    reporter = _reporter(client, forgotten)
    with peak_memory() as peak:
        assert reporter.flush(1_000_000.0, everything=True) == 0
    assert peak.bytes < PEAK_BYTES
    assert reporter.pending == 1
    assert forgotten == (["token"] if status == 401 else [])


def test_a_use_report_answered_endlessly_is_settled_by_its_status_and_cut_off(
    fake: tuple[FakeServer, httpx.Client],
) -> None:
    broker, client = fake
    broker.answer(Answer(body=b" " * 65536, chunks=800))
    reporter = _reporter(client, [])
    with peak_memory() as peak:
        assert reporter.flush(1_000_000.0, everything=True) == 1
    assert peak.bytes < PEAK_BYTES
