"""A worker freezes its start-up heap, so full collections do not walk it under load."""

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
before = gc.get_freeze_count()
app = server.worker_app()
after = gc.get_freeze_count()
# What a request allocates afterwards is still collected.
class Cycle:
    pass
c = Cycle(); c.me = c; del c
collected = gc.collect()
print(json.dumps({"before": before, "after": after, "collected": collected}))
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
