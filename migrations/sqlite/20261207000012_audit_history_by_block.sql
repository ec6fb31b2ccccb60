-- A recording's history, indexed by block of 16,384 chain positions first
-- (seq >> 14), then recording. Indexed by recording alone, every audited read
-- of a random recording inserted its entry into a random page of the whole
-- index, and each commit rewrote one page per event into the WAL; now the
-- entries of a commit land in the current block's few pages. History looks
-- the recording up once per block (src/audit/store/mod.rs, HISTORY_BY_BLOCK; the
-- expression there must stay `seq >> 14`). SQLite only: PostgreSQL commits
-- each read's event on its own and keeps ix_audit_events_recording.
DROP INDEX ix_audit_events_recording;
CREATE INDEX ix_audit_events_recording_by_block
    ON audit_events (seq >> 14, recording_id, seq) WHERE recording_id IS NOT NULL;
