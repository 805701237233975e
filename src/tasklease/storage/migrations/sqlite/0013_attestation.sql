-- tasklease SQLite schema, version 13: workload attestation (docs/attestation.md).
-- attestors: the tenant's configured attestors (a type, its settings and its policy, as
-- checked JSON). attestation_evidence: evidence already used to register, by a hash of
-- it (never the evidence), kept until the evidence expires so it cannot be replayed.
CREATE TABLE attestors (
    tenant_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,              -- k8s_sat | jwt_svid | oidc
    settings   TEXT NOT NULL,              -- JSON object
    policy     TEXT NOT NULL,              -- JSON array of rules
    app_id     TEXT NOT NULL,              -- '' for the tenant's own
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE attestation_evidence (
    tenant_id    TEXT NOT NULL,
    evidence_key TEXT NOT NULL,            -- sha256 hex, never the evidence
    expires_at   REAL NOT NULL,
    PRIMARY KEY (tenant_id, evidence_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX attestation_evidence_by_expires_at ON attestation_evidence (tenant_id, expires_at);
