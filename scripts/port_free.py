"""Exit 1, saying so first, when HOST:PORT cannot be bound (another broker is there) or
PORT is no port number.

Used by `make run` before anything else: `python scripts/port_free.py HOST PORT`.
"""

from __future__ import annotations

import errno
import socket
import sys


def main(argv: list[str]) -> int:
    host, text = argv[0], argv[1]
    port = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= port <= 65535:  # said as serve says it, not int()'s or bind()'s traceback
        sys.stderr.write(
            f"error: TASKLEASE_PORT must be a port number from 1 to 65535, not {text!r}\n"
        )
        return 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sys.stderr.write(
                    f"error: port {port} on {host} is taken (another broker, or another "
                    "program, is listening there).\n"
                    f"hint: stop it, or choose another port: make run TASKLEASE_PORT={port + 1}\n"
                )
            else:
                sys.stderr.write(f"error: cannot listen on {host}:{port}: {exc.strerror}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
