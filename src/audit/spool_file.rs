//! The files of the audit spool (see [`crate::audit::spool`]): where they
//! are, how they are named, and reading the events they hold after a
//! position. Segments are `<spool id>-<number>.jsonl` in the database's spool
//! directory, one JSON line per event.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::model::NewAuditEvent;
use crate::db::StoreError;
pub use crate::db::sqlite::audit_spool_dir as dir_of;

/// The `audit_spool` row: how far the spool is in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Names this database's segments.
    pub spool_id: String,
    /// The segment moved up to.
    pub segment: u64,
    /// The byte of that segment moved up to.
    pub position: u64,
}

/// What a move takes: the events after a position, and where they end.
#[derive(Debug)]
pub struct Batch {
    /// The events, in order.
    pub events: Vec<NewAuditEvent>,
    /// (segment, byte) after the last line taken.
    pub to: (u64, u64),
    /// Whether more lines wait past `to`.
    pub more: bool,
}

/// The events after `from` (at most `max`): whole lines of the segment
/// `from` names, then of the segments after it. A line that is not an event
/// (a damaged file) is skipped and logged; a partial last line is taken once
/// it is whole, or dropped once its segment has a successor (it never will be).
pub fn read_pending(dir: &Path, from: &Position, max: usize) -> std::io::Result<Batch> {
    let (mut segment, mut position) = (from.segment, from.position);
    let mut events = Vec::new();
    // Listed once, before any segment is read: a segment listed with a
    // later one was complete before our read began.
    let existing = segments(dir, &from.spool_id)?;
    loop {
        let later = existing.iter().copied().find(|&n| n > segment);
        let bytes = read_from(&segment_path(dir, &from.spool_id, segment), position)?;
        let mut taken = 0;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            if events.len() == max {
                return Ok(Batch {
                    events,
                    to: (segment, position + taken),
                    more: true,
                });
            }
            match serde_json::from_slice(line) {
                Ok(event) => events.push(event),
                Err(e) => tracing::error!(
                    segment,
                    position = position + taken,
                    error = %e,
                    "audit spool: a line that is not an event was skipped"
                ),
            }
            taken += line.len() as u64;
        }
        let Some(next) = later else {
            return Ok(Batch {
                events,
                to: (segment, position + taken),
                more: false,
            });
        };
        if taken < bytes.len() as u64 {
            tracing::error!(
                segment,
                bytes = bytes.len() as u64 - taken,
                "audit spool: a line cut short at the end of a segment (a crash while writing it) was dropped"
            );
        }
        (segment, position) = (next, 0);
    }
}

/// Whether the spool may hold events after `from`: its segment is longer,
/// or a later one exists (looked at without reading them).
pub fn has_pending(dir: &Path, from: &Position) -> std::io::Result<bool> {
    let len = match std::fs::metadata(segment_path(dir, &from.spool_id, from.segment)) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(len > from.position
        || segments(dir, &from.spool_id)?
            .iter()
            .any(|&n| n > from.segment))
}

/// The bytes of `path` from `offset` (none if the file does not exist).
fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Segment `number` of the spool `spool_id` in `dir`.
pub fn segment_path(dir: &Path, spool_id: &str, number: u64) -> PathBuf {
    dir.join(format!("{spool_id}-{number:020}.jsonl"))
}

/// The numbers of the segments of `spool_id` in `dir`, in order.
pub fn segments(dir: &Path, spool_id: &str) -> std::io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix(spool_id))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        numbers.extend(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Deletes the segments wholly moved (best effort: one left behind is
/// skipped by the next move, which starts after it).
pub fn remove_segments_before(dir: &Path, spool_id: &str, number: u64) {
    let Ok(existing) = segments(dir, spool_id) else {
        return;
    };
    for old in existing.into_iter().filter(|&n| n < number) {
        let path = segment_path(dir, spool_id, old);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "audit spool: cannot remove a moved segment");
        }
    }
}

/// A spool file error as the stores say it: a full disk is one.
pub fn io_error(e: std::io::Error) -> StoreError {
    if crate::files::is_storage_full(&e) {
        StoreError::DiskFull(sqlx::Error::Io(e))
    } else {
        StoreError::Database(sqlx::Error::Io(e))
    }
}

