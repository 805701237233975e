-- tasklease PostgreSQL schema, version 12: the same change as sqlite/0012_audit_transparency.sql.
ALTER TABLE audit_events ADD COLUMN app_id        text     NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN principal_ref text     NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN chain_root    text     NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN version       smallint NOT NULL DEFAULT 1;
CREATE INDEX audit_events_by_principal_ref ON audit_events (tenant_id, principal_ref, seq);

CREATE TABLE audit_tiles (
    tenant_id text     NOT NULL DEFAULT 'default',
    level     smallint NOT NULL,
    idx       bigint   NOT NULL,
    hashes    bytea    NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
);

CREATE TABLE audit_tree (
    tenant_id text   NOT NULL DEFAULT 'default' PRIMARY KEY,
    size      bigint NOT NULL,
    root      bytea  NOT NULL,
    edge      bytea  NOT NULL
);

CREATE TABLE audit_checkpoints (
    tenant_id  text             NOT NULL DEFAULT 'default',
    kind       text             NOT NULL CHECK (kind IN ('signed', 'final')),
    size       bigint           NOT NULL,
    note       text             NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
