"""Federation between brokers: trust bundles over real HTTPS on loopback, with a test CA.

The helpers live beside this file (``bundle_support``); under ``--import-mode=importlib``
pytest does not put test directories on ``sys.path``, so this conftest does.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
