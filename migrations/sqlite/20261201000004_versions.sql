-- Versioned recordings: `version` grows by one on every change, by any actor
-- (a clinician's edit, an upload, the transcription worker), and is the
-- recording's ETag. Every statement that changes a row says
-- `version = version + 1`; the trigger refuses one that forgets.
ALTER TABLE recordings ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);

CREATE TRIGGER recordings_version_grows BEFORE UPDATE ON recordings
WHEN NEW.version <> OLD.version + 1
BEGIN
    SELECT RAISE(ABORT, 'recordings.version must grow by one on every change');
END;
