"""One frozen configuration object, built at the edge and passed down.

The core never reads the environment or files: :func:`tasklease.config_loader.load_config`
(outside the core) turns a TOML file and ``TASKLEASE_*`` variables into a :class:`Config`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from tasklease.core.spiffe import validate_trust_domain
from tasklease.rules.cleartext import is_loopback_host  # re-exported: serve and doctor use it
from tasklease.rules.note import COSIGNATURE, NoteError, VerifierKey
from tasklease.rules.scopes import check_scope_patterns
from tasklease.rules.storeurls import parse_store_url

__all__ = [
    "DEFAULT_ISSUER",
    "Config",
    "is_loopback_host",
    "issuer_from",
    "listen_address",
    "without_userinfo",
]

DEFAULT_ISSUER = "tasklease"
"""The ``iss`` of a broker configured with neither ``issuer`` nor ``public_url``."""

_LONGEST_TTL = 31_536_000  # a year: the most any lifetime setting may be


def issuer_from(issuer: str, public_url: tuple[str, ...]) -> str:
    """The ``iss`` of a broker's tokens, from its configuration.

    ``issuer`` when set; otherwise the first ``public_url`` (without a trailing ``/``),
    because the issuer identifier is the URL the authorization server is known by (RFC
    8414 sections 2 and 3.3, RFC 9068 section 4): an MCP or OAuth client that finds the
    broker at that URL must find the same ``iss`` in its tokens; otherwise
    :data:`DEFAULT_ISSUER`. Tenants derive theirs from it (``core.tenants``).
    """
    if issuer:
        return issuer
    if public_url:
        return public_url[0].rstrip("/")
    return DEFAULT_ISSUER


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a broker. Durations are in seconds.

    Attributes are documented in ``docs/configuration.md``; defaults are those a single
    broker on one machine should run with.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = ".tasklease"
    database: str = ""  # a path or URL; "" means <data_dir>/tasklease.db
    key_dir: str = ""  # "" means <data_dir>/keys
    admin_secret_hash: str = ""  # argon2id hash of the admin secret
    trust_domain: str = "tasklease.local"
    # "" means issuer_from(): the first public_url, else "tasklease" (resolved on creation).
    issuer: str = ""
    audience: tuple[str, ...] = ("tasklease",)
    default_ttl: int = 300
    max_ttl: int = 3600
    admin_token_ttl: int = 300
    app_token_ttl: int = 1800
    launch_token_ttl: int = 30
    launch_token_max_ttl: int = 3600  # the longest validity a launch token may be given
    delegation_default_ttl: int = 60
    max_delegation_depth: int = 5
    clock_skew: int = 30
    nonce_ttl: int = 30
    max_renewals: int = 10
    renewal_ceiling: int = 3600
    max_token_bytes: int = 8192
    max_body_bytes: int = 1_048_576
    admin_auth_rate: float = 5.0
    admin_auth_burst: int = 10
    app_auth_rate: float = 10.0 / 60.0
    app_auth_burst: int = 3
    # Refusals the broker audits, per client address (an IPv6 one folded to its /64): a
    # token bucket; an address that spent it is answered 429 up front, with one audit
    # event for the lot, until it refills (core.refusalbudget; docs/decisions.md 138).
    refusal_rate: float = 5.0
    refusal_burst: int = 1000
    # Revocation-feed streams (GET /v1/revocations/stream) open at once in one process: by
    # each reader (an app, an operator; per tenant), and by all (core.feedstreams;
    # docs/decisions.md 140). A stream over either is answered 429, audited.
    feed_streams_per_reader: int = 64
    feed_streams_per_process: int = 1000
    prune_interval: float = 60.0
    # Replicas on a shared store with change notification (PostgreSQL): if a replica
    # cannot confirm its revocation index is current within this many seconds, protected
    # requests and validation fail closed with 503 (docs/postgresql.md).
    revocation_staleness_bound: float = 5.0
    # Stores without change notification (SQLite, several workers): how often each
    # process reads the revocations others committed, the fallback behind the wake-up
    # datagram a committing process sends (docs/decisions.md 14).
    revocation_poll_interval: float = 0.025
    # PostgreSQL's waits (docs/configuration.md, Database limits): a statement, a lock, a
    # new connection, a pooled connection; and how long a silent TCP peer lives.
    database_statement_timeout: float = 5.0
    database_lock_timeout: float = 3.0
    database_connect_timeout: float = 3.0
    database_pool_timeout: float = 3.0
    database_tcp_timeout: float = 10.0
    log_level: str = "info"
    tls_mode: str = "none"  # "none" | "tls" | "mtls"
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Zero-trust enforcement (see docs/security.md).
    critical_scopes: tuple[str, ...] = ()  # validated without any cache (high assurance)
    # Issuance policy (docs/policy.md): a directory with one subdirectory of Cedar files
    # per tenant (<policy_dir>/<tenant>/*.cedar), reloaded when they change; "" or a
    # tenant without one: the built-in default policy.
    policy_dir: str = ""
    reference_token_threshold: int = 4096  # larger JWTs are issued by reference
    # Tokens whose header and signature are settled, remembered per worker by SHA-256
    # (core.validation; docs/decisions.md 122); 0: every use verifies the signature.
    token_cache_size: int = 10_000
    dpop_proof_window: int = 60  # seconds a DPoP proof's iat may differ from now
    # "required": proofs sent to the broker must carry a nonce it provided (RFC 9449
    # sections 8 and 9: DPoP-Nonce, use_dpop_nonce); "off": none is asked for.
    dpop_nonce: str = "off"
    # "required": a registration must bind its agent's tokens to a key it holds (a DPoP
    # proof, or a client certificate over mTLS), else it is refused before anything is
    # spent; every token of the agent, renewed, resumed or delegated to it, then carries
    # that binding (docs/decisions.md 253). "optional": bearer agents are admitted.
    holder_binding: str = "optional"
    # "required": every launch token names the agent key that alone may register with it
    # (``agent_key``), so a stolen launch token registers no key of the thief's (TM-02;
    # docs/decisions.md 254). "optional": a launch token may admit any key.
    launch_token_binding: str = "optional"  # noqa: S105 - a setting, not a secret
    # Not read by the broker since its replay cache is in the store (used_dpop_proofs,
    # shared by workers and replicas, pruned at expiry); kept so configurations load.
    dpop_replay_cache_size: int = 1_000_000
    # Heartbeat liveness (see docs/agents.md). An agent is swept (revoked at
    # level agent) once its last heartbeat is older than interval x misses; agents are
    # supervised from their first heartbeat, or from registration when required.
    heartbeat_interval: float = 30.0
    heartbeat_misses: int = 3
    heartbeat_required: bool = False
    # A client assertion's (private_key_jwt) aud is the issuer only, as
    # draft-ietf-oauth-rfc7523bis says; true also takes the token endpoint's URL, for
    # clients that cannot be told to send the issuer (docs/compatibility.md).
    client_assertion_token_endpoint_aud: bool = False
    # Slow clients (docs/operations.md, Slow clients): a request's headers must be
    # complete this many seconds after its first byte, its body this many after its
    # headers, and a kept-alive connection with no request for this long is closed.
    http_header_timeout: float = 10.0
    http_body_timeout: float = 10.0
    http_keepalive_timeout: float = 5.0
    # Connections one serving process holds open at most, revocation-feed streams among
    # them; one more is answered 503 and closed as it arrives (docs/operations.md, Slow
    # clients).
    http_max_connections: int = 4096
    # Of those, what one client (a peer address, an IPv6 one by its /64) holds at most;
    # peers in trusted_proxies are not limited.
    http_max_connections_per_client: int = 1024
    # The HTTP edge (see docs/configuration.md). Peers whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (addresses or CIDR networks); nobody's by default.
    trusted_proxies: tuple[str, ...] = ()
    # The origins (scheme://host[:port]) clients address the broker by; a DPoP proof's
    # htu must be one of them + the request path. Unset: the address the server listens on.
    public_url: tuple[str, ...] = ()
    # Signing keys at rest (docs/operations.md, Keys): "file" (encrypted PKCS#8 under a
    # passphrase from TASKLEASE_KEY_PASSPHRASE or key_passphrase_file, by default
    # <data_dir>/key-passphrase), "pkcs11" (an HSM; PIN from TASKLEASE_PKCS11_PIN or
    # pkcs11_pin_file), or "plaintext" (unencrypted files: only when set explicitly).
    key_provider: str = "file"
    key_passphrase_file: str = ""
    pkcs11_module: str = ""
    pkcs11_token_label: str = ""
    pkcs11_pin_file: str = ""
    pkcs11_key_label: str = "tasklease-signing-"
    # Metrics (docs/metrics.md): a listener of their own, "host:port" with an IP address
    # (loopback by default; "" or "off": none), and whether the main listener serves
    # /v1/metrics too: "off" (404, the default) or "token" (an operator's token with
    # admin:audit:*, the auditor role's scope).
    metrics_listen: str = "127.0.0.1:9464"
    metrics_public: str = "off"
    # The operator's web console at /console (docs/console.md); false: not served.
    console: bool = True
    # Whether serving processes may dump core (and be read or traced by the broker's
    # user's other processes): false keeps the keys and secrets in memory out of core
    # files (tasklease.hardening, docs/operations.md); true is for debugging a crash.
    core_dumps: bool = False
    # Seconds between the starts of two full walks of the audit log (the chain and the
    # Merkle tree rebuilt from every event, O(n)) that views of the console's audit page
    # start, in each process (docs/console.md).
    console_audit_walk_interval: float = 600.0
    # The spiffe_refresh_hint of this broker's trust bundle (GET /v1/federation/bundle):
    # how often federated brokers should fetch it (docs/federation.md).
    federation_refresh_hint: int = 300
    # How long a federated domain's revocation feed (for a domain that has one) may have
    # been silent before token exchange refuses that domain's tokens (core.peerfeed): a
    # revocation made there meanwhile cannot have reached us. 0: never refused.
    federation_feed_max_staleness: float = 60.0
    # The transparent audit log (docs/audit.md). A checkpoint (the Merkle tree's head,
    # signed by the log key) at least every this many events or seconds; the origin its
    # checkpoints name ("" means the issuer without its scheme, + "/audit"); witnesses,
    # each "<url> <vkey>", and how many of them must cosign before a checkpoint is final;
    # whether GET /v1/audit/checkpoint answers without a token (an auditor's otherwise).
    audit_checkpoint_events: int = 1000
    audit_checkpoint_interval: float = 10.0
    audit_log_origin: str = ""
    audit_witnesses: tuple[str, ...] = ()
    audit_witness_quorum: int = 0
    audit_checkpoint_public: bool = False

    @property
    def audit_origin(self) -> str:
        """The log's origin: ``audit_log_origin``, else the issuer without its scheme and
        trailing slashes, + ``/audit``."""
        if self.audit_log_origin:
            return self.audit_log_origin
        issuer = self.issuer.split("://", 1)[-1].rstrip("/")
        return f"{issuer}/audit"

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics_listen`` as ``(host, port)``, or None when there is no metrics listener."""
        return listen_address(self.metrics_listen)

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        check_scope_patterns("critical_scopes", self.critical_scopes)
        for proxy in self.trusted_proxies:
            _check_network(proxy)
        for origin in self.public_url:
            _check_origin(origin)
        # Frozen, so set as the dataclass's own __init__ does.
        object.__setattr__(self, "issuer", issuer_from(self.issuer, self.public_url))
        for name in (
            "default_ttl",
            "max_ttl",
            "admin_token_ttl",
            "app_token_ttl",
            "launch_token_ttl",
            "launch_token_max_ttl",
            "delegation_default_ttl",
            "nonce_ttl",
            "renewal_ceiling",
        ):
            if not 1 <= getattr(self, name) <= _LONGEST_TTL:
                raise ValueError(f"{name} must be between 1 and {_LONGEST_TTL} seconds")
        if self.default_ttl > self.max_ttl:
            raise ValueError("default_ttl must not exceed max_ttl")
        if self.launch_token_ttl > self.launch_token_max_ttl:
            raise ValueError("launch_token_ttl must not exceed launch_token_max_ttl")
        if self.clock_skew < 0 or self.clock_skew > 300:
            raise ValueError("clock_skew must be between 0 and 300 seconds")
        if not 0 <= self.max_renewals <= 1_000_000:
            raise ValueError("max_renewals must be between 0 and 1000000")
        if not 1 <= self.max_delegation_depth <= 16:
            raise ValueError("max_delegation_depth must be between 1 and 16")
        if self.log_level not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        if self.tls_mode not in ("none", "tls", "mtls"):
            raise ValueError("tls_mode must be one of none, tls, mtls")
        if not self.audience or not all(self.audience):
            raise ValueError("audience must name at least one non-empty audience")
        _check_sizes(self)
        if not 0 <= self.token_cache_size <= 1_000_000:
            raise ValueError("token_cache_size must be between 0 and 1000000")
        if not 1 <= self.dpop_proof_window <= 600:
            raise ValueError("dpop_proof_window must be between 1 and 600 seconds")
        if self.dpop_nonce not in ("off", "required"):
            raise ValueError("dpop_nonce must be one of off, required")
        if self.holder_binding not in ("optional", "required"):
            raise ValueError("holder_binding must be one of optional, required")
        if self.launch_token_binding not in ("optional", "required"):
            raise ValueError("launch_token_binding must be one of optional, required")
        if not 1 <= self.dpop_replay_cache_size <= 100_000_000:
            raise ValueError("dpop_replay_cache_size must be between 1 and 100000000")
        if self.tls_mode in ("tls", "mtls") and not (self.tls_cert and self.tls_key):
            raise ValueError("tls_mode tls and mtls need tls_cert and tls_key")
        if self.tls_mode == "mtls" and not self.tls_client_ca:
            raise ValueError("tls_mode mtls needs tls_client_ca")
        # TLS files left unused would be a broker on plain HTTP, or one that asks no
        # client for a certificate, where its operator meant otherwise.
        if self.tls_mode == "none" and (self.tls_cert or self.tls_key):
            given = [name for name in ("tls_cert", "tls_key") if getattr(self, name)]
            raise ValueError(
                f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} set but "
                'tls_mode is "none": the broker would serve plain HTTP; set tls_mode = '
                '"tls" (or "mtls"), or remove them'
            )
        if self.tls_mode != "mtls" and self.tls_client_ca:
            raise ValueError(
                f'tls_client_ca is set but tls_mode is "{self.tls_mode}": no client would be '
                'asked for a certificate; set tls_mode = "mtls", or remove tls_client_ca'
            )
        # Written as ranges, so NaN (which compares false both ways) is refused too: a NaN
        # rate would refill a sign-in limiter on every call, and a zero one divide by it.
        for name in ("admin_auth_rate", "app_auth_rate"):
            if not 0.001 <= getattr(self, name) <= 10_000:
                raise ValueError(f"{name} must be between 0.001 and 10000 per second")
        for name in ("admin_auth_burst", "app_auth_burst"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise ValueError(f"{name} must be between 1 and 100000")
        if not 0.001 <= self.refusal_rate <= 10_000:
            raise ValueError("refusal_rate must be between 0.001 and 10000 per second")
        if not 1 <= self.refusal_burst <= 1_000_000:
            raise ValueError("refusal_burst must be between 1 and 1000000")
        for name in ("feed_streams_per_reader", "feed_streams_per_process"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise ValueError(f"{name} must be between 1 and 100000")
        if not 0.1 <= self.prune_interval <= 86400:
            raise ValueError("prune_interval must be between 0.1 and 86400 seconds")
        if not 1 <= self.heartbeat_interval <= 3600:
            raise ValueError("heartbeat_interval must be between 1 and 3600 seconds")
        if not 1 <= self.heartbeat_misses <= 100:
            raise ValueError("heartbeat_misses must be between 1 and 100")
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be between 1 and 65535")
        if not 0.1 <= self.revocation_staleness_bound <= 3600:
            raise ValueError("revocation_staleness_bound must be between 0.1 and 3600 seconds")
        if not 0.001 <= self.revocation_poll_interval <= 3600:
            raise ValueError("revocation_poll_interval must be between 0.001 and 3600 seconds")
        for name in (
            "database_statement_timeout",
            "database_lock_timeout",
            "database_connect_timeout",
            "database_pool_timeout",
        ):
            if not 0.1 <= getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be between 0.1 and 3600 seconds")
        if not 1 <= self.database_tcp_timeout <= 3600:
            raise ValueError("database_tcp_timeout must be between 1 and 3600 seconds")
        if not 0.5 <= self.http_header_timeout <= 300:
            raise ValueError("http_header_timeout must be between 0.5 and 300 seconds")
        if not 0.5 <= self.http_keepalive_timeout <= 3600:
            raise ValueError("http_keepalive_timeout must be between 0.5 and 3600 seconds")
        if not 0.5 <= self.http_body_timeout <= 300:
            raise ValueError("http_body_timeout must be between 0.5 and 300 seconds")
        if not 16 <= self.http_max_connections <= 1_000_000:
            raise ValueError("http_max_connections must be between 16 and 1000000")
        if not 1 <= self.http_max_connections_per_client <= 1_000_000:
            raise ValueError("http_max_connections_per_client must be between 1 and 1000000")
        _check_key_provider(self)
        if self.database:  # "" is <data_dir>/tasklease.db (settings.resolve_paths)
            try:
                parse_store_url(self.database)  # the rule open_store opens it by
            except ValueError as exc:
                raise ValueError(f"database: {exc}") from None
        listen_address(self.metrics_listen)  # ValueError for a malformed one
        if self.metrics_public not in ("off", "token"):
            raise ValueError("metrics_public must be one of off, token")
        if not 10 <= self.console_audit_walk_interval <= 86400:
            raise ValueError("console_audit_walk_interval must be between 10 and 86400 seconds")
        if not 1 <= self.federation_refresh_hint <= 86400:
            raise ValueError("federation_refresh_hint must be between 1 and 86400 seconds")
        staleness = self.federation_feed_max_staleness
        if staleness != 0 and not 10 <= staleness <= 86400:
            raise ValueError(
                "federation_feed_max_staleness must be 0 (never refuse) or between 10 and "
                "86400 seconds"
            )
        _check_audit_log(self)


def _check_sizes(config: Config) -> None:
    """The byte limits agree: the broker accepts every token it issues (a larger JWT is
    issued by reference, so ``max_token_bytes`` must reach ``reference_token_threshold``),
    and a request body holds the two tokens of a token exchange with room to spare."""
    threshold = config.reference_token_threshold
    if not 512 <= threshold <= 65536:
        raise ValueError("reference_token_threshold must be between 512 and 65536 bytes")
    if not threshold <= config.max_token_bytes <= 1_048_576:
        raise ValueError(
            "max_token_bytes must be between reference_token_threshold "
            f"({threshold}) and 1048576 bytes: the broker must accept the tokens it issues"
        )
    least = max(16384, 4 * config.max_token_bytes)
    if not least <= config.max_body_bytes <= 67_108_864:
        raise ValueError(
            f"max_body_bytes must be between {least} and 67108864 bytes (at least 16384 "
            "and 4 x max_token_bytes: a token exchange's body holds two tokens)"
        )


def _check_audit_log(config: Config) -> None:
    if not 1 <= config.audit_checkpoint_events <= 10_000_000:
        raise ValueError("audit_checkpoint_events must be between 1 and 10000000")
    if not 0.1 <= config.audit_checkpoint_interval <= 86400:
        raise ValueError("audit_checkpoint_interval must be between 0.1 and 86400 seconds")
    origin = config.audit_origin
    if (
        not origin
        or len(origin) > 256
        or not origin.isprintable()
        or " " in origin
        or "+" in origin
    ):
        raise ValueError(
            "audit_log_origin (or the issuer it is derived from) must be 1-256 printable "
            "characters without spaces or '+', such as broker.example.com/audit"
        )
    # An early, clear message; the quorum itself counts each public key once
    # (rules.witness.cosigned_by), whatever the configuration holds.
    seen: set[bytes] = set()
    for entry in config.audit_witnesses:
        url, _, vkey = entry.partition(" ")
        shown = without_userinfo(entry)
        try:
            key = VerifierKey.parse(vkey)
        except NoteError as exc:
            raise ValueError(f"audit_witnesses: {shown!r}: {exc}") from None
        if key.sig_type != COSIGNATURE or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"audit_witnesses: {shown!r} must be '<http(s) URL> <cosignature vkey>'"
            )
        if key.public_key in seen:
            raise ValueError(
                f"audit_witnesses: {shown!r} has the public key of an earlier entry (each "
                "witness needs a key of its own: a key counts once in the quorum)"
            )
        seen.add(key.public_key)
    if not 0 <= config.audit_witness_quorum <= len(config.audit_witnesses):
        raise ValueError("audit_witness_quorum must be between 0 and the number of witnesses")


def _check_key_provider(config: Config) -> None:
    if config.key_provider not in ("file", "pkcs11", "plaintext"):
        raise ValueError("key_provider must be one of file, pkcs11, plaintext")
    if config.key_provider == "pkcs11" and not (config.pkcs11_module and config.pkcs11_token_label):
        raise ValueError('key_provider = "pkcs11" needs pkcs11_module and pkcs11_token_label')
    label = config.pkcs11_key_label
    if not 1 <= len(label) <= 64 or not label.isprintable():
        raise ValueError("pkcs11_key_label must be 1 to 64 printable characters")


def listen_address(value: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6) with an IP address and a port 0-65535 (0:
    any free port), as ``(host, port)``; None for ``""`` or ``off``.

    Raises:
        ValueError: anything else (a host name included: what is bound must be visible
            in the configuration).
    """
    text = value.strip()
    if text in ("", "off"):
        return None
    problem = (
        f"metrics_listen: {value!r} must be an IP address and a port, such as "
        '127.0.0.1:9464 or [::1]:9464, or "" to have no metrics listener'
    )
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise ValueError(problem)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(problem)
    elif ":" in host:
        raise ValueError(problem)  # an IPv6 address goes in brackets
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(problem) from None
    if int(port) > 65535:
        raise ValueError(problem)
    return host, int(port)


def _check_network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"trusted_proxies: {value!r} is not an IP address or network (CIDR)"
        ) from None


def without_userinfo(value: str) -> str:
    """``value`` with whatever precedes the last ``@`` of what follows its ``://`` (a URL's
    user and password, however they are written) replaced by ``***``: fit for an error
    message or a log line, which go to terminals and logs (an audit witness's URL is
    shown so wherever the broker names it: ``core.transparency.Witness.shown``)."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    if "@" not in rest:
        return value
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


def _check_origin(value: str) -> None:
    """An absolute http(s) origin: no user info, path (but "/"), query or fragment."""
    problem = (
        f"public_url: {without_userinfo(value)!r} must be an origin such as "
        "https://broker.example.com (no user or password, path, query or fragment)"
    )
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(problem) from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
    ):
        raise ValueError(problem)
