-- tasklease PostgreSQL schema, version 25: the same change as
-- sqlite/0025_federation_feeds.sql.
CREATE TABLE federation_feeds (
    tenant_id    text             NOT NULL,
    trust_domain text             NOT NULL,
    heard_at     double precision NOT NULL,
    PRIMARY KEY (tenant_id, trust_domain)
);
