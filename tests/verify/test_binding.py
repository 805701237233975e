"""Sender-constrained tokens at the resource server, over real sockets: DPoP-bound tokens
(RFC 9449) against a Starlette app, and certificate-bound tokens (RFC 8705) from a broker
in mTLS mode, checked by ``verify(...)`` and by the middleware behind real mutual TLS."""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
from e2e_support import ADMIN_SECRET, RunningBroker, assert_problem
from test_verifier_http import protected_app
from verify_support import Served, app_credentials, dpop_proof

from tasklease.verify import InvalidToken, Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware

_SECURITY_TESTS = str(Path(__file__).resolve().parents[1] / "security")
if _SECURITY_TESTS not in sys.path:
    sys.path.insert(0, _SECURITY_TESTS)

from security_support import PKI, make_pki  # noqa: E402
from test_tls import _register, tls_broker  # noqa: E402

pytestmark = pytest.mark.slow


# --- DPoP (RFC 9449) ------------------------------------------------------------------------


def _dpop_agent(broker: RunningBroker) -> tuple[str, nacl.signing.SigningKey]:
    key = nacl.signing.SigningKey.generate()
    lt = broker.launch_token(["read:data:42"])
    body, _ = broker.register_body(lt, ["read:data:42"])
    proof = dpop_proof(key, htm="POST", htu=f"{broker.url}/v1/register")
    answer = broker.post("/v1/register", json=body, headers={"DPoP": proof})
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    return token, key


def test_dpop_bound_token_needs_a_fresh_proof_for_this_request(
    broker: RunningBroker, serve: Any
) -> None:
    verifier = Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker))
    service: Served = serve(protected_app(verifier))
    token, key = _dpop_agent(broker)
    url = f"{service.url}/data/42"

    def get(headers: dict[str, str]) -> httpx.Response:
        return client.get("/data/42", headers=headers)

    def fresh(**overrides: Any) -> str:
        spec: dict[str, Any] = {"htm": "GET", "htu": url, "token": token, **overrides}
        signer = spec.pop("key", key)
        return dpop_proof(signer, **spec)

    with httpx.Client(base_url=service.url) as client:
        proof = fresh()
        ok = get({"Authorization": f"DPoP {token}", "DPoP": proof})
        assert ok.status_code == 200, ok.text
        # Cached token, new proof: still checked and accepted.
        assert get({"Authorization": f"DPoP {token}", "DPoP": fresh()}).status_code == 200
        refused = {
            "replayed proof": {"Authorization": f"DPoP {token}", "DPoP": proof},
            "bearer use": {"Authorization": f"Bearer {token}", "DPoP": fresh()},
            "no proof": {"Authorization": f"DPoP {token}"},
            "another key": {
                "Authorization": f"DPoP {token}",
                "DPoP": fresh(key=nacl.signing.SigningKey.generate()),
            },
            "wrong htm": {"Authorization": f"DPoP {token}", "DPoP": fresh(htm="POST")},
            "wrong htu": {
                "Authorization": f"DPoP {token}",
                "DPoP": fresh(htu=f"{service.url}/data/43"),
            },
            "stale iat": {
                "Authorization": f"DPoP {token}",
                "DPoP": fresh(iat=time.time() - 300),
            },
            "wrong ath": {"Authorization": f"DPoP {token}", "DPoP": fresh(token=token + "x")},
            "two proofs": {"Authorization": f"DPoP {token}", "DPoP": fresh() + "," + fresh()},
        }
        for case, headers in refused.items():
            answer = get(headers)
            assert answer.status_code == 401, case
            assert_problem(answer, 401, "unauthorized")
        assert "DPoP" in answer.headers["www-authenticate"]

    # The same reasons through verify(...) directly.
    reasons = {
        "DPoP-bound token presented as a bearer token": {},
        "DPoP proof missing": {"scheme": "DPoP"},
        "DPoP proof htu does not match the request URI": {
            "scheme": "DPoP",
            "dpop_proof": fresh(htu="http://elsewhere.example/data/42"),
            "htm": "GET",
            "htu": url,
        },
        "DPoP proof signed by another key than the token's cnf.jkt": {
            "scheme": "DPoP",
            "dpop_proof": fresh(key=nacl.signing.SigningKey.generate()),
            "htm": "GET",
            "htu": url,
        },
    }
    for reason, presented in reasons.items():
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token, **presented)
        assert caught.value.reason == reason
    good = fresh()
    verified = verifier.verify(token, scheme="DPoP", dpop_proof=good, htm="GET", htu=url)
    assert verified.cnf is not None and "jkt" in verified.cnf
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token, scheme="DPoP", dpop_proof=good, htm="GET", htu=url)
    assert caught.value.reason == "DPoP proof replayed (jti already used)"
    # An unbound token must not come with the DPoP scheme.
    plain = broker.register(["read:data:42"])
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(plain.access_token, scheme="DPoP")
    assert caught.value.reason == "DPoP scheme used with a token not bound to a DPoP key"


