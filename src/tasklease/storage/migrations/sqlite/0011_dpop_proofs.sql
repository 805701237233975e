-- tasklease SQLite schema, version 11: the DPoP replay cache (RFC 9449 section 11.1).
-- A proof is single use across every worker and replica that shares this database: its
-- key (SHA-256 of the proof key's thumbprint and its jti) is recorded until the proof's
-- iat has left the acceptance window, when prune() drops it.
CREATE TABLE used_dpop_proofs (
    tenant_id  TEXT NOT NULL DEFAULT 'default',
    proof_hash TEXT NOT NULL,          -- sha256 hex, never the proof
    expires_at REAL NOT NULL,          -- Unix seconds: iat + dpop_proof_window
    PRIMARY KEY (tenant_id, proof_hash)
) STRICT, WITHOUT ROWID;
CREATE INDEX used_dpop_proofs_by_expires_at ON used_dpop_proofs (tenant_id, expires_at);
