-- Sign-off, amendments, soft deletion and the change feed (as
-- migrations/sqlite/).
ALTER TABLE recordings
    ADD COLUMN signed_at timestamptz,
    ADD COLUMN signed_by text,
    ADD COLUMN signed_sha256 text CHECK (signed_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN amendments jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(amendments) = 'array'),
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN change_seq bigint;

-- The change feed's order. Every insert and update of a recording takes the
-- next number from the one counter row; the row lock it takes is held until
-- the transaction ends, so a second writer (on any instance) waits for the
-- first to commit before it gets its number: numbers are handed out in commit
-- order, and a reader that has seen number n can never later find a
-- committed change below n. (A sequence would not do: its numbers are handed
-- out at the statement, and a transaction holding n may commit after n + 1.)
CREATE TABLE recording_change_counter (
    only_row smallint PRIMARY KEY CHECK (only_row = 1),
    value    bigint NOT NULL
);

ALTER TABLE recordings DISABLE TRIGGER recordings_version_grows;
UPDATE recordings SET change_seq = numbered.n
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM recordings) AS numbered
WHERE recordings.id = numbered.id;
ALTER TABLE recordings ENABLE TRIGGER recordings_version_grows;
-- The counter's one row is written by the first change (see migrations/sqlite/).
INSERT INTO recording_change_counter (only_row, value)
SELECT 1, max(change_seq) FROM recordings HAVING count(*) > 0;

-- An insert that brings its own number (`migrate-data`) keeps it.
CREATE FUNCTION recordings_next_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.change_seq IS NOT NULL THEN
        RETURN NEW;
    END IF;
    UPDATE recording_change_counter SET value = value + 1 RETURNING value INTO NEW.change_seq;
    IF NOT FOUND THEN
        INSERT INTO recording_change_counter (only_row, value) VALUES (1, 0)
        ON CONFLICT (only_row) DO NOTHING;
        UPDATE recording_change_counter SET value = value + 1 RETURNING value INTO NEW.change_seq;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_next_change BEFORE INSERT OR UPDATE ON recordings
FOR EACH ROW EXECUTE FUNCTION recordings_next_change();

CREATE FUNCTION recordings_signed_note_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.signed_at IS NOT NULL AND (
        NEW.final_transcript IS DISTINCT FROM OLD.final_transcript
        OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
        OR NEW.signed_at IS DISTINCT FROM OLD.signed_at
        OR NEW.signed_by IS DISTINCT FROM OLD.signed_by
        OR NEW.signed_sha256 IS DISTINCT FROM OLD.signed_sha256
        OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
        OR jsonb_array_length(NEW.amendments) < jsonb_array_length(OLD.amendments)) THEN
        RAISE EXCEPTION 'a signed note cannot change: add an amendment';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER recordings_signed_note_is_final BEFORE UPDATE ON recordings
FOR EACH ROW EXECUTE FUNCTION recordings_signed_note_is_final();

CREATE INDEX ix_recordings_changes ON recordings (clinician_id, change_seq);
CREATE INDEX ix_recordings_deleted ON recordings (deleted_at) WHERE deleted_at IS NOT NULL;