def test_a_proof_for_another_deployment_is_refused_whatever_host_says(
    broker: RunningBroker, serve: Any
) -> None:
    """Two deployments of one resource (one audience), each with its own verifier and
    replay ledger. A proof made for, and used at, A is replayed at B with ``Host`` naming
    A: the middleware checks ``htu`` against B's own origin, never the ``Host`` header."""
    a: Served = serve(
        protected_app(Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)))
    )
    b: Served = serve(
        protected_app(Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)))
    )
    token, key = _dpop_agent(broker)
    proof = dpop_proof(key, htm="GET", htu=f"{a.url}/data/42", token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    assert httpx.get(f"{a.url}/data/42", headers=headers, timeout=10).status_code == 200
    for host in ({}, {"Host": a.url.removeprefix("http://")}):
        replayed = httpx.get(f"{b.url}/data/42", headers={**headers, **host}, timeout=10)
        assert replayed.status_code == 401, (host, replayed.text)
        assert replayed.json()["error"] == "invalid_dpop_proof"


def test_the_middleware_takes_its_public_origins_from_configuration(
    broker: RunningBroker, serve: Any
) -> None:
    """Behind a proxy clients sign the public URL; ``origins`` names it. A proof naming an
    origin the server was not given is refused."""
    verifier = Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker))
    public = "https://api.example"
    app = protected_app(verifier, origins=("https://other.example", public + "/"))
    service: Served = serve(app)
    token, key = _dpop_agent(broker)
    for htu, status in ((f"{public}/data/42", 200), (f"{service.url}/data/42", 401)):
        proof = dpop_proof(key, htm="GET", htu=htu, token=token)
        answer = httpx.get(
            f"{service.url}/data/42",
            headers={"Authorization": f"DPoP {token}", "DPoP": proof},
            timeout=10,
        )
        assert answer.status_code == status, (htu, answer.text)
    with pytest.raises(ValueError, match="not an absolute"):
        TaskleaseAuthMiddleware(app, verifier=verifier, origins=("api.example",))


def test_the_dpop_replay_cache_is_bounded_by_the_window(broker: RunningBroker) -> None:
    token, key = _dpop_agent(broker)
    url = "http://rs.example/data/42"
    with Verifier(
        broker.url,
        audience="svc-a",
        credentials=app_credentials(broker),
        dpop_proof_window=2,
        dpop_replay_cache_size=3,
    ) as verifier:

        def use() -> None:
            proof = dpop_proof(key, htm="GET", htu=url, token=token)
            verifier.verify(token, scheme="DPoP", dpop_proof=proof, htm="GET", htu=url)

        for _ in range(3):
            use()
        with pytest.raises(InvalidToken) as caught:
            use()  # full: refuse rather than forget (fail closed)
        assert caught.value.reason == "DPoP replay cache full"
        # Refused as full until every remembered jti has left the window (its proofs' iat,
        # whole seconds, plus the 2 s window: at most 3 s), then accepted.
        deadline = time.monotonic() + 3.1 + 5.0
        while True:
            try:
                use()
                break
            except InvalidToken as refusal:
                assert refusal.reason == "DPoP replay cache full"
                assert time.monotonic() < deadline, "the window's jtis were never forgotten"
                time.sleep(0.05)
        assert verifier.stats()["dpop_jtis"] == 1


def test_one_agent_flooding_proofs_does_not_lock_another_out(
    broker: RunningBroker, serve: Any
) -> None:
    """docs/decisions.md 141, over HTTP: a compromised agent sends fresh proofs for its one
    DPoP-bound token as fast as they are accepted; past its key's quota they are answered
    401 ``invalid_dpop_proof`` (and so are proofs by fresh keys), while another agent's
    requests are still served by the same verifier, whose cache it could have filled."""
    verifier = Verifier(
        broker.url,
        audience="svc-a",
        credentials=app_credentials(broker),
        dpop_replay_cache_size=12,
        dpop_replay_per_key=4,
    )
    service: Served = serve(protected_app(verifier))
    url = f"{service.url}/data/42"
    (mallory, mallory_key), (alice, alice_key) = _dpop_agent(broker), _dpop_agent(broker)

    def get(token: str, key: nacl.signing.SigningKey) -> httpx.Response:
        proof = dpop_proof(key, htm="GET", htu=url, token=token)
        return client.get("/data/42", headers={"Authorization": f"DPoP {token}", "DPoP": proof})

    with httpx.Client(base_url=service.url) as client:
        flood = [get(mallory, mallory_key) for _ in range(16)]
        assert [answer.status_code for answer in flood] == [200] * 4 + [401] * 12
        assert 'error="invalid_dpop_proof"' in flood[-1].headers["www-authenticate"]
        fresh = [get(mallory, nacl.signing.SigningKey.generate()) for _ in range(16)]
        assert {answer.status_code for answer in fresh} == {401}
        assert [get(alice, alice_key).status_code for _ in range(4)] == [200] * 4
    assert verifier.stats()["dpop_jtis"] == 8


