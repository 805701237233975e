-- tasklease PostgreSQL schema, version 20: the same change as
-- sqlite/0020_tenant_revocation_seqs.sql. Every tenant known now continues from the
-- shared sequence's last value (or the highest seq stored, if higher), and the sequence
-- goes. The table is locked first: a replica of the version before, inside a transaction
-- that stores revocations, finishes before the sequence is read, and none starts after.
LOCK TABLE revocations IN ACCESS EXCLUSIVE MODE;
CREATE TABLE revocation_seqs (
    tenant_id text   NOT NULL PRIMARY KEY,
    seq       bigint NOT NULL               -- the last seq handed out to the tenant
);
INSERT INTO revocation_seqs (tenant_id, seq)
    SELECT known.tenant_id,
        GREATEST((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM revocation_seq),
                 (SELECT COALESCE(MAX(seq), 0) FROM revocations))
    FROM (SELECT 'default' AS tenant_id UNION SELECT name FROM tenants
          UNION SELECT tenant_id FROM revocations) AS known;

ALTER TABLE revocations ALTER COLUMN seq DROP DEFAULT;
ALTER TABLE revocations DROP CONSTRAINT revocations_pkey;
ALTER TABLE revocations ADD CONSTRAINT revocations_pkey PRIMARY KEY (tenant_id, seq);
DROP INDEX revocations_by_seq;
DROP SEQUENCE revocation_seq;
