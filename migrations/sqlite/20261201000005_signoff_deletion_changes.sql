-- Sign-off, amendments, soft deletion and the change feed.
--
-- A signed note (signed_at set) keeps its text, its patient and its
-- signature for good: a correction is an amendment, appended to
-- `amendments` (a JSON array, oldest first). A deleted recording stays as a
-- tombstone (deleted_at set) so that the change feed can tell other devices.
ALTER TABLE recordings ADD COLUMN signed_at TEXT
    CHECK (signed_at IS NULL OR signed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
ALTER TABLE recordings ADD COLUMN signed_by TEXT;
ALTER TABLE recordings ADD COLUMN signed_sha256 TEXT
    CHECK (signed_sha256 IS NULL OR (length(signed_sha256) = 64 AND NOT signed_sha256 GLOB '*[^0-9a-f]*'));
ALTER TABLE recordings ADD COLUMN amendments TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(amendments) AND json_type(amendments) = 'array');
ALTER TABLE recordings ADD COLUMN deleted_at TEXT
    CHECK (deleted_at IS NULL OR deleted_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');
-- The change feed's order: a number from one counter, given to a row by the
-- triggers below whenever it is inserted (unless the insert brings its own, as
-- `migrate-data` does) or its version grows. SQLite has one writer at a time,
-- so numbers are handed out in commit order.
ALTER TABLE recordings ADD COLUMN change_seq INTEGER;

CREATE TABLE recording_change_counter (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    value    INTEGER NOT NULL
) STRICT;

-- The version trigger, again, letting through the one update that does not
-- grow the version: the change-number triggers' own.
DROP TRIGGER recordings_version_grows;
CREATE TRIGGER recordings_version_grows BEFORE UPDATE ON recordings
WHEN NEW.version <> OLD.version + 1 AND NEW.change_seq IS OLD.change_seq
BEGIN
    SELECT RAISE(ABORT, 'recordings.version must grow by one on every change');
END;

UPDATE recordings SET change_seq = rowid;
-- The counter's one row is written by the first change (so that a database
-- without recordings has no rows at all: `migrate-data` copies into such a
-- database only).
INSERT INTO recording_change_counter (only_row, value)
SELECT 1, max(change_seq) FROM recordings HAVING count(*) > 0;

CREATE TRIGGER recordings_change_seq_on_insert AFTER INSERT ON recordings
WHEN NEW.change_seq IS NULL
BEGIN
    INSERT OR IGNORE INTO recording_change_counter (only_row, value) VALUES (1, 0);
    UPDATE recording_change_counter SET value = value + 1;
    UPDATE recordings SET change_seq = (SELECT value FROM recording_change_counter)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER recordings_change_seq_on_update AFTER UPDATE OF version ON recordings
BEGIN
    INSERT OR IGNORE INTO recording_change_counter (only_row, value) VALUES (1, 0);
    UPDATE recording_change_counter SET value = value + 1;
    UPDATE recordings SET change_seq = (SELECT value FROM recording_change_counter)
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER recordings_signed_note_is_final BEFORE UPDATE ON recordings
WHEN OLD.signed_at IS NOT NULL AND (
    NEW.final_transcript IS NOT OLD.final_transcript
    OR NEW.patient_id IS NOT OLD.patient_id
    OR NEW.signed_at IS NOT OLD.signed_at
    OR NEW.signed_by IS NOT OLD.signed_by
    OR NEW.signed_sha256 IS NOT OLD.signed_sha256
    OR NEW.deleted_at IS NOT OLD.deleted_at
    OR json_array_length(NEW.amendments) < json_array_length(OLD.amendments))
BEGIN
    SELECT RAISE(ABORT, 'a signed note cannot change: add an amendment');
END;

-- The change feed: a clinician's rows in change order.
CREATE INDEX ix_recordings_changes ON recordings (clinician_id, change_seq);
-- The purge of deleted recordings' audio.
CREATE INDEX ix_recordings_deleted ON recordings (deleted_at) WHERE deleted_at IS NOT NULL;
