-- Where the audit spool's mover stands (src/audit/spool.rs): reads of patient
-- data are appended to a file next to the database before they are answered,
-- then moved into audit_events; this row, updated in the transaction that
-- appends them, says how far the file has been moved, so that each event
-- enters the chain exactly once, also after a crash. `spool_id` names this
-- database's spool files (a file of another database is never moved here).
-- The row is written when the server first spools (an empty table: nothing
-- was ever spooled, and `migrate-data` finds the table empty).
CREATE TABLE audit_spool (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    spool_id  TEXT    NOT NULL,
    segment   INTEGER NOT NULL CHECK (segment >= 0),
    position  INTEGER NOT NULL CHECK (position >= 0)
) STRICT;
