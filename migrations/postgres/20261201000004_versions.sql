-- Versioned recordings (as migrations/sqlite/): `version` grows by one on
-- every change, by any actor, and is the recording's ETag. Every statement
-- that changes a row says `version = version + 1`; the trigger refuses one
-- that forgets.
ALTER TABLE recordings ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1);

CREATE FUNCTION recordings_version_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <> OLD.version + 1 THEN
        RAISE EXCEPTION 'recordings.version must grow by one on every change';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER recordings_version_grows BEFORE UPDATE ON recordings
FOR EACH ROW EXECUTE FUNCTION recordings_version_grows();
