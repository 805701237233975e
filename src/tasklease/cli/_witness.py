"""``tasklease audit witness``: a C2SP ``tlog-witness`` run by a second party.

``init`` makes the witness's cosignature key (``witness.key``, 0600, Go's ``PRIVATE+KEY``
format) and prints its vkey, to give the broker's operator; ``serve`` answers
``POST /add-checkpoint`` for the logs whose keys it is given. For each log it keeps the
last checkpoint it cosigned (``state/<sha256(origin)>.json``, written aside and renamed
into place), cosigns a new one only when a consistency proof shows it extends that one,
and refuses a fork with 422. Standard library HTTP server; one decision at a time (the
decision and the state update are one step under a lock).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tasklease.cli._common import err, fail, out, write_private
from tasklease.localfiles import read_regular

if TYPE_CHECKING:
    import http.server

    from tasklease.rules.note import VerifierKey
    from tasklease.rules.witness import WitnessState

__all__ = ["Witness", "register"]

KEY_FILE = "witness.key"
_MAX_BODY = 1 << 20

witness_app = typer.Typer(
    help="Run a witness of a broker's audit log (C2SP tlog-witness).", no_args_is_help=True
)

DirArg = Annotated[
    Path, typer.Argument(metavar="DIR", help="The witness's directory (its key and state).")
]


# What another user could do with a witness directory (or its state directory) they own or
# may write: rename the state away, and the witness forgets what it cosigned.
_RISK = (
    "its owner could remove the checkpoints this witness cosigned, and it would then cosign "
    "a rewritten log"
)


def _private_directory(directory: Path, what: str) -> None:
    """Make ``directory`` (0700, its missing parents too) or check the one there: never one
    that group or others may write, or that another user than root owns (``keystore``'s
    rule for a key directory). Exits with the reason otherwise."""
    from tasklease.keystore import KeyStoreError, ensure_directory

    try:
        ensure_directory(directory, what=what, risk=_RISK)
    except KeyStoreError as exc:
        fail(str(exc), hint=f"chmod 700 {directory}, as its owner")
    except OSError as exc:
        fail(f"cannot make the {what} {directory}: {exc.strerror or exc}")


def _save_state(path: Path, text: str) -> None:
    """A new 0600 state file, fsynced and renamed over the last (never written through a
    link); raises OSError, as a request's failure, not the command's exit."""
    from tasklease.keystore import write_private_file

    write_private_file(path, text.encode("utf-8"), replace=True)


class Witness:
    """A witness's key and state on disk, and its decision on each request. Thread-safe."""

    def __init__(self, directory: Path, logs: list[VerifierKey]) -> None:
        from tasklease.rules.note import COSIGNATURE, NoteError, parse_private_key

        key_file = directory / KEY_FILE
        if directory.is_dir():  # a missing one is said below, as a missing key
            _private_directory(directory, "witness directory")
        try:
            if key_file.stat().st_mode & 0o077:
                fail(f"{key_file} is readable by others: chmod 600 {key_file}")
            text = read_regular(key_file).decode("utf-8")
            self.key, self._signing = parse_private_key(text)
        except FileNotFoundError:
            fail(f"no witness key in {directory}: run `tasklease audit witness init` first")
        except NoteError as exc:
            fail(f"{key_file}: {exc}")
        if self.key.sig_type != COSIGNATURE:
            fail(f"{key_file} is not a cosignature (type 0x04) key")
        self._logs: dict[str, list[VerifierKey]] = {}
        for key in logs:
            self._logs.setdefault(key.name, []).append(key)
        self._state_dir = directory / "state"
        _private_directory(self._state_dir, "witness state directory")
        self._lock = threading.Lock()

    def _state_file(self, origin: str) -> Path:
        return self._state_dir / f"{hashlib.sha256(origin.encode()).hexdigest()}.json"

    def state(self, origin: str) -> WitnessState:
        from tasklease.rules.witness import WitnessState

        try:
            data: dict[str, Any] = json.loads(self._state_file(origin).read_text("utf-8"))
        except FileNotFoundError:
            return WitnessState()
        return WitnessState(int(data["size"]), base64.b64decode(data["root"]), str(data["note"]))

    def _save(self, origin: str, state: WitnessState) -> None:
        record = {
            "origin": origin,
            "size": state.size,
            "root": base64.b64encode(state.root).decode("ascii"),
            "note": state.note,
        }
        _save_state(self._state_file(origin), json.dumps(record, indent=1) + "\n")

    def handle(self, body: bytes) -> tuple[int, str, bytes]:
        """Decide one add-checkpoint request: ``(status, content type, body)``."""
        from tasklease.rules.witness import WitnessError, add_checkpoint, parse_request

        try:
            request = parse_request(body)
        except WitnessError as exc:
            return 400, "text/plain; charset=utf-8", f"{exc}\n".encode()
        origin = request.note.text.split("\n", 1)[0]
        with self._lock:
            current = self.state(origin)
            answer = add_checkpoint(
                request,
                current,
                logs=self._logs,
                name=self.key.name,
                public_key=self.key.public_key,
                sign=lambda message: bytes(self._signing.sign(message).signature),
                now=int(time.time()),
            )
            if answer.status == 200:
                self._save(origin, answer.state)
        if answer.status == 422:
            err.print(f"REFUSED a checkpoint of {origin}: {answer.reason}", highlight=False)
        elif answer.status == 200:
            out.print(f"cosigned {origin} at size {answer.state.size}", highlight=False)
        return answer.status, answer.content_type, answer.body


