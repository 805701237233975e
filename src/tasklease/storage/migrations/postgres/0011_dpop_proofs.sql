-- tasklease PostgreSQL schema, version 11: the same change as sqlite/0011_dpop_proofs.sql.
CREATE TABLE used_dpop_proofs (
    tenant_id  text             NOT NULL DEFAULT 'default',
    proof_hash text             NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (tenant_id, proof_hash)
);
CREATE INDEX used_dpop_proofs_by_expires_at ON used_dpop_proofs (tenant_id, expires_at);
