"""``tasklease doctor``: the risky settings of a data directory and its configuration.

Each finding names what is risky, why it matters and how to fix it, with a severity:
``high`` (fix before serving: keys or the admin credential exposed, traffic or client
addresses open to forgery), ``medium`` (a weaker default than a production deployment
wants) or ``low`` (worth a look). The command exits 2 when any finding is high, so it
can gate a deployment, and 0 otherwise. It reads files and settings only: it never
starts the broker, opens the database or reads a key's contents beyond its PEM label.

Run it as the user the broker runs as: ownership is checked against that user (or,
run as root, against the owner of the data directory).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl, unquote, urlsplit

import typer
from rich.markup import escape

from tasklease.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigOpt,
    DataDirOpt,
    fail,
    out,
    print_json,
)
from tasklease.localfiles import open_regular
from tasklease.rules.cleartext import is_loopback_host

if TYPE_CHECKING:
    from tasklease.core.config import Config

__all__ = ["SEVERITIES", "Finding", "clock_synchronised", "diagnose", "register"]

SEVERITIES = ("high", "medium", "low")

_PLAINTEXT_PEM = b"-----BEGIN PRIVATE KEY-----"  # unencrypted PKCS#8 (RFC 5958, RFC 7468)
_DEFAULT_PASSPHRASE_FILE = "key-passphrase"  # noqa: S105 - a file name, not a secret
# What `make run` asks `tasklease init` to write in the data directory.
_ADMIN_SECRET_FILE = "admin-secret"  # noqa: S105 - a file name, not a secret
_OPERATOR_SECRET_FILES = "operator-*-secret"  # noqa: S105 - `init`'s first operator's
# Argon2id below OWASP's least recommended cost (19 MiB, 2 passes) is cheap to attack
# offline should the configuration leak.
_ARGON2_MIN_MEMORY_KIB = 19456
_ARGON2_MIN_PASSES = 2


@dataclass(frozen=True, slots=True)
class Finding:
    """One risky setting: a stable ``check`` name, a ``severity`` (``SEVERITIES``), what
    was found, why it matters and how to fix it."""

    check: str
    severity: str
    title: str
    why: str
    fix: str


# --- the checks ------------------------------------------------------------------------------


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _signing_keys(config: Config) -> Iterator[Finding]:
    if config.key_provider == "plaintext":
        yield Finding(
            "plaintext-signing-key",
            "high",
            'the signing keys are stored unencrypted (key_provider = "plaintext")',
            "whoever reads the key directory, or a backup or copy of it, can sign tokens "
            "the broker and every verifier accept",
            'set key_provider = "file" (the default) and run `tasklease keys encrypt`, '
            'or use key_provider = "pkcs11" with an HSM',
        )
        return
    key_dir = Path(config.key_dir)
    plaintext = [
        path.relative_to(key_dir).as_posix()
        for path in _all_key_files(key_dir)
        if _is_plaintext_pem(path)
    ]
    if plaintext:
        yield Finding(
            "plaintext-signing-key",
            "high",
            f"{len(plaintext)} unencrypted signing key file(s) in {key_dir}: "
            f"{', '.join(plaintext)}",
            "an unencrypted private key on disk lets whoever reads it sign tokens, "
            f'whatever key_provider says ("{config.key_provider}")',
            "run `tasklease keys encrypt` to rewrite them under the passphrase, "
            "or remove keys that are no longer needed",
        )


def _all_key_files(key_dir: Path) -> list[Path]:
    """The key files of every directory the broker keeps keys in: its own, the audit
    log's, each tenant's (``keys encrypt`` covers the same, ``key_directories``)."""
    from tasklease.cli._keys import key_directories

    try:
        directories = key_directories(key_dir)
    except OSError:
        directories = [key_dir]
    return [path for directory in directories for path in _key_files(directory)]


def _key_files(key_dir: Path) -> list[Path]:
    try:
        return sorted(key_dir.glob("signing-*.pem"))
    except OSError:
        return []


def _is_plaintext_pem(path: Path) -> bool:
    try:
        fd = open_regular(path, follow_symlinks=False)
    except OSError:
        return False  # unreadable here: its mode and owner are checked on their own
    try:
        return os.read(fd, 64).lstrip().startswith(_PLAINTEXT_PEM)
    finally:
        os.close(fd)


def _operator_secrets(data_dir: Path) -> list[Path]:
    try:
        return sorted(data_dir.glob(_OPERATOR_SECRET_FILES))
    except OSError:
        return []


def _passphrase_file(config: Config, env: Mapping[str, str]) -> Path | None:
    if config.key_provider != "file" or env.get("TASKLEASE_KEY_PASSPHRASE"):
        return None
    if config.key_passphrase_file:
        return Path(config.key_passphrase_file)
    return Path(config.data_dir) / _DEFAULT_PASSPHRASE_FILE


def _sqlite_file(database: str) -> Path | None:
    if "://" not in database:
        return Path(database) if database else None
    parts = urlsplit(database)
    if parts.scheme.lower() == "sqlite" and parts.path.startswith("/"):
        return Path(unquote(parts.path))
    return None  # PostgreSQL (or memory): nothing on this machine's disk


# What a file holds decides how private it must be.
_DIRECTORY = "directory"  # group/others must not write (high) and should not read (medium)
_CONFIDENTIAL = "secret"  # anything for group/others is high
_PRIVATE = "private"  # group/others writing is high, reading medium


def _files(
    config: Config, config_path: Path | None, env: Mapping[str, str]
) -> list[tuple[Path, str, str]]:
    """The paths to check, what each is (for the message), and how private it must be."""
    data_dir, key_dir = Path(config.data_dir), Path(config.key_dir)
    found: list[tuple[Path, str, str]] = [
        (data_dir, "the data directory", _DIRECTORY),
        (key_dir, "the key directory", _DIRECTORY),
    ]
    found += [(path, "a signing key", _CONFIDENTIAL) for path in _all_key_files(key_dir)]
    found.append((key_dir / "nonce.secret", "the nonce secret", _CONFIDENTIAL))
    passphrase = _passphrase_file(config, env)
    if passphrase is not None:
        found.append((passphrase, "the signing keys' passphrase", _CONFIDENTIAL))
    if config.key_provider == "pkcs11" and config.pkcs11_pin_file:
        found.append((Path(config.pkcs11_pin_file), "the HSM PIN", _CONFIDENTIAL))
    found.append((data_dir / _ADMIN_SECRET_FILE, "the admin secret", _CONFIDENTIAL))
    found += [(path, "an operator's secret", _CONFIDENTIAL) for path in _operator_secrets(data_dir)]
    if config.tls_key:
        found.append((Path(config.tls_key), "the TLS private key", _CONFIDENTIAL))
    if config_path is not None:
        found.append((config_path, "the configuration (admin secret hash)", _PRIVATE))
    database = _sqlite_file(config.database)
    if database is not None:
        for suffix in ("", "-wal", "-shm"):
            found.append((Path(f"{database}{suffix}"), "the database", _PRIVATE))
    return found


# What `serve` opens at start-up, and refuses to start without.
_SERVE_READS = frozenset(
    {
        "the data directory",
        "the key directory",
        "a signing key",
        "the nonce secret",
        "the signing keys' passphrase",
        "the HSM PIN",
        "the TLS private key",
        "the configuration (admin secret hash)",
        "the database",
    }
)
# A directory is entered (the key directory listed too); a file read.
_NEEDS = {"the data directory": os.X_OK, "the key directory": os.R_OK | os.X_OK}
_VERB = {os.X_OK: "enter", os.R_OK | os.X_OK: "list", os.R_OK: "read"}
_MODE_FOR = {"enter": "x", "list": "rx", "read": "r"}


def _broker_may_use(path: Path, what: str, st: os.stat_result, euid: int, expected: int) -> bool:
    """Whether the broker's user may do with ``path`` what ``serve`` does (``_NEEDS``)."""
    wanted = _NEEDS.get(what, os.R_OK)
    if euid == expected:  # doctor runs as the broker's user: ask the kernel
        return os.access(path, wanted, effective_ids=os.access in os.supports_effective_ids)
    if st.st_uid != expected:
        return True  # another owner: file-owner says so, and the broker refuses it anyway
    bits = (stat.S_IRUSR if wanted & os.R_OK else 0) | (stat.S_IXUSR if wanted & os.X_OK else 0)
    return st.st_mode & bits == bits  # root for the owner: the owner's bits decide


