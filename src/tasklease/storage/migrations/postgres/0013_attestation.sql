-- tasklease PostgreSQL schema, version 13: the same change as sqlite/0013_attestation.sql.
CREATE TABLE attestors (
    tenant_id  text             NOT NULL,
    name       text             NOT NULL,
    type       text             NOT NULL,   -- k8s_sat | jwt_svid | oidc
    settings   text             NOT NULL,   -- JSON object
    policy     text             NOT NULL,   -- JSON array of rules
    app_id     text             NOT NULL,   -- '' for the tenant's own
    created_at double precision NOT NULL,
    created_by text             NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE attestation_evidence (
    tenant_id    text             NOT NULL,
    evidence_key text             NOT NULL,   -- sha256 hex, never the evidence
    expires_at   double precision NOT NULL,
    PRIMARY KEY (tenant_id, evidence_key)
);
CREATE INDEX attestation_evidence_by_expires_at ON attestation_evidence (tenant_id, expires_at);
