-- tasklease PostgreSQL schema, version 27: the same change as
-- sqlite/0027_retired_signing_keys.sql.
CREATE TABLE retired_signing_keys (
    tenant_id  text             NOT NULL,
    kid        text             NOT NULL,
    retired_at double precision NOT NULL,
    PRIMARY KEY (tenant_id, kid)
);
