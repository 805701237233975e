"""The zero-trust suite imports its helpers from security_support, beside this."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_HTTP = str(Path(__file__).resolve().parents[1] / "http")
if _HTTP not in sys.path:
    sys.path.insert(0, _HTTP)