def _unusable(path: Path, what: str, expected: int, verb: str) -> Finding:
    fix = (
        f"let uid {expected} search (chmod u+x, as their owner) the directories above {path}"
        if verb == "reach"
        else f"chown {expected} {path} and chmod u+{_MODE_FOR[verb]} it, or run the broker "
        "as the user who owns the data directory"
    )
    return Finding(
        "file-unreadable",
        "high",
        f"the broker's user (uid {expected}) cannot {verb} {path} ({what})",
        "`tasklease serve` opens it at start-up and refuses to start without it (a "
        "restore as another user, a chmod too far)",
        fix,
    )


def _permissions(
    config: Config, config_path: Path | None, env: Mapping[str, str], euid: int
) -> Iterator[Finding]:
    expected = euid
    if euid == 0:  # root checks for the broker's user: whoever owns the data directory
        try:
            expected = os.stat(config.data_dir).st_uid
        except OSError:
            expected = euid
    seen: set[Path] = set()
    for path, what, kind in _files(config, config_path, env):
        if path in seen:
            continue
        seen.add(path)
        try:
            st = os.stat(path)
        except PermissionError:  # a directory above it this user may not search
            if what in _SERVE_READS and euid == expected:
                yield _unusable(path, what, expected, "reach")
            continue
        except OSError:
            continue  # absent: nothing to expose
        if what in _SERVE_READS and not _broker_may_use(path, what, st, euid, expected):
            yield _unusable(path, what, expected, _VERB[_NEEDS.get(what, os.R_OK)])
        if st.st_uid != expected:
            yield Finding(
                "file-owner",
                "high",
                f"{path} ({what}) is owned by uid {st.st_uid}, not by the broker's user "
                f"(uid {expected})",
                "its owner can change its mode or contents whatever its mode says now; the "
                "broker refuses key and secret files it does not own",
                f"chown {expected} {path}",
            )
        bits = stat.S_IMODE(st.st_mode) & 0o077
        if not bits:
            continue
        wanted = "0700" if kind == _DIRECTORY else "0600"
        writable = bool(bits & 0o022)
        if writable:
            harm = "replace or alter it"
        elif kind == _CONFIDENTIAL:
            harm = "read it and use what it holds"
        elif kind == _DIRECTORY:
            harm = "list it and open any file in it whose own mode allows"
        else:
            harm = "read what it holds (audit records, hashes of secrets)"
        yield Finding(
            "file-mode",
            "high" if kind == _CONFIDENTIAL or writable else "medium",
            f"{path} ({what}) has mode {_mode(st)}: group or others can "
            f"{'write' if writable else 'read'} it",
            f"{what} must be {wanted}: other users of this machine could {harm}",
            f"chmod {wanted[1:]} {path}",
        )