def _handler(witness: Witness) -> type[http.server.BaseHTTPRequestHandler]:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "tasklease-witness"
        sys_version = ""

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.path.rstrip("/").rsplit("/", 1)[-1] != "add-checkpoint":
                self._answer(404, "text/plain; charset=utf-8", b"not found\n")
                return
            length = self.headers.get("Content-Length")
            if (
                length is None
                or not (length.isascii() and length.isdigit())
                or int(length) > _MAX_BODY
            ):
                self._answer(411 if length is None else 413, "text/plain", b"bad length\n")
                return
            self._answer(*witness.handle(self.rfile.read(int(length))))

        def do_GET(self) -> None:
            # The witness's own key, for whoever sets it up.
            self._answer(200, "text/plain; charset=utf-8", f"{witness.key.vkey}\n".encode())

        def log_message(self, format: str, *args: Any) -> None:
            return  # the decisions are printed by Witness.handle

    return Handler


@witness_app.command("init")
def witness_init(
    directory: DirArg,
    name: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="The witness's name in its cosignatures, e.g. witness.example.org."
        ),
    ],
) -> None:
    """Make the witness's cosignature key and print its vkey (give it to the operator)."""
    import nacl.signing

    from tasklease.rules.note import COSIGNATURE, NoteError, parse_private_key, private_key_text

    _private_directory(directory, "witness directory")
    key_file = directory / KEY_FILE
    if key_file.exists():
        fail(f"{key_file} already exists")
    seed = bytes(nacl.signing.SigningKey.generate())
    try:
        text = private_key_text(name, COSIGNATURE, seed)
    except NoteError as exc:
        fail(f"--name: {exc}")
    write_private(key_file, text + "\n", force=False, force_flag=None)
    key, _ = parse_private_key(text)
    out.print(key.vkey, highlight=False, soft_wrap=True)


@witness_app.command("serve")
def witness_serve(
    directory: DirArg,
    log: Annotated[
        list[str],
        typer.Option(
            metavar="VKEY", help="A log's verifier key (its vkey; repeat for several logs or keys)."
        ),
    ],
    listen: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="host:port to listen on.")
    ] = "127.0.0.1:7380",
    tls_cert: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Serve HTTPS with this cert.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The certificate's private key.")
    ] = None,
) -> None:
    """Answer POST /add-checkpoint: cosign checkpoints that extend the last one cosigned."""
    import http.server
    import ssl

    from tasklease.rules.note import NoteError, VerifierKey

    try:
        logs = [VerifierKey.parse(vkey) for vkey in log]
    except NoteError as exc:
        fail(f"--log: {exc}")
    witness = Witness(directory, logs)
    host, _, port = listen.rpartition(":")
    if not (port.isascii() and port.isdigit()):
        fail("--listen must be host:port")
    server = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), _handler(witness))
    scheme = "http"
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            fail("--tls-cert and --tls-key go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    out.print(
        f"witness {witness.key.vkey} listening on {scheme}://{bound_host}:{bound_port}",
        highlight=False,
        soft_wrap=True,
    )
    for key in logs:
        state = witness.state(key.name)
        out.print(f"witnessing {key.name} (last cosigned size {state.size})", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(audit_app: typer.Typer) -> None:
    audit_app.add_typer(witness_app, name="witness")
