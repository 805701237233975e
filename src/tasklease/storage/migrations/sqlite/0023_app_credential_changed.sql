-- tasklease schema, version 23: apps.credential_changed_at, when the app's credential
-- last changed (its registration, then each key added, replaced or removed; updated_at
-- moves with its scopes too). A launch token the app made before then admits no agent.
-- An app from before it was kept takes its last update: a launch token made before that
-- may have been made with a key since replaced, so it ends (launch tokens live an hour
-- at most).
ALTER TABLE apps ADD COLUMN credential_changed_at REAL NOT NULL DEFAULT 0;
UPDATE apps SET credential_changed_at = updated_at;
