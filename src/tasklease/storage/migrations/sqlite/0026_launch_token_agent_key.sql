-- tasklease SQLite schema, version 26: a launch token bound to its agent's key. base64url
-- of the raw 32-byte Ed25519 public key that a registration with it must present and
-- prove; '' for a launch token any key may register with.
ALTER TABLE launch_tokens ADD COLUMN agent_key TEXT NOT NULL DEFAULT '';
