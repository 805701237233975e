"""A revocation stream does not beat while its process cannot read what it must send.

A stream's keepalive tells its verifier that the feed is current: everything this broker
enforces has been sent. When a revocation is committed and enforced here but the feed
cannot read it back from the store (the store's reads failing: a database going away
right after the commit, a file locked by another program), the stream has nothing to
send, and a keepalive would keep the verifier "current" without it for as long as the
reads fail: the revoked token accepted there past every staleness bound. The stream ends
instead; its reader reconnects, is refused while the reads fail, and fails closed past
its own bound (docs/broker-optional.md, the outage policy).
"""

from __future__ import annotations

from typing import Any

from tests.http.test_feed_stale_index import ADMIN_HASH, ADMIN_SECRET, _stream

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.http.app import create_app
from tasklease.storage import open_store


def test_a_stream_does_not_beat_over_a_revocation_it_could_not_read() -> None:
    broker = Broker(
        Config(admin_secret_hash=ADMIN_HASH),
        open_store("memory://"),
        KeyRing.generate(),
        nonce_secret=b"n" * 32,
    )
    app = create_app(broker, background=False)
    store: Any = broker.store
    try:
        issued = broker.admin_auth(ADMIN_SECRET, RequestContext())
        admin = broker.authenticate(f"Bearer {issued.token}", RequestContext())

        def revoked_and_unreadable() -> None:
            def failing(*_args: Any) -> Any:
                raise Unavailable("the store cannot be read", retry_after=1)

            store.revocations_since = failing
            store.load_revocations = failing
            broker.revoke(admin, level="task", target="task-7", ctx=RequestContext())
            assert broker.kernel.revocations.revoked_at("task", "task-7") is not None

        status, bodies, ended = _stream(app, issued.token, revoked_and_unreadable)
        assert status == 200
        assert any(b"event: sync" in body for body in bodies)
        sent = b"".join(bodies)
        # Would fail if: the stream went on beating while the entry this process enforces
        # could not be sent, keeping its verifier "current" without it.
        assert b"task-7" in sent or b": keepalive" not in sent, bodies
        assert ended, "the stream was not ended by the server"
    finally:
        broker.audit.close()
        broker.store.close()