def _transport(config: Config) -> Iterator[Finding]:
    if is_loopback_host(config.host) or config.tls_mode != "none":
        return
    if config.trusted_proxies:
        yield Finding(
            "tls-off",
            "medium",
            f'the broker listens on {config.host} without TLS (tls_mode = "none"), '
            "behind trusted proxies",
            "TLS ends at the proxy: tokens and the admin secret cross the network between "
            "proxy and broker in clear",
            'set tls_mode = "tls" (tls_cert, tls_key) so the last hop is encrypted too, or '
            "bind to an address only the proxy reaches",
        )
        return
    yield Finding(
        "tls-off",
        "high",
        f"the broker listens on {config.host}, beyond this machine, without TLS "
        '(tls_mode = "none")',
        "tokens, launch tokens and the admin secret travel in clear: anyone on the path "
        "can read and replay them",
        'set tls_mode = "tls" (or "mtls") with tls_cert and tls_key, or put the broker '
        "behind a TLS proxy and list it in trusted_proxies",
    )


# libpq's sslmode values that check the server's certificate; ``require`` encrypts but
# takes any server, the others (and no sslmode: ``prefer``) fall back to clear text.
_VERIFYING_SSLMODES = ("verify-ca", "verify-full")


def _database_query(database: str) -> dict[str, str]:
    """The query parameters of a PostgreSQL URL, read after its last ``@`` (never from a
    password that holds a ``?``)."""
    after = database.partition("://")[2].rpartition("@")[2]
    return dict(parse_qsl(after.partition("?")[2]))


