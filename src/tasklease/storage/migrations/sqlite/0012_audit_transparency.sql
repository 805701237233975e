-- tasklease SQLite schema, version 12: the transparent audit log (docs/audit.md).
--
-- Lineage on every event, and the format its hash is in: 1 for the events written before
-- (their hash covers what they had), 2 from now on (it covers the lineage too).
ALTER TABLE audit_events ADD COLUMN app_id        TEXT    NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN principal_ref TEXT    NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN chain_root    TEXT    NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN version       INTEGER NOT NULL DEFAULT 1;
CREATE INDEX audit_events_by_principal_ref ON audit_events (tenant_id, principal_ref);

-- Each tenant's RFC 9162 Merkle tree over its events (core.audittree): tiles of up to 16
-- hashes of 32 bytes (level 0: leaf hashes; level L: roots of 16^L leaves), appended in
-- the events' transaction and never rewritten, and the tree's size, root and right edge.
CREATE TABLE audit_tiles (
    tenant_id TEXT    NOT NULL DEFAULT 'default',
    level     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    hashes    BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_tree (
    tenant_id TEXT    NOT NULL DEFAULT 'default' PRIMARY KEY,
    size      INTEGER NOT NULL,
    root      BLOB    NOT NULL,
    edge      BLOB    NOT NULL     -- the complete subtrees' hashes, largest first
) STRICT, WITHOUT ROWID;

-- The latest checkpoint signed by the log key ('signed') and the latest with the
-- witnesses' cosignatures the configuration requires ('final'): C2SP signed notes.
CREATE TABLE audit_checkpoints (
    tenant_id  TEXT    NOT NULL DEFAULT 'default',
    kind       TEXT    NOT NULL CHECK (kind IN ('signed', 'final')),
    size       INTEGER NOT NULL,
    note       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (tenant_id, kind)
) STRICT, WITHOUT ROWID;
