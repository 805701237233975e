-- tasklease PostgreSQL schema, version 21: every tenant's counter at least its highest
-- stored seq. Version 20, run while a replica of the version before was storing
-- revocations, could read the shared sequence before that replica's last draw, and the
-- next revocation of the tenant then collided with an entry already stored, for good.
-- Nothing changes where the counters are right (the usual case).
INSERT INTO revocation_seqs (tenant_id, seq)
    SELECT tenant_id, MAX(seq) FROM revocations GROUP BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq
    WHERE revocation_seqs.seq < excluded.seq;