def _database_hosts(database: str, env: Mapping[str, str]) -> list[str]:
    """The hosts a PostgreSQL URL has libpq connect to: the ``hostaddr`` query parameter
    (or ``PGHOSTADDR``), which libpq connects to whatever ``host`` names, else the
    ``host`` query parameter, else the URL's (a comma-separated list, each with an optional
    port), else ``PGHOST``; ``""`` or a path is a unix socket. Only what follows the URL's
    last ``@`` is read, so no part of a password is ever taken for a host
    (``storage.redact_url``'s rule)."""
    query = _database_query(database)
    addresses = query.get("hostaddr") or env.get("PGHOSTADDR", "")
    if addresses:
        return addresses.split(",")
    if query.get("host"):
        return query["host"].split(",")
    authority = database.partition("://")[2].rpartition("@")[2]
    authority = authority.partition("/")[0].partition("?")[0]
    hosts = []
    for item in unquote(authority).split(","):
        if item.startswith("[") and "]" in item:
            hosts.append(item[1 : item.index("]")])  # an IPv6 address
        else:
            hosts.append(item.partition(":")[0])
    if any(hosts):
        return hosts
    return env.get("PGHOST", "").split(",")


def _database_transport(config: Config, env: Mapping[str, str]) -> Iterator[Finding]:
    from tasklease.storage import is_shared_database, postgres_url_problem

    if not is_shared_database(config.database):
        return
    unreadable = postgres_url_problem(config.database)  # as the store reads it, unconnected
    if unreadable is not None:
        yield Finding(
            "database-url",
            "high",
            "the database URL is one libpq cannot parse: the broker will not start",
            unreadable,
            "fix the URL's percent-encoding, brackets or query parameters (libpq's own "
            "keywords only); docs/postgresql.md",
        )
        return
    remote = [
        host
        for host in _database_hosts(config.database, env)
        if host and not host.startswith(("/", "@")) and not is_loopback_host(host)
    ]
    if not remote:
        return  # a unix socket or this machine
    query = _database_query(config.database)
    mode = (query.get("sslmode") or env.get("PGSSLMODE") or "prefer").lower()
    if mode in _VERIFYING_SSLMODES:
        return
    where = ", ".join(remote)
    if mode == "require":
        yield Finding(
            "database-tls",
            "medium",
            f"the database at {where} is reached with sslmode=require: encrypted, but any "
            "server is taken for it",
            "whoever can put itself on the path answers as the database: it reads and "
            "rewrites revocations, operators and the audit log",
            "add sslmode=verify-full (and sslrootcert) to the database URL",
        )
        return
    yield Finding(
        "database-tls",
        "high",
        f"the database at {where} is reached without TLS that checks the server (sslmode={mode})",
        "libpq sends the connection in clear when TLS is refused or missing: anyone on "
        "the path reads and rewrites revocations, operators, app credentials' hashes and "
        "the audit log",
        "add sslmode=verify-full (and sslrootcert) to the database URL, or reach the "
        "database over a unix socket",
    )


def _metrics(config: Config) -> Iterator[Finding]:
    address = config.metrics_address
    if address is not None and not is_loopback_host(address[0]):
        yield Finding(
            "metrics-public",
            "medium",
            f"the metrics listener is on {config.metrics_listen}, not a loopback address",
            "anyone who reaches it reads the broker's activity without a credential: "
            "traffic, refusals by reason, revocations, rate-limited endpoints",
            "keep metrics_listen on 127.0.0.1 (scrape through the host) or firewall the "
            'port to the scraper; or set metrics_listen = "" and metrics_public = '
            '"token" to require an auditor\'s token',
        )


def _heartbeat(config: Config) -> Iterator[Finding]:
    if not config.heartbeat_required:
        yield Finding(
            "heartbeat-supervision-off",
            "medium",
            "agents are supervised only from their first heartbeat (heartbeat_required = false)",
            "an agent that never sends a heartbeat is never revoked when it goes silent: "
            "a peer that authenticated it (mutual auth) cannot learn it is gone, and its "
            "token lives to its expiry",
            "set heartbeat_required = true once your agents send heartbeats "
            "(the client SDK's start_heartbeats(); docs/agents.md)",
        )


