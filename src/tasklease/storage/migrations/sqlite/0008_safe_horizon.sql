-- tasklease SQLite schema, version 8: the safe horizon pruning runs against (core.horizon),
-- a time that had certainly passed when it was written. One row, raised and never lowered,
-- so a broker restarted while its wall clock is wrong does not prune by that clock.
CREATE TABLE safe_horizon (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    horizon REAL    NOT NULL    -- Unix seconds
) STRICT;
