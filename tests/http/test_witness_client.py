# Would fail if: the broker's witness client asked for a compressed answer, or inflated
# one before counting it (a gzip bomb from a witness took the broker's memory: httpx
# decompresses a 64 KiB read to some 64 MB before the cap saw a byte of it).
"""The broker's client for the audit witnesses (tasklease.http.witnesses.WitnessClient):
an ``add-checkpoint`` answer is asked for uncompressed and read off the wire, at most
``MAX_ANSWER`` bytes; a compressed or larger one is an ``OSError``, as a witness not
reached is (core.transparency tries it again later).

Over loopback HTTP, against a fake witness (uvicorn in a thread, answers_support).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from answers_support import GZIP, PEAK_BYTES, Answer, FakeServer, bomb, peak_memory, serving

from tasklease.core.transparency import PushResult
from tasklease.http.witnesses import MAX_ANSWER, WitnessClient

NOTE = "old 0\n\nexample.com/log\n1\nAAAA\n\n\u2014 example.com/log AAAA\n".encode()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture
def witness(server: FakeServer) -> Iterator[tuple[FakeServer, WitnessClient]]:
    server.reset()
    client = WitnessClient(timeout=10)
    try:
        yield server, client
    finally:
        client.close()


def test_a_gzip_bomb_from_a_witness_is_an_os_error_uninflated(
    witness: tuple[FakeServer, WitnessClient],
) -> None:
    fake, client = witness
    fake.answer(Answer(body=bomb(), headers={**GZIP, "content-type": "text/plain"}))
    with peak_memory() as peak, pytest.raises(OSError) as refused:
        client(fake.url, NOTE)
    assert peak.bytes < PEAK_BYTES
    assert "compressed" in str(refused.value)
    assert fake.paths == ["/add-checkpoint"]
    assert fake.encodings == ["identity"]


def test_a_witness_answer_over_the_cap_is_an_os_error(
    witness: tuple[FakeServer, WitnessClient],
) -> None:
    fake, client = witness
    fake.answer(Answer(body=b"x" * 65536, chunks=800))
    with peak_memory() as peak, pytest.raises(OSError, match=f"larger than {MAX_ANSWER}"):
        client(fake.url, NOTE)
    assert peak.bytes < PEAK_BYTES


def test_a_declared_length_over_the_cap_is_refused_unread(
    witness: tuple[FakeServer, WitnessClient],
) -> None:
    fake, client = witness
    fake.answer(Answer(body=b"x" * (MAX_ANSWER + 1)))
    with pytest.raises(OSError, match=f"larger than {MAX_ANSWER}"):
        client(fake.url, NOTE)


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (200, "text/plain; charset=utf-8", "\u2014 witness.example AAAA\n".encode()),
        (409, "text/x.tlog.size", b"7\n"),
        (403, "text/plain", b""),
    ],
)
def test_a_witness_answer_is_given_as_it_came(
    witness: tuple[FakeServer, WitnessClient], status: int, content_type: str, body: bytes
) -> None:
    fake, client = witness
    fake.answer(Answer(status=status, body=body, headers={"content-type": content_type}))
    assert client(fake.url, NOTE) == PushResult(status, content_type, body)
    assert fake.asked[0].method == "POST"


def test_the_http_client_is_made_at_the_first_checkpoint_not_at_start(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every broker start makes a WitnessClient, most with no witness to ask: its HTTP
    client (a pool, the CA bundle read into a TLS context) waits for the first push, and
    once closed it sends nothing, made or not."""
    made: list[httpx.Client] = []

    class Client(httpx.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(httpx, "Client", Client)
    server.reset()
    witness = WitnessClient(timeout=10)
    assert made == []
    server.answer(Answer(body=b"", status=403, headers={"content-type": "text/plain"}))
    assert witness(server.url, NOTE).status == 403
    assert witness(server.url, NOTE).status == 403
    assert len(made) == 1  # one pooled client for every push
    witness.close()
    with pytest.raises(RuntimeError, match="closed"):
        witness(server.url, NOTE)
    unused = WitnessClient(timeout=10)
    unused.close()
    with pytest.raises(RuntimeError, match="closed"):
        unused(server.url, NOTE)
    assert len(made) == 1


# Would fail if: a witness that drips its answer (a byte before each read timeout) held
# the push for as long as it liked: the checkpoint job's round, every tenant's after it,
# and the broker's stop (which waits for the round under way) with it.
def test_a_witness_dripping_its_answer_is_an_os_error_within_the_deadline(
    server: FakeServer,
) -> None:
    server.reset()
    client = WitnessClient(timeout=0.2)
    try:
        server.answer(Answer(body=b"x", chunks=200, pause=0.05))
        started = time.monotonic()
        with pytest.raises(OSError, match="no answer within"):
            client(server.url, NOTE)
        assert time.monotonic() - started < 2
        # The next push is made on a client of its own: the deadline's closing is no
        # lasting failure.
        server.answer(Answer(body=b"", status=403, headers={"content-type": "text/plain"}))
        assert client(server.url, NOTE).status == 403
    finally:
        client.close()


@pytest.fixture
def proxy() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


# Would fail if: a proxy the environment names carried a push to a loopback witness (its
# URL's user and password, sent as HTTP Basic, among it) off the machine in clear: the
# SDK's and the verifier's rule (bounds.loopback_direct).
@pytest.mark.parametrize("variable", ["http_proxy", "all_proxy"])
def test_a_loopback_witness_is_never_reached_through_a_proxy_from_the_environment(
    server: FakeServer, proxy: FakeServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv(variable, proxy.url)
    server.reset()
    server.answer(Answer(body=b"", status=403, headers={"content-type": "text/plain"}))
    client = WitnessClient(timeout=10)
    try:
        url = server.url.replace("http://", "http://user:password@")
        assert client(url, NOTE).status == 403
    finally:
        client.close()
    assert proxy.paths == []
    assert server.paths == ["/add-checkpoint"]
    assert server.asked[0].authorization.startswith("Basic ")