def _federation(config: Config) -> Iterator[Finding]:
    if config.federation_feed_max_staleness == 0:
        yield Finding(
            "federation-feed-unbounded",
            "medium",
            "federated domains' tokens are exchanged however long their revocation feed "
            "has been silent (federation_feed_max_staleness = 0)",
            "while a peer's feed is down, a token revoked there is still exchanged here for "
            "a fresh one, for as long as the outage lasts",
            "remove federation_feed_max_staleness (60 s by default; docs/federation.md)",
        )


def _binding(config: Config) -> Iterator[Finding]:
    if (
        is_loopback_host(config.host)
        or config.holder_binding == "required"
        or config.tls_mode == "mtls"
    ):
        return
    yield Finding(
        "bearer-agents",
        "low",
        f"the broker listens on {config.host} and admits agents whose tokens are bound to "
        'no key (holder_binding = "optional")',
        "a token read from a log, a proxy or a compromised resource server works for "
        "whoever holds it until it expires",
        'set holder_binding = "required" once every agent registers with a DPoP proof (the '
        "SDK's dpop=True) or a client certificate (the AgentWrit SDK does neither)",
    )


def _proxies(config: Config) -> Iterator[Finding]:
    for value in config.trusted_proxies:
        network = ipaddress.ip_network(value, strict=False)
        wide, broad = (8, 16) if network.version == 4 else (32, 48)
        if network.prefixlen >= broad:
            continue
        severity = "high" if network.prefixlen < wide else "medium"
        yield Finding(
            "trusted-proxies-wide",
            severity,
            f"trusted_proxies trusts {network} ({network.num_addresses:,} addresses)",
            "every host in it can name any client address in X-Forwarded-For: choose its "
            "own rate-limit bucket and the source the audit log records",
            "list only your proxies' own addresses (or their small subnet) in trusted_proxies",
        )
    if config.trusted_proxies and not config.public_url:
        yield Finding(
            "public-url-unset",
            "medium",
            "trusted_proxies is set but public_url is not",
            "behind a proxy, clients address the proxy: without public_url every "
            "DPoP-bound registration and request is refused, and operators are tempted "
            "to turn DPoP off",
            'set public_url to the origin clients use, e.g. ["https://broker.example.com"]',
        )


def _admin_secret(config: Config, env: Mapping[str, str]) -> Iterator[Finding]:
    from tasklease.core.passwords import secret_weakness

    if not config.admin_secret_hash:
        yield Finding(
            "admin-secret-missing",
            "high",
            "no admin secret is configured (admin_secret_hash, TASKLEASE_ADMIN_SECRET)",
            "`tasklease serve` refuses to start without one; a deployment that papers "
            "over this with a secret chosen in haste gets a weak one",
            "run `tasklease init`, or set TASKLEASE_ADMIN_SECRET to 64 random hex "
            "characters (python -c 'import secrets; print(secrets.token_hex(32))')",
        )
        return
    plain = [("TASKLEASE_ADMIN_SECRET", env.get("TASKLEASE_ADMIN_SECRET", ""))]
    secret_file = Path(config.data_dir) / _ADMIN_SECRET_FILE
    with (
        contextlib.suppress(OSError, UnicodeDecodeError),
        open(open_regular(secret_file), encoding="utf-8") as fh,
    ):
        plain.append((str(secret_file), fh.read().strip()))
    for source, secret in plain:
        # The rule `serve` applies to TASKLEASE_ADMIN_SECRET (load_config refuses a weak
        # one before this runs); here for the plain text `init --secret-file` left.
        weakness = secret_weakness(secret) if secret else None
        if weakness is not None:
            yield Finding(
                "admin-secret-weak",
                "high",
                f"the admin secret in {source} is weak: {weakness}",
                "the admin secret mints operator tokens with every admin scope; a short, "
                "repetitive or example one is guessed (the rate limit slows guessing, it "
                "does not stop it)",
                "replace it with 64 random hex characters: `tasklease init --force` makes "
                "one, or python -c 'import secrets; print(secrets.token_hex(32))'",
            )
    yield from _admin_hash(config.admin_secret_hash)
    if secret_file.exists():
        yield Finding(
            "admin-secret-file",
            "medium",
            f"the admin secret is kept in plain text at {secret_file}",
            "the broker needs only its hash (in the configuration); the plain text in the "
            "data directory goes wherever the directory's copies and backups go",
            f"store the secret in your secret manager, then delete {secret_file}",
        )
    for path in _operator_secrets(Path(config.data_dir)):
        yield Finding(
            "admin-secret-file",
            "medium",
            f"an operator's secret is kept in plain text at {path}",
            "the broker keeps only its hash; the plain text in the data directory goes "
            "wherever the directory's copies and backups go",
            f"hand the secret to its operator (or a secret manager), then delete {path}",
        )


