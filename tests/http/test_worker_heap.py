"""A worker freezes its start-up heap, so full collections do not walk it under load, and
collects what requests leave behind at its own thresholds (decision 258)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json, os, sys
from tasklease.core.config import Config
from tasklease.core.kernel import RequestContext
from tasklease.core.passwords import hash_secret
from tasklease import server

d = sys.argv[1]
config = Config(
    data_dir=d, database=os.path.join(d, "t.db"), key_dir=os.path.join(d, "keys"),
    admin_secret_hash=hash_secret("s" * 32),
)
made = server.build_broker(config, create=True)  # what `tasklease init` makes
made.set_up_first_admin("admin", RequestContext())
made.audit.close()
made.store.close()
server._prepare(config)
os.environ[server._WORKER_CONFIG_ENV] = server._config_to_env(config)
import weakref
before, thresholds_before = gc.get_freeze_count(), gc.get_threshold()
app = server.worker_app()
after, thresholds = gc.get_freeze_count(), gc.get_threshold()
# What a request allocates afterwards is still collected: by the collector's own rounds,
# once the first threshold's worth of objects was allocated ...
class Cycle:
    pass
first = Cycle(); first.me = first
gone = weakref.ref(first); del first
runs = []
def count(phase, info):
    if phase == "stop":
        runs.append(info["generation"])
gc.callbacks.append(count)
kept = []
for _ in range(12_000):
    kept.append(Cycle())  # survivors, as a cache's entries are
automatic = gone() is None
# ... and by an explicit collection.
c = Cycle(); c.me = c; del c
collected = gc.collect()
print(json.dumps({
    "before": before, "after": after, "collected": collected, "automatic": automatic,
    "runs": len(runs), "thresholds_before": thresholds_before, "thresholds": thresholds,
    "expected": server.GC_THRESHOLDS,
}))
"""


def test_worker_app_freezes_the_startup_heap(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["before"] == 0
    assert figures["after"] > 10_000  # modules, routes, the broker: all frozen
    assert figures["collected"] >= 1  # the cycle made after start-up was collected
    assert figures["thresholds_before"] == [700, 10, 10]  # CPython's
    assert figures["thresholds"] == figures["expected"] == [7_000, 10, 100]
    # 12,000 objects kept alive set off a round of the collector by themselves, and it
    # took the cycle dropped before them: garbage does not wait for a full collection.
    assert figures["automatic"] is True
    assert 1 <= figures["runs"] <= 2  # at 7,000 objects, not at every 700
