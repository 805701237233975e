"""A resource server's verifier whose host clock is set back, against a real broker.

The verifier runs in a process of its own under libfaketime (its wall clock behind, its
monotonic clock left alone, as a clock stepped back by hand or by an attacker on the
host). Judging tokens by its own clock alone (TM-12), a verifier 20 s behind takes a token
that died at the broker for a live one for 20 more seconds, and nothing else shows it;
one ten minutes behind refuses every fresh token as issued in the future, and takes
tokens that died up to ten minutes ago. It now reads the broker's clock from its JWKS
answers' ``Date`` header and judges by the later of the two (decision 251): the dead
token is refused as expired, a fresh one is accepted, and the offset is a metric and a
warning.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, jwt_parts, launch_broker, stop_broker
from faults_support import FakeClock

import tasklease

pytestmark = pytest.mark.slow


_VERIFIER = """
import json, sys, time
from tasklease.verify import InvalidToken, Verifier

url, dead, live = sys.argv[1:4]
verifier = Verifier(url, audience="svc-a", feed=False)
local = time.time()
out = {"local": local, "started": verifier.start(), "offset": verifier.clock_offset()}
try:
    verifier.verify(dead)
    out["dead"] = "accepted"
except InvalidToken as exc:
    out["dead"] = exc.reason
out["live"] = verifier.verify(live).sub
out["metrics"] = verifier.metrics_text()
verifier.close()
print(json.dumps(out))
"""


def _run_verifier(clock: FakeClock, url: str, dead: str, live: str) -> dict[str, object]:
    source = str(Path(tasklease.__file__).resolve().parents[1])
    env = {**os.environ, **clock.env(), "PYTHONPATH": source}
    done = subprocess.run(
        [sys.executable, "-c", _VERIFIER, url, dead, live],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    answer["stderr"] = done.stderr
    return answer


@pytest.mark.parametrize("behind", [20, 600])
def test_a_verifier_set_back_judges_tokens_by_the_brokers_clock(
    tmp_path: Path, fake_clock: FakeClock, behind: int
) -> None:
    broker = launch_broker(tmp_path / "broker", {**SHARED_ENV, "TASKLEASE_AUDIENCE": "svc-a"})
    try:
        dead = broker.register(["read:data:42"], max_ttl=2)
        exp = int(jwt_parts(dead.access_token)[1]["exp"])
        while time.time() < exp + 1:  # dead at the broker, by the broker's clock
            time.sleep(0.2)
        live = broker.register(["read:data:42"])
        fake_clock.set(-behind)
        out = _run_verifier(fake_clock, broker.url, dead.access_token, live.access_token)
    finally:
        stop_broker(broker)
    assert float(str(out["local"])) < time.time() - behind + 10  # that process was set back
    assert out["started"] is True
    offset = float(str(out["offset"]))
    assert -behind - 3 < offset < -behind + 3
    assert out["dead"] == "token expired"  # by its own clock it had `behind` s to live
    assert out["live"] == live.agent_id
    metrics = str(out["metrics"]).splitlines()
    gauge = next(
        line for line in metrics if line.startswith("tasklease_verifier_clock_offset_seconds{")
    )
    assert -behind - 3 < float(gauge.rsplit(" ", 1)[1]) < -behind + 3
    said = re.search(r"this host's clock is (\d+) s behind the broker's", str(out["stderr"]))
    assert said is not None and behind - 2 <= int(said[1]) <= behind + 1
