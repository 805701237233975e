"""An attestation issuer whose JWKS endpoint answers slowly or with a compressed bomb
holds one fetch for a bounded time, and no registration waits on it for longer than one
timeout: the keys fetched before are used meanwhile."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from issuers import Served, make_ca
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tasklease.attestation import keys
from tasklease.attestation.keys import TOTAL_TIMES, FetchError, HttpKeyFetcher, fetch_jwks
from tasklease.core.attestors.base import AttestationRefused, JwksSource

TIMEOUT = 1.0


async def _trickle(_request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(120):
            yield b" "
            await asyncio.sleep(0.5)

    return StreamingResponse(body(), media_type="application/json")


async def _bomb(_request: Request) -> Response:
    packed = gzip.compress(b'{"keys": [' + b" " * 50_000_000 + b"]}")
    return Response(packed, media_type="application/json", headers={"content-encoding": "gzip"})


async def _discovery(request: Request) -> Response:
    issuer = str(request.base_url).rstrip("/") + "/issuer"
    return JSONResponse({"issuer": issuer, "jwks_uri": f"{issuer}/jwks"})


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    ca = make_ca(tmp_path)
    served = Served(
        Starlette(
            routes=[
                Route("/slow", _trickle),
                Route("/bomb", _bomb),
                Route("/issuer/.well-known/openid-configuration", _discovery),
            ]
        ),
        ca.server(),
    )
    yield served, ca.pem
    served.stop()


def test_a_trickled_jwks_is_cut_off_at_its_total_deadline(slow: tuple[Served, str]) -> None:
    # Would fail if: a JWKS endpoint sending a byte every half second kept the fetch (and
    # the broker thread running it) going for a minute.
    served, ca_pem = slow
    source = JwksSource(issuer="https://issuer.test", jwks_uri=f"{served.url}/slow", ca_pem=ca_pem)
    began = time.monotonic()
    with pytest.raises(FetchError):
        fetch_jwks(source, timeout=TIMEOUT)
    assert time.monotonic() - began < TOTAL_TIMES * TIMEOUT + 5


def test_a_deadline_passing_after_discovery_is_a_fetch_error(
    slow: tuple[Served, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Would fail if: the total deadline, closing the client between the discovery
    # document's answer and the JWK Set's request, let httpx's RuntimeError ("the client
    # has been closed") out of the fetch instead of a FetchError. The deadline's timer is
    # stood in for by closing the client once the discovery document has been read.
    served, ca_pem = slow
    clients: list[httpx.Client] = []
    real_client, real_body = httpx.Client, keys.bounded_body

    class Remembered(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **options: object) -> None:
            super().__init__(**options)
            clients.append(self)

    def body_then_deadline(response: httpx.Response, limit: int) -> bytes:
        body = real_body(response, limit)
        clients[-1].close()
        return body

    monkeypatch.setattr(httpx, "Client", Remembered)
    monkeypatch.setattr(keys, "bounded_body", body_then_deadline)
    source = JwksSource(issuer=f"{served.url}/issuer", ca_pem=ca_pem)
    with pytest.raises(FetchError, match="no answer within the fetch's deadline"):
        fetch_jwks(source, timeout=TIMEOUT)


def test_a_compressed_jwks_is_refused_before_it_is_inflated(slow: tuple[Served, str]) -> None:
    served, ca_pem = slow
    source = JwksSource(issuer="https://issuer.test", jwks_uri=f"{served.url}/bomb", ca_pem=ca_pem)
    with pytest.raises(FetchError, match="compressed"):
        # Refused on the answer's head: no deadline is at stake (a loaded host may take
        # longer than TIMEOUT for the TLS handshake alone).
        fetch_jwks(source, timeout=10 * TIMEOUT)


def test_registrations_wait_on_a_slow_fetch_one_timeout_at_most(
    slow: tuple[Served, str],
) -> None:
    # Would fail if: every registration naming the issuer queued on the lock of the one
    # fetch under way (all the broker's worker threads stuck behind one slow issuer).
    served, ca_pem = slow
    source = JwksSource(issuer="https://issuer.test", jwks_uri=f"{served.url}/slow", ca_pem=ca_pem)
    fetcher = HttpKeyFetcher(timeout=TIMEOUT, min_refetch=0.0)
    first = threading.Thread(
        target=lambda: pytest.raises(AttestationRefused, fetcher.keys, source, time.time(), True)
    )
    first.start()
    time.sleep(0.3)  # the first fetch holds the source's lock
    began = time.monotonic()
    with pytest.raises(AttestationRefused, match="unavailable"):
        fetcher.keys(source, time.time(), True)
    assert time.monotonic() - began < TIMEOUT + 2
    first.join(30)
