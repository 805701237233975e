-- tasklease SQLite schema, version 10: federation between brokers (docs/federation.md).
-- federations: the trust domains this tenant federates with, each with where its SPIFFE
-- bundle comes from, the last good bundle, and the policy for credentials from it.
-- published_bundles: this tenant's own bundle as last published, whose spiffe_sequence
-- is raised on every change of its key set and never lowered (across restarts and
-- replicas, since every replica reads it here).
CREATE TABLE federations (
    tenant_id           TEXT    NOT NULL,
    trust_domain        TEXT    NOT NULL,
    bundle_endpoint_url TEXT    NOT NULL,      -- https URL; '' for a static bundle
    ca_pem              TEXT    NOT NULL,      -- PEM trust anchors; '' for the system's
    max_bundle_age      INTEGER NOT NULL,      -- seconds
    scope_map           TEXT    NOT NULL,      -- JSON array of [foreign, local] pairs
    scope_ceiling       TEXT    NOT NULL,      -- JSON array of scopes
    max_ttl             INTEGER NOT NULL,      -- seconds
    bundle              TEXT    NOT NULL,      -- last good bundle (JSON); '' before one
    fetched_at          REAL,                  -- when it was fetched or given
    last_error          TEXT    NOT NULL,      -- why the latest attempt failed; ''
    created_at          REAL    NOT NULL,
    created_by          TEXT    NOT NULL,
    checked_at          REAL,                  -- the latest fetch attempt
    revocation_feed     TEXT    NOT NULL DEFAULT '',  -- peer's base URL for its feed; ''
    feed_credentials_file TEXT  NOT NULL DEFAULT '',  -- path of the 0600 app credential file
    PRIMARY KEY (tenant_id, trust_domain)
) STRICT;

CREATE TABLE published_bundles (
    tenant_id  TEXT    NOT NULL PRIMARY KEY,
    sequence   INTEGER NOT NULL,               -- spiffe_sequence, never lowered
    kids       TEXT    NOT NULL,               -- the key ids, space-separated
    bundle     TEXT    NOT NULL,               -- the bundle but for its refresh hint
    updated_at REAL    NOT NULL
) STRICT;