# --- certificate binding (RFC 8705) -------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("verify-pki"))


def _context(pki: PKI, who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if who is not None:
        cert, key = pki.clients[who]
        context.load_cert_chain(str(cert), str(key))
    return context


@pytest.fixture(scope="module")
def mtls_broker(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A broker in mTLS mode, and an agent registered over alice's certificate."""
    with (
        tls_broker(tmp_path_factory.mktemp("mtls-broker"), pki, "mtls") as url,
        httpx.Client(base_url=url, verify=_context(pki, "alice"), timeout=10) as alice,
    ):
        yield url, _register(alice)


def _mtls_verifier(url: str, pki: PKI) -> Verifier:
    transport = httpx.HTTPTransport(verify=_context(pki, "alice"))

    def admin() -> str:
        with httpx.Client(base_url=url, verify=_context(pki, "alice")) as http:
            answer = http.post("/v1/admin/auth", json={"secret": ADMIN_SECRET})
            return str(answer.json()["access_token"])

    return Verifier(url, audience="tasklease", credentials=admin, transport=transport)


def test_certificate_bound_token_checked_against_the_presented_certificate(
    mtls_broker: tuple[str, dict[str, Any]], pki: PKI
) -> None:
    url, agent = mtls_broker
    token = agent["access_token"]
    alice_pem = pki.clients["alice"][0].read_text()
    mallory_pem = pki.clients["mallory"][0].read_text()
    with _mtls_verifier(url, pki) as verifier:
        for presented in (
            {"client_cert_thumbprint": pki.thumbprints["alice"]},
            {"client_cert": alice_pem},
            {"client_cert": alice_pem.encode()},
            {"client_cert": ssl.PEM_cert_to_DER_cert(alice_pem)},
        ):
            verified = verifier.verify(token, **presented)
            assert verified.cnf == {"x5t#S256": pki.thumbprints["alice"]}
        refused = {
            "certificate-bound token presented without a client certificate": {},
            "certificate-bound token presented with another certificate": {
                "client_cert": mallory_pem
            },
        }
        for reason, presented in refused.items():
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(token, **presented)
            assert caught.value.reason == reason
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token, client_cert_thumbprint=pki.thumbprints["mallory"])
        assert caught.value.reason == "certificate-bound token presented with another certificate"


def test_middleware_takes_the_certificate_from_the_tls_connection(
    mtls_broker: tuple[str, dict[str, Any]], pki: PKI, serve: Any
) -> None:
    from tasklease.http.tls import MTLSHttpToolsProtocol

    url, agent = mtls_broker
    token = agent["access_token"]
    verifier = _mtls_verifier(url, pki)
    service: Served = serve(
        protected_app(verifier),
        ssl_certfile=str(pki.server_cert),
        ssl_keyfile=str(pki.server_key),
        ssl_ca_certs=str(pki.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        http=MTLSHttpToolsProtocol,
    )
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=service.url, verify=_context(pki, "alice")) as alice:
        ok = alice.get("/data/42", headers=bearer)
        assert ok.status_code == 200, ok.text
    with httpx.Client(base_url=service.url, verify=_context(pki, "mallory")) as mallory:
        assert_problem(mallory.get("/data/42", headers=bearer), 401, "unauthorized")


def test_middleware_reads_a_tls_extension_with_only_the_certificate_chain(
    mtls_broker: tuple[str, dict[str, Any]], pki: PKI, serve: Any
) -> None:
    """Servers other than the broker's put only ``client_cert_chain`` (PEM) in the scope."""
    url, agent = mtls_broker
    verifier = _mtls_verifier(url, pki)
    inner = protected_app(verifier)
    chains = {
        "alice": pki.clients["alice"][0].read_text(),
        "mallory": pki.clients["mallory"][0].read_text(),
    }

    async def with_tls(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            who = dict(scope["headers"]).get(b"x-test-client", b"").decode()
            if who in chains:  # what a TLS-terminating server would report
                tls = {"client_cert_chain": [chains[who]], "tls_version": None}
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await inner(scope, receive, send)

    service: Served = serve(with_tls)
    bearer = {"Authorization": f"Bearer {agent['access_token']}"}
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/data/42", headers={**bearer, "X-Test-Client": "alice"}).is_success
        for who in ("mallory", "nobody"):
            answer = client.get("/data/42", headers={**bearer, "X-Test-Client": who})
            assert_problem(answer, 401, "unauthorized")
