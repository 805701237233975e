"""What every test shares: Hypothesis judges properties, never speed; httpx clients
share one default TLS context; secrets are hashed at argon2id's lowest cost in the test
processes; files with slow tests are handed out first.

The suite runs on several processes beside brokers and databases it starts, so how long
one example takes says nothing about the code: no deadline and no too-slow health check
(speed is measured by ``make bench``, as ratios to the floor of the same run).
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("tasklease", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tasklease")


def _share_the_default_tls_context() -> None:
    """Every httpx client a test makes with the default verification shares one context,
    as the SDK's do (``client._holder.default_ssl_context``): building one parses the
    whole CA bundle, and the tests make thousands of clients, nearly all for plain HTTP
    on loopback. A context or bundle a test passes is used as given."""
    from httpx._transports import default as transports

    from tasklease.client._holder import default_ssl_context

    build = transports.create_ssl_context

    def create_ssl_context(
        verify: Any = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default_ssl_context()
        return build(verify=verify, cert=cert, trust_env=trust_env)

    transports.create_ssl_context = create_ssl_context


_share_the_default_tls_context()


def _hash_secrets_cheaply() -> None:
    """Secrets hashed in the test processes use argon2id's lowest cost (one pass over 8
    KiB) instead of the product's (three passes over 64 MiB, four lanes): the tests sign
    in thousands of times, and each check at the product's cost took about a fifth of a
    second of CPU, a large share of the suite's. A check reads its cost from the stored
    hash, so secrets hashed elsewhere (a broker process, ``tasklease init``) are still
    checked at theirs. ``core/test_passwords.py`` holds the product's own cost, in a
    process this does not touch."""
    from argon2 import PasswordHasher

    from tasklease.core import passwords

    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    passwords._UNMATCHED_HASH = passwords._unmatched_hash()


_hash_secrets_cheaply()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a test marked ``slow`` first, each file's tests kept together and in
    order: the processes take files in this order, so the last ones handed out are short
    and the processes finish close together instead of one waiting out a long file."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
