-- tasklease SQLite schema, version 20: each tenant numbers its own revocations.
--
-- revocations.seq was one AUTOINCREMENT shared by every tenant of the database, so the
-- gaps in one tenant's revocation feed counted the revocations of the others.
-- revocation_seqs keeps each tenant's last seq; a revocation takes the next one under the
-- write lock, and the trigger below records it (one statement per insert, in SQLite's own
-- code rather than a second round trip). Existing entries keep their seq, and every tenant known now continues from
-- the highest seq handed out so far, so a cursor a verifier holds stays valid: nothing
-- after it can get a number at or below it. A tenant's row is never deleted, so a tenant
-- removed and created again does not count from 1 a second time.
CREATE TABLE revocation_seqs (
    tenant_id TEXT    NOT NULL PRIMARY KEY,
    seq       INTEGER NOT NULL             -- the last seq handed out to the tenant
) STRICT;
INSERT INTO revocation_seqs (tenant_id, seq)
    SELECT known.tenant_id,
        (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'revocations')
    FROM (SELECT 'default' AS tenant_id UNION SELECT name FROM tenants
          UNION SELECT tenant_id FROM revocations) AS known;

CREATE TABLE revocations_new (
    tenant_id  TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    level      TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at REAL    NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, level, target)
) STRICT;
INSERT INTO revocations_new SELECT tenant_id, seq, level, target, revoked_at, expires_at
    FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_by_expires_at ON revocations (tenant_id, expires_at);

CREATE TRIGGER revocations_numbered AFTER INSERT ON revocations BEGIN
    INSERT INTO revocation_seqs (tenant_id, seq) VALUES (NEW.tenant_id, NEW.seq)
        ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq;
END;
