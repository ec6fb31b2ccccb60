-- The audit spool's position (src/audit/spool.rs). Only the embedded SQLite
-- backend spools reads; the table exists here too so that both schemas stay
-- the same (`migrate-data` copies every table).
CREATE TABLE audit_spool (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    spool_id  TEXT    NOT NULL,
    segment   BIGINT  NOT NULL CHECK (segment >= 0),
    position  BIGINT  NOT NULL CHECK (position >= 0)
);
