"""docs/configuration.md tells the truth about :class:`tasklease.core.config.Config`.

The settings table is read as data and held to the code, both ways:

* every setting of ``Config`` has a row, and every row names a setting;
* the environment column is ``TASKLEASE_<SETTING>`` (``/ _BURST`` abbreviates the
  variable of the second setting of a row);
* the default column is the code's default (the few derived ones are held to the rule
  that derives them);
* every numeric setting's range is in :data:`BOUNDS` (or :data:`RELATIVE_BOUNDS`), the
  code accepts exactly that range, and the documentation states it;
* every setting with a fixed set of values is in :data:`CHOICES`, the code accepts exactly
  those, and the row names each;
* the ``TASKLEASE_*`` variables that are not settings are listed as the loader knows them.

A setting added without its row, a default changed on one side only, or a bound moved in
the code fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.config import DEFAULT_ISSUER, Config
from tasklease.settings import _NOT_SETTINGS, resolve_paths

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
FIELDS = {f.name: f.default for f in dataclasses.fields(Config)}

# The range each numeric setting is documented and checked with: (least, most). A new
# numeric setting fails test_every_numeric_setting_has_a_range until it is given one.
BOUNDS: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "default_ttl": (1, 31_536_000),
    "max_ttl": (1, 31_536_000),
    "admin_token_ttl": (1, 31_536_000),
    "app_token_ttl": (1, 31_536_000),
    "launch_token_ttl": (1, 31_536_000),
    "launch_token_max_ttl": (1, 31_536_000),
    "delegation_default_ttl": (1, 31_536_000),
    "nonce_ttl": (1, 31_536_000),
    "renewal_ceiling": (1, 31_536_000),
    "max_delegation_depth": (1, 16),
    "clock_skew": (0, 300),
    "max_renewals": (0, 1_000_000),
    "max_token_bytes": (512, 1_048_576),
    "max_body_bytes": (16384, 67_108_864),
    "reference_token_threshold": (512, 65536),
    "admin_auth_rate": (0.001, 10_000),
    "admin_auth_burst": (1, 100_000),
    "app_auth_rate": (0.001, 10_000),
    "app_auth_burst": (1, 100_000),
    "refusal_rate": (0.001, 10_000),
    "refusal_burst": (1, 1_000_000),
    "feed_streams_per_reader": (1, 100_000),
    "feed_streams_per_process": (1, 100_000),
    "prune_interval": (0.1, 86400),
    "revocation_staleness_bound": (0.1, 3600),
    "revocation_poll_interval": (0.001, 3600),
    "database_statement_timeout": (0.1, 3600),
    "database_lock_timeout": (0.1, 3600),
    "database_connect_timeout": (0.1, 3600),
    "database_pool_timeout": (0.1, 3600),
    "database_tcp_timeout": (1, 3600),
    "token_cache_size": (0, 1_000_000),
    "dpop_proof_window": (1, 600),
    "dpop_replay_cache_size": (1, 100_000_000),
    "heartbeat_interval": (1, 3600),
    "heartbeat_misses": (1, 100),
    "http_header_timeout": (0.5, 300),
    "http_body_timeout": (0.5, 300),
    "http_keepalive_timeout": (0.5, 3600),
    "http_max_connections": (16, 1_000_000),
    "http_max_connections_per_client": (1, 1_000_000),
    "console_audit_walk_interval": (10, 86400),
    "federation_refresh_hint": (1, 86400),
    "federation_feed_max_staleness": (10, 86400),  # or 0 (never): checked below
    "audit_checkpoint_events": (1, 10_000_000),
    "audit_checkpoint_interval": (0.1, 86400),
    "audit_witness_quorum": (0, 0),  # 0 to the number of witnesses
}

# The other settings a range is probed with, where it depends on them (a longest
# default_ttl needs a max_ttl as long), and what the documentation says of that
# dependency instead of, or beside, the two numbers.
CONTEXT: dict[str, dict[str, Any]] = {
    "default_ttl": {"max_ttl": 31_536_000},
    "launch_token_ttl": {"launch_token_max_ttl": 31_536_000},
    "max_ttl": {"default_ttl": 1},
    "launch_token_max_ttl": {"launch_token_ttl": 1},
    "max_token_bytes": {"reference_token_threshold": 512, "max_body_bytes": 67_108_864},
    "max_body_bytes": {"max_token_bytes": 4096},
    "reference_token_threshold": {"max_token_bytes": 1_048_576, "max_body_bytes": 67_108_864},
}
RELATIVE_BOUNDS: dict[str, tuple[str, ...]] = {
    "default_ttl": ("`default_ttl must not exceed max_ttl`",),
    "launch_token_ttl": ("at most `launch_token_max_ttl`",),
    "max_token_bytes": ("`reference_token_threshold` to 1048576",),
    "max_body_bytes": ("at least 16384 and 4 × `max_token_bytes`", "at most 67108864"),
    "reference_token_threshold": ("512–65536, at most `max_token_bytes`",),
    "audit_witness_quorum": ("0 to the number of witnesses",),
}

# Settings with a fixed set of values, each of which the row names.
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error", "critical"),
    "tls_mode": ("none", "tls", "mtls"),
    "key_provider": ("file", "pkcs11", "plaintext"),
    "dpop_nonce": ("off", "required"),
    "holder_binding": ("optional", "required"),
    "launch_token_binding": ("optional", "required"),
    "metrics_public": ("off", "token"),
}

# Defaults the table states as the rule that derives them, held to that rule below.
DERIVED = {
    "database": "`<data_dir>/tasklease.db`",
    "key_dir": "`<data_dir>/keys`",
    "key_passphrase_file": "`<data_dir>/key-passphrase`",
    "issuer": "the first `public_url`, else `tasklease`",
    "audit_log_origin": "the issuer without its scheme + `/audit`",
}

# The lifetimes the prose gives one range (1 to 31536000) for, rather than each row.
_LIFETIMES_SENTENCE = re.compile(r"The lifetimes \((?P<names>[^)]*)\) are each 1 to 31536000")


@dataclasses.dataclass(frozen=True)
class Row:
    names: tuple[str, ...]
    environment: str
    default: str
    meaning: str


def _rows() -> list[Row]:
    rows = []
    in_table = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| setting | environment | default | meaning |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if not in_table or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) >= 4, f"a settings row with {len(cells)} cells: {line[:80]}"
        names = tuple(re.findall(r"`([a-z0-9_]+)`", cells[0]))
        rows.append(Row(names, cells[1], cells[2], " | ".join(cells[3:])))
    assert len(rows) > 50, "the settings table was not found"
    return rows


ROWS = _rows()
BY_NAME = {name: row for row in ROWS for name in row.names}


def test_every_setting_has_a_row_and_every_row_is_a_setting() -> None:
    assert sorted(set(FIELDS) - set(BY_NAME)) == [], "settings missing from the table"
    assert sorted(set(BY_NAME) - set(FIELDS)) == [], "rows that name no setting"
    assert len(BY_NAME) == sum(len(r.names) for r in ROWS), "a setting has two rows"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_the_environment_column_names_the_variable(name: str) -> None:
    row = BY_NAME[name]
    variables = re.findall(r"`(TASKLEASE_[A-Z0-9_]+|_[A-Z0-9_]+)`", row.environment)
    first = variables[0]
    expanded = [first] + [
        first.rsplit("_", len(v.strip("_").split("_")))[0] + v if v.startswith("_") else v
        for v in variables[1:]
    ]
    if row.environment.endswith("…"):  # `tls_cert`, `tls_key`, `tls_client_ca`: the first
        expanded = [f"TASKLEASE_{n.upper()}" for n in row.names]
    assert f"TASKLEASE_{name.upper()}" == expanded[row.names.index(name)]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return text
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


@pytest.mark.parametrize("name", sorted(set(FIELDS) - set(DERIVED)))
def test_the_default_column_is_the_code_default(name: str) -> None:
    row = BY_NAME[name]
    defaults = [d.strip() for d in row.default.split(" / ")]
    documented = defaults[row.names.index(name)] if len(defaults) > 1 else defaults[0]
    value = FIELDS[name]
    if value in ("", ()):
        assert documented.startswith("—"), f"{name}: unset by default, documented {documented}"
        return
    assert documented == f"`{_shown(value)}`", f"{name}: code {value!r}, documented {documented}"
    if type(value) is int:
        assert "." not in documented, f"{name} is an integer setting"


def test_the_derived_defaults_are_the_rules_that_derive_them() -> None:
    for name, said in DERIVED.items():
        assert BY_NAME[name].default == said, name
    resolved = resolve_paths(Config(data_dir="/srv/b"))
    assert resolved.database == "/srv/b/tasklease.db"
    assert resolved.key_dir == "/srv/b/keys"
    assert Config().issuer == DEFAULT_ISSUER == "tasklease"
    assert Config(public_url=("https://b.example",)).issuer == "https://b.example"
    assert Config(public_url=("https://b.example",)).audit_origin == "b.example/audit"
    from tasklease.keystore import passphrase_file  # the file provider's default

    assert passphrase_file(Config(data_dir="/srv/b")) == Path("/srv/b/key-passphrase")


def _numeric() -> list[str]:
    return sorted(n for n, v in FIELDS.items() if type(v) in (int, float))


def test_every_numeric_setting_has_a_range() -> None:
    assert sorted(set(_numeric()) - set(BOUNDS)) == [], "give these a range in BOUNDS"
    assert sorted(set(BOUNDS) - set(_numeric())) == []


def _valid(**values: Any) -> bool:
    try:
        Config(**values)
    except ValueError:
        return False
    return True


def _step(value: float, kind: type) -> float:
    return 1 if kind is int else value / 10 if value < 1 else 0.01


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_the_code_accepts_exactly_the_range(name: str) -> None:
    least, most = BOUNDS[name]
    kind = type(FIELDS[name])
    extra = CONTEXT.get(name, {})
    if name == "audit_witness_quorum":
        assert not _valid(audit_witness_quorum=1), "a quorum beyond the witnesses"
        return  # 0 to the number of witnesses: none by default
    least_value, most_value = kind(least), kind(most)
    assert _valid(**{name: least_value}, **extra), f"{name} refuses its least, {least}"
    assert _valid(**{name: most_value}, **extra), f"{name} refuses its most, {most}"
    below = least_value - _step(least_value, kind)
    above = most_value + _step(most_value, kind)
    if name == "federation_feed_max_staleness":
        assert _valid(**{name: 0.0}), "0 (never refuse) is documented"
        below = 9.99
    assert not _valid(**{name: kind(below)}), f"{name} accepts {below}, below its range"
    assert not _valid(**{name: kind(above)}), f"{name} accepts {above}, above its range"


def _number_forms(value: float) -> set[str]:
    whole = int(value) if float(value).is_integer() else None
    forms = {_shown(float(value))} if whole is None else {str(whole)}
    return forms


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_the_documentation_states_the_range(name: str) -> None:
    text = BY_NAME[name].meaning
    doc = DOC.read_text(encoding="utf-8")
    for words in RELATIVE_BOUNDS.get(name, ()):
        assert words in text or words in doc, f"{name}: the documentation lacks {words!r}"
    if name == "audit_witness_quorum":
        return
    lifetimes = _LIFETIMES_SENTENCE.search(doc)
    assert lifetimes is not None
    if name in re.findall(r"`([a-z_]+)`", lifetimes["names"]):
        assert BOUNDS[name] == (1, 31_536_000), f"{name}: the lifetimes are 1 to 31536000"
        return
    least, most = BOUNDS[name]
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text.replace(",", "")))
    # max_token_bytes's least is stated as reference_token_threshold (RELATIVE_BOUNDS).
    for bound in (most,) if name == "max_token_bytes" else (least, most):
        assert _number_forms(bound) & numbers, f"{name}: the row does not state {bound}"


def test_the_lifetimes_sentence_names_every_lifetime() -> None:
    lifetimes = _LIFETIMES_SENTENCE.search(DOC.read_text(encoding="utf-8"))
    assert lifetimes is not None
    named = set(re.findall(r"`([a-z_]+)`", lifetimes["names"]))
    assert named == {n for n, bounds in BOUNDS.items() if bounds == (1, 31_536_000)}


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_the_code_accepts_exactly_the_documented_values(name: str) -> None:
    extra: dict[str, Any] = {}
    for value in CHOICES[name]:
        if name == "tls_mode" and value != "none":
            extra = {"tls_cert": "c.pem", "tls_key": "k.pem"}
            extra |= {"tls_client_ca": "ca.pem"} if value == "mtls" else {}
        if name == "key_provider" and value == "pkcs11":
            extra = {"pkcs11_module": "m.so", "pkcs11_token_label": "t"}
        assert _valid(**{name: value}, **extra), f"{name} refuses {value!r}"
        extra = {}
        assert f"`{value}`" in BY_NAME[name].meaning + BY_NAME[name].default, (
            f"{name}: the row does not name {value!r}"
        )
    assert not _valid(**{name: "something-else"})


def test_every_setting_with_a_fixed_set_of_values_is_in_choices() -> None:
    # A string setting the code holds to a set of values refuses an arbitrary word.
    fixed = {n for n, v in FIELDS.items() if isinstance(v, str) and not _valid(**{n: "xq-zz 1"})}
    free = {
        "trust_domain",  # a trust domain's characters
        "issuer",  # the log origin made of it
        "metrics_listen",  # an address
        "pkcs11_key_label",  # printable
        "database",  # a path or URL
        "audit_log_origin",  # no spaces
        "tls_cert",  # a file the mode must use
        "tls_key",
        "tls_client_ca",
    }
    assert fixed - free == set(CHOICES)


def test_the_variables_that_are_not_settings_are_listed() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("The environment holds the settings")
    paragraph = text[start : text.index("\n\n", start)]
    listed = set(re.findall(r"`(TASKLEASE_[A-Z0-9_]+)`", paragraph))
    listed.discard("TASKLEASE_HEARTBEAT_REQUIRD")  # the example of a misspelt one
    listed -= {"TASKLEASE_HEARTBEAT_REQUIRED", "TASKLEASE_HOLDER_BINDING"}
    assert listed == set(_NOT_SETTINGS)


def _toml_blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"```toml\n(.*?)```", text, re.S):
            found.append((f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}", match[1]))
    return found


# The CLI's profile file (docs/cli.md), not a broker's configuration.
_PROFILE_KEYS = {
    "url",
    "tenant",
    "operator",
    "operator_secret",
    "operator_key_file",
    "client_cert",
    "client_key",
}


@pytest.mark.parametrize(("where", "body"), _toml_blocks(), ids=[w for w, _ in _toml_blocks()])
def test_every_configuration_example_loads(where: str, body: str) -> None:
    import tomllib

    document = tomllib.loads(body)
    if set(document) & _PROFILE_KEYS:
        return
    assert sorted(set(document) - set(FIELDS)) == [], f"{where}: keys that are no setting"
    if "..." in body:
        return  # an elided value (a key, a hash): its keys are checked, not its values
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in document.items()}
    Config(**values)
