-- tasklease PostgreSQL schema, version 8: the same change as sqlite/0008_safe_horizon.sql.
CREATE TABLE safe_horizon (
    id      smallint         NOT NULL PRIMARY KEY CHECK (id = 1),
    horizon double precision NOT NULL    -- Unix seconds
);
