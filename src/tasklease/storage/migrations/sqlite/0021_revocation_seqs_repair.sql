-- tasklease SQLite schema, version 21: the same repair as postgres/0021. SQLite ran
-- version 20 under its write lock, where no other writer could draw a number, so its
-- counters are right already and this changes nothing; it keeps the two schemas at one
-- version.
INSERT INTO revocation_seqs (tenant_id, seq)
    SELECT tenant_id, MAX(seq) FROM revocations WHERE true GROUP BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq
    WHERE revocation_seqs.seq < excluded.seq;
