"""An issuer's keys that cannot be fetched, for whatever reason the issuer's discovery
document or the attestor's settings give, refuse the registration: one audit event under
a denial_id, never an unhandled error without either."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from core_support import CTX, ISSUER, START, admin, audit_detail, make_broker, register
from issuers import IssuerCA, Served, SigningKey, k8s_claims, make_ca, mint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tasklease.attestation import FetchError, HttpKeyFetcher, fetch_jwks
from tasklease.core.attestors import JwksSource
from tasklease.core.errors import InvalidRequest, TaskleaseError, Unauthorized

POLICY = [{"match": {"namespace": "billing"}, "scope": ["read:invoices:*"]}]
# jwks_uri values a discovery document may name that pass "https://" and are no URL.
BAD_URIS = {
    "nul": "https://\u0000issuer.test/keys",
    "too_long": "https://issuer.test/" + "k" * 70_000,
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> IssuerCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def issuer(ca: IssuerCA) -> Iterator[Served]:
    """An issuer at ``/<name>`` whose discovery names the bad ``jwks_uri`` of that name."""

    async def discovery(request: Request) -> Response:
        name = request.path_params["name"]
        own = f"{str(request.base_url).rstrip('/')}/{name}"
        return JSONResponse({"issuer": own, "jwks_uri": BAD_URIS[name]})

    served = Served(
        Starlette(routes=[Route("/{name}/.well-known/openid-configuration", discovery)]),
        ca.server(),
    )
    yield served
    served.stop()


@pytest.mark.parametrize("name", sorted(BAD_URIS))
def test_a_discovery_naming_no_url_is_a_fetch_error(
    issuer: Served, ca: IssuerCA, name: str
) -> None:
    source = JwksSource(issuer=f"{issuer.url}/{name}", ca_pem=ca.pem)
    with pytest.raises(FetchError):
        fetch_jwks(source, timeout=5.0)


@pytest.mark.parametrize("ca_pem", ["-----BEGIN CERTIFICATE-----\nAA\n", "\u00e9"])
def test_a_ca_that_is_no_certificate_is_a_fetch_error(issuer: Served, ca_pem: str) -> None:
    source = JwksSource(issuer=f"{issuer.url}/nul", ca_pem=ca_pem)
    with pytest.raises(FetchError, match="ca_pem"):
        fetch_jwks(source, timeout=5.0)


def test_a_ca_file_with_a_non_ascii_comment_anchors_the_fetch(issuer: Served, ca: IssuerCA) -> None:
    # The comment is no business of TLS: the file's certificate checks the issuer, and the
    # fetch goes on to what the discovery document names (no URL, here).
    source = JwksSource(issuer=f"{issuer.url}/nul", ca_pem=f"# Autorité racine\n{ca.pem}")
    with pytest.raises(FetchError) as info:
        fetch_jwks(source, timeout=5.0)
    assert "ca_pem" not in info.value.reason


@pytest.mark.parametrize("ca_pem", ["-----BEGIN CERTIFICATE-----\nAA\n", "\u00e9"])
def test_an_attestor_whose_ca_no_tls_context_takes_is_refused(ca_pem: str) -> None:
    # Checked where it is given, as the key fetcher will use it (core.tlsanchor).
    broker = make_broker()
    settings = {"issuer": "https://issuer.test", "ca_pem": ca_pem}
    with pytest.raises(InvalidRequest, match="ca_pem"):
        broker.attestation.add(
            admin(broker), name="prod", type="k8s_sat", settings=settings, policy=POLICY, ctx=CTX
        )
    assert broker.attestation.list_attestors() == []


@pytest.mark.parametrize("name", sorted(BAD_URIS))
def test_a_registration_through_such_an_issuer_is_refused_and_audited(
    issuer: Served, ca: IssuerCA, name: str
) -> None:
    broker = make_broker()
    broker.attestation.use_fetcher(HttpKeyFetcher(timeout=5.0))
    url = f"{issuer.url}/{name}"
    settings = {"issuer": url, "ca_pem": ca.pem}
    broker.attestation.add(
        admin(broker), name="prod", type="k8s_sat", settings=settings, policy=POLICY, ctx=CTX
    )
    key = SigningKey.generate("RS256")
    evidence = {"type": "k8s_sat", "evidence": mint(key, k8s_claims(url, ISSUER, START))}
    with pytest.raises(TaskleaseError) as info:
        register(broker, ["read:invoices:1"], attestation=evidence)
    error = info.value
    assert isinstance(error, Unauthorized) and error.denial_id
    [detail] = audit_detail(broker, error.denial_id)
    assert "attestation refused (unavailable)" in detail
    assert json.dumps(BAD_URIS[name])[1:40] not in detail