/// Events, lines and positions for the spool's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Batch, Position};
    use crate::audit::AuditAction;
    use crate::audit::model::NewAuditEvent;
    use crate::timestamp::Timestamp;

    pub fn event(n: u32) -> NewAuditEvent {
        NewAuditEvent {
            at: Timestamp::parse("2026-12-07T10:00:00.000001Z").unwrap(),
            actor: format!("dr-{n}"),
            action: AuditAction::Read,
            recording_id: Some(uuid::Uuid::from_u128(u128::from(n))),
            patient_id: Some("p-1".into()),
            changes: serde_json::json!({"read": "recording"}),
            request_id: None,
            client_addr: Some("127.0.0.1".into()),
        }
    }

    pub fn line(n: u32) -> Vec<u8> {
        let mut line = serde_json::to_vec(&event(n)).unwrap();
        line.push(b'\n');
        line
    }

    pub fn at(segment: u64, position: u64) -> Position {
        Position {
            spool_id: "abc".into(),
            segment,
            position,
        }
    }

    pub fn actors(batch: &Batch) -> Vec<String> {
        batch.events.iter().map(|e| e.actor.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{actors, at, event, line};
    use super::*;
    use crate::audit::AuditAction;
    use std::fs::OpenOptions;
    use std::io::Write as _;

    #[test]
    fn an_event_is_one_line_and_reads_back_the_same() {
        let line = line(1);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: NewAuditEvent = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, event(1));
        for (action, spelled) in [
            (AuditAction::UserAdd, "user_add"),
            (AuditAction::Read, "read"),
            (AuditAction::SignIn, "sign_in"),
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), spelled);
            assert_eq!(action.as_str(), spelled);
        }
    }

    #[test]
    fn pending_lines_are_read_whole_across_segments_and_a_cut_line_waits_or_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let write = |number: u64, bytes: &[u8]| {
            let mut f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(segment_path(dir.path(), "abc", number))
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        let cut = &line(3)[..20];
        write(1, &[line(1), line(2), cut.to_vec()].concat());
        // Another database's segment is never read.
        std::fs::write(segment_path(dir.path(), "zzz", 1), line(9)).unwrap();

        // The live segment: whole lines only; the cut one waits.
        let batch = read_pending(dir.path(), &at(0, 0), 100).unwrap();
        assert_eq!(actors(&batch), ["dr-1", "dr-2"]);
        let after_two = (line(1).len() + line(2).len()) as u64;
        assert_eq!((batch.to, batch.more), ((1, after_two), false));
        // At most `max`, then the rest.
        let batch = read_pending(dir.path(), &at(0, 0), 1).unwrap();
        assert_eq!(
            (actors(&batch), batch.to, batch.more),
            (vec!["dr-1".to_owned()], (1, line(1).len() as u64), true)
        );

        // A later segment: the cut line will never be whole, and is dropped.
        write(3, &line(4));
        let batch = read_pending(dir.path(), &at(1, after_two), 100).unwrap();
        assert_eq!(actors(&batch), ["dr-4"]);
        assert_eq!(batch.to, (3, line(4).len() as u64));
        // A damaged line is skipped; what follows it is taken.
        write(3, b"{not an event}\n");
        write(3, &line(5));
        let batch = read_pending(dir.path(), &at(3, line(4).len() as u64), 100).unwrap();
        assert_eq!(actors(&batch), ["dr-5"]);
        // Nothing new: the same position.
        let end = batch.to;
        let batch = read_pending(dir.path(), &at(end.0, end.1), 100).unwrap();
        assert_eq!((batch.events.len(), batch.to), (0, end));
        assert!(!has_pending(dir.path(), &at(end.0, end.1)).unwrap());
        assert!(has_pending(dir.path(), &at(end.0, end.1 - 1)).unwrap());
        assert!(
            has_pending(dir.path(), &at(1, 0)).unwrap(),
            "a later segment"
        );
        assert_eq!(segments(dir.path(), "abc").unwrap(), [1, 3]);
        remove_segments_before(dir.path(), "abc", 3);
        assert_eq!(segments(dir.path(), "abc").unwrap(), [3]);
        assert_eq!(segments(dir.path(), "zzz").unwrap(), [1]);
    }
}
