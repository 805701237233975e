-- tasklease PostgreSQL schema, version 10: the same change as sqlite/0010_federation.sql.
CREATE TABLE federations (
    tenant_id           text             NOT NULL,
    trust_domain        text             NOT NULL,
    bundle_endpoint_url text             NOT NULL,   -- https URL; '' for a static bundle
    ca_pem              text             NOT NULL,   -- PEM trust anchors; '' for the system's
    max_bundle_age      integer          NOT NULL,   -- seconds
    scope_map           text             NOT NULL,   -- JSON array of [foreign, local] pairs
    scope_ceiling       text[]           NOT NULL,
    max_ttl             integer          NOT NULL,   -- seconds
    bundle              text             NOT NULL,   -- last good bundle (JSON); '' before one
    fetched_at          double precision,            -- when it was fetched or given
    last_error          text             NOT NULL,   -- why the latest attempt failed; ''
    created_at          double precision NOT NULL,
    created_by          text             NOT NULL,
    checked_at          double precision,            -- the latest fetch attempt
    revocation_feed     text             NOT NULL DEFAULT '',  -- peer's base URL for its feed
    feed_credentials_file text           NOT NULL DEFAULT '',  -- path of the app credential file
    PRIMARY KEY (tenant_id, trust_domain)
);

CREATE TABLE published_bundles (
    tenant_id  text             NOT NULL PRIMARY KEY,
    sequence   bigint           NOT NULL,   -- spiffe_sequence, never lowered
    kids       text             NOT NULL,   -- the key ids, space-separated
    bundle     text             NOT NULL,   -- the bundle but for its refresh hint
    updated_at double precision NOT NULL
);
