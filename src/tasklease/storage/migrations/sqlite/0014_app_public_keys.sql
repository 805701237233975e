-- tasklease SQLite schema, version 14: an app's public key for private_key_jwt client
-- authentication (RFC 7523 section 2.2) at the token endpoint. base64url of the raw
-- 32-byte Ed25519 key; '' for an app that authenticates with its secret only.
ALTER TABLE apps ADD COLUMN public_key TEXT NOT NULL DEFAULT '';