def _admin_hash(encoded: str) -> Iterator[Finding]:
    from tasklease.core.passwords import hash_problem

    unusable = hash_problem(encoded)  # the rule serve refuses to start by
    if unusable is not None:
        yield Finding(
            "admin-secret-hash",
            "high",
            f"admin_secret_hash cannot be used: {unusable}",
            "`tasklease serve` refuses to start with it: no secret would ever sign in as "
            "the admin (plain text there may be the secret itself, kept in the clear)",
            "run `tasklease init --force` to make a new admin secret and write its hash, "
            "or set the secret in TASKLEASE_ADMIN_SECRET",
        )
        return
    parts = encoded.split("$")
    if len(parts) < 5 or parts[1] != "argon2id":
        yield Finding(
            "admin-secret-hash",
            "medium",
            "admin_secret_hash is not an argon2id hash",
            "the broker verifies the admin secret with argon2id only: no admin can sign "
            "in, and a hash of another kind may be cheap to reverse",
            "run `tasklease init --force`, or set the secret in TASKLEASE_ADMIN_SECRET",
        )
        return
    params = dict(item.split("=", 1) for item in parts[3].split(",") if "=" in item)
    try:
        memory, passes = int(params.get("m", "0")), int(params.get("t", "0"))
    except ValueError:
        memory, passes = 0, 0
    if memory < _ARGON2_MIN_MEMORY_KIB or passes < _ARGON2_MIN_PASSES:
        yield Finding(
            "admin-secret-hash",
            "medium",
            f"admin_secret_hash uses weak argon2id parameters (m={memory} KiB, t={passes})",
            "should the configuration leak, guesses at the admin secret are cheap to test offline",
            "hash the secret again with `tasklease init --force` (64 MiB, 3 passes)",
        )


def _passphrase_beside_keys(config: Config, env: Mapping[str, str]) -> Iterator[Finding]:
    path = _passphrase_file(config, env)
    if path is None or not path.exists():
        return
    try:
        inside = path.resolve().is_relative_to(Path(config.data_dir).resolve())
    except OSError:
        return
    if inside:
        yield Finding(
            "passphrase-beside-keys",
            "medium",
            f"the signing keys' passphrase is in the data directory ({path})",
            "a copy or backup of the data directory holds both the encrypted keys and the "
            "passphrase that opens them",
            "move it out of the data directory and set key_passphrase_file, or give it "
            "in TASKLEASE_KEY_PASSPHRASE (docs/operations.md, Keys)",
        )


def _identity(config: Config) -> Iterator[Finding]:
    from tasklease.core.config import Config

    defaults = Config()
    if config.issuer == defaults.issuer:
        yield Finding(
            "default-issuer",
            "low",
            f'issuer is the default ("{config.issuer}")',
            "every broker left at the default issues tokens with the same iss: a verifier "
            "that trusts two of them cannot tell their tokens apart by issuer",
            "set issuer to a name of this deployment (its URL, e.g. https://broker.example.com)",
        )
    if config.trust_domain == defaults.trust_domain:
        yield Finding(
            "default-trust-domain",
            "low",
            f'trust_domain is the default ("{config.trust_domain}")',
            "agents' SPIFFE IDs from every broker left at the default share one trust "
            "domain: federation and audit cannot tell whose agent is whose",
            "set trust_domain to a domain you control (e.g. agents.example.com)",
        )


