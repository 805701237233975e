-- tasklease PostgreSQL schema, version 24: the same change as
-- sqlite/0024_admin_credential.sql.
CREATE TABLE admin_credential (
    id          integer          NOT NULL PRIMARY KEY CHECK (id = 1),
    secret_hash text             NOT NULL,
    changed_at  double precision NOT NULL
);
