"""docs/metrics.md tells the truth about the metrics the broker and the verifier export.

The broker's table is held to :class:`tasklease.core.metrics.Metrics` and the verifier's
to ``tasklease.verify``'s exposition: the same names, types and label names, both ways;
and every ``tasklease_*`` metric any other document names exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasklease.core.metrics import Metrics
from tasklease.verify._freshness import FreshnessPolicy, prometheus_text

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"


def _tables() -> list[dict[str, tuple[str, str]]]:
    """Each table of metrics.md: name -> (type, labels cell)."""
    tables: list[dict[str, tuple[str, str]]] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| name | type |"):
            tables.append({})
            labelled = "labels" in line
            continue
        match = re.match(r"^\| `(tasklease_[a-z0-9_]+)` \| (\w*) \| (.*)$", line)
        if match and tables:
            labels = match[3].split(" | ")[0] if labelled else ""
            tables[-1][match[1]] = (match[2], labels)
    assert len(tables) == 2, "metrics.md has the broker's table and the verifier's"
    return tables


def _broker() -> dict[str, tuple[str, set[str]]]:
    found = {}
    for family in Metrics().registry.collect():
        if family.name.startswith("process"):
            continue
        suffix = "_total" if family.type == "counter" else ""
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        found[family.name + suffix] = (family.type, labels)
    return found


def _labels_documented(cell: str) -> set[str]:
    """The label names a labels cell gives: each backticked word that is not a value
    (values follow `=` or sit in parentheses)."""
    cell = re.sub(r"\([^)]*\)", "", cell)
    cell = re.sub(r"=[^;]*", "", cell)
    return set(re.findall(r"`([a-z_]+)`", cell))


def test_the_broker_table_is_the_broker_registry() -> None:
    documented = _tables()[0]
    actual = _broker()
    # Labelled metrics record samples only once used: declare what is declared.
    assert sorted(set(actual) - set(documented)) == [], "metrics missing from metrics.md"
    assert sorted(set(documented) - set(actual)) == [], "documented metrics the broker lacks"
    for name, (kind, _) in actual.items():
        assert documented[name][0] == kind, f"{name} is a {kind}"


def test_the_broker_tables_labels_are_the_registrys() -> None:
    metrics = Metrics()
    documented = _tables()[0]
    for attribute in vars(metrics).values():
        names = getattr(attribute, "_labelnames", None)
        if names is None:
            continue
        name = attribute._name + ("_total" if attribute._type == "counter" else "")
        assert _labels_documented(documented[name][1]) == set(names), name


def test_the_verifier_table_is_the_verifiers_exposition() -> None:
    text = prometheus_text(
        audience="a",
        staleness=1.0,
        live=True,
        policy=FreshnessPolicy(),
        connections=0,
        revocation_entries=0,
        jwks_age=1.0,
        jwks_max_stale=2.0,
    )
    actual = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    documented = {name: kind for name, (kind, _) in _tables()[1].items()}
    assert documented == actual


def test_every_metric_the_documents_name_exists() -> None:
    exported = set(_broker()) | set(_tables()[1])
    families = set()
    for name in exported:
        families |= {name, *(name + s for s in ("_bucket", "_count", "_sum"))}
    unknown = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name in ("decisions.md", "performance-history.md", "postgresql.md"):
            continue  # history, and postgresql.md's channel `tasklease_revocations`
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"(?<![\w.])(tasklease_[a-z0-9_]+)", text):
            if name.endswith("_") or name in families:
                continue
            unknown.append(f"{path.name}: {name}")
    assert unknown == []