def clock_synchronised() -> bool | None:
    """Whether the system clock is synchronised (NTP), or None when it cannot be told."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    timedatectl = shutil.which("timedatectl")
    if timedatectl is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no shell
            [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    answer = done.stdout.strip().lower() if done.returncode == 0 else ""
    return {"yes": True, "no": False}.get(answer)


def _clock(synchronised: bool | None, config: Config) -> Iterator[Finding]:
    if synchronised is False:
        yield Finding(
            "clock-unsynchronised",
            "medium",
            "the system clock is not synchronised (NTP)",
            "tokens die at their exp with no leeway and are refused more than "
            f"{config.clock_skew} s before their nbf/iat: a drifting clock refuses good "
            "tokens or keeps dead ones alive, and skews every audit timestamp",
            "enable time synchronisation (systemd-timesyncd or chrony: timedatectl set-ntp true)",
        )


def diagnose(
    config: Config,
    *,
    config_path: Path | None,
    env: Mapping[str, str],
    euid: int,
    clock: Callable[[], bool | None] = clock_synchronised,
) -> list[Finding]:
    """Every finding for ``config``, highest severity first."""
    found = [
        *_signing_keys(config),
        *_permissions(config, config_path, env, euid),
        *_transport(config),
        *_database_transport(config, env),
        *_metrics(config),
        *_proxies(config),
        *_admin_secret(config, env),
        *_passphrase_beside_keys(config, env),
        *_heartbeat(config),
        *_federation(config),
        *_binding(config),
        *_clock(clock(), config),
        *_identity(config),
    ]
    return sorted(found, key=lambda finding: SEVERITIES.index(finding.severity))


# --- the command -----------------------------------------------------------------------------

_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}


def _config_path(config: str | None, data_dir: str | None, env: Mapping[str, str]) -> Path | None:
    """The file ``load_config`` reads (the same precedence)."""
    named = config or env.get("TASKLEASE_CONFIG")
    if named:
        return Path(named)
    directory = data_dir or env.get("TASKLEASE_DATA_DIR") or ".tasklease"
    default = Path(directory) / "config.toml"
    return default if default.is_file() else None


def doctor(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check a data directory and its configuration for risky settings.

    Each finding says why it matters and how to fix it, with a severity (high, medium,
    low). Exits 2 when any finding is high (a deployment gate), else 0. Run it as the
    broker's user, with the broker's environment.
    """
    from tasklease.settings import ConfigError, load_config

    env = os.environ
    try:
        # The file's owner and mode are findings here (file-owner, file-mode), not a stop.
        cfg = load_config(config, overrides={"data_dir": data_dir}, check_file=False)
    except ConfigError as exc:
        fail(str(exc))
    path = _config_path(config, data_dir, env)
    findings = diagnose(cfg, config_path=path, env=env, euid=os.geteuid(), clock=clock_synchronised)
    counts = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        counts[finding.severity] += 1
    passed = counts["high"] == 0
    if as_json:
        print_json(
            {
                "data_dir": cfg.data_dir,
                "config": str(path) if path else None,
                "passed": passed,
                "counts": counts,
                "findings": [asdict(finding) for finding in findings],
            }
        )
    else:
        _print(cfg, path, findings, counts)
    raise typer.Exit(EXIT_OK if passed else EXIT_USAGE)


def _print(
    config: Config, path: Path | None, findings: list[Finding], counts: dict[str, int]
) -> None:
    where = f"config {path}" if path else "no config file"
    out.print(f"tasklease doctor: {config.data_dir} ({where})", highlight=False)
    for finding in findings:
        label = f"[{_STYLE[finding.severity]}]{finding.severity.upper():<6}[/]"
        out.print(
            f"\n{label} {escape(finding.check)}: {escape(finding.title)}\n"
            f"       why: {escape(finding.why)}\n"
            f"       fix: {escape(finding.fix)}",
            highlight=False,
            markup=True,
        )
    summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
    verdict = "no high finding" if counts["high"] == 0 else "high findings: fix them first"
    out.print(f"\n{len(findings)} findings ({summary}): {verdict}", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach ``doctor`` to the top-level ``tasklease`` app."""
    app.command("doctor")(doctor)
