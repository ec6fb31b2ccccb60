//! The spool of `read` events (reads of patient data) on SQLite with
//! `synchronous=normal`.
//!
//! A read has no transaction of its own for its event to ride in, and
//! waiting for a commit of its own before answering halves a read's
//! throughput: the cost is the wait, not the writing (docs/BENCHMARKS.md,
//! "Where the cost of an audited read goes"). So the event is appended to a
//! file next to the database with one `write` before the answer goes, which
//! is as durable as a commit under `synchronous=normal` (it survives the
//! process, not necessarily a power cut), and a mover task appends what the
//! file holds to the chain in batches. An access whose event cannot be
//! written to the file is refused (fail closed).
//!
//! **Exactly once.** The file is made of segments, `<spool id>-<number>.jsonl`
//! in `<database>-audit-spool/`, one JSON line per event. The `audit_spool`
//! row says up to which segment and byte the events are in the chain, and is
//! updated in the transaction that appends them: a crash before that commit
//! leaves the row behind the file and the lines are taken again; after it,
//! never again. Each process writes segments of its own, numbered after every
//! segment that exists, so a segment that has a later one is complete: a line
//! cut short at its end (a crash mid-write) is dropped rather than waited for.
//! Segments wholly moved are deleted. The spool id, kept in the row, keeps a
//! file of another database (a restored or replaced one) out of this chain.
//!
//! This module writes the spool and runs the mover; the files' names and
//! reading are in [`spool_file`](super::spool_file), the moves (one
//! transaction each) in [`store::sqlite`](super::store::sqlite). Opening the
//! database for `serve` or a command (`cli::audit::open_database`) moves what
//! an earlier process left; the trail's readers (history, export, verify)
//! move what is pending first. Events reach the chain within about
//! [`MOVE_DELAY`] of their answer, so a read may follow in the chain a change
//! made just after it: `at` orders them.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell};

use super::model::NewAuditEvent;
use super::spool_file::{dir_of, io_error, segment_path, segments};
use super::store::sqlite::{move_all, move_pending, spool_position};
use crate::db::{SqliteDatabase, StoreError};

/// How long the mover lets events gather after the first one before moving
/// them. Each commit rewrites the pages it touches into the WAL, so a read
/// costs the server less the more events share a commit (docs/BENCHMARKS.md).
pub const MOVE_DELAY: Duration = Duration::from_millis(250);
/// A segment past this size is followed by a new one (so that moved events
/// leave the disk in whole files).
const SEGMENT_BYTES: u64 = 4 << 20;
/// How often the mover looks without being woken (a failed move is retried;
/// the database may have closed).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// The spool of one SQLite database: appends events, and moves them into
/// the chain in the background (started with the first event).
#[derive(Debug)]
pub struct Spool {
    db: SqliteDatabase,
    dir: PathBuf,
    writer: OnceCell<SegmentWriter>,
    wake: Arc<Notify>,
}

impl Spool {
    /// The spool of `db` (nothing is created until the first event).
    pub fn new(db: SqliteDatabase) -> Self {
        Self {
            dir: dir_of(db.path()),
            db,
            writer: OnceCell::new(),
            wake: Arc::default(),
        }
    }

    /// Appends `event` to the file; once this returns, the event reaches the
    /// chain even if the process dies.
    pub async fn append(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        let writer = self.writer.get_or_try_init(|| self.start()).await?;
        let mut line = serde_json::to_vec(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        writer.write(&line).map_err(io_error)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Moves every pending event into the chain now.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        move_pending(&self.db).await
    }

    /// This process's first segment, after every existing one, and the mover.
    async fn start(&self) -> Result<SegmentWriter, StoreError> {
        let at = spool_position(&self.db).await?;
        std::fs::create_dir_all(&self.dir).map_err(io_error)?;
        let last = segments(&self.dir, &at.spool_id)
            .map_err(io_error)?
            .last()
            .copied()
            .unwrap_or(0);
        let writer = SegmentWriter::create(&self.dir, &at.spool_id, last.max(at.segment) + 1)
            .map_err(io_error)?;
        let closed = self.db.clone();
        crate::tasks::spawn_watched(
            "audit spool",
            run_mover(self.db.clone(), self.dir.clone(), self.wake.clone()),
            move || closed.is_closed(),
        );
        Ok(writer)
    }
}

/// Moves events as they come, until the database closes.
async fn run_mover(db: SqliteDatabase, dir: PathBuf, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        let woken = tokio::time::timeout(IDLE_LOOK, wake.notified())
            .await
            .is_ok();
        if db.is_closed() {
            return;
        }
        if !woken && failures == 0 {
            continue;
        }
        tokio::time::sleep(MOVE_DELAY).await;
        match move_all(&db, &dir).await {
            Ok(_) if failures > 0 => {
                tracing::info!(failures, "audit spool: events move into the chain again");
                failures = 0;
            }
            Ok(_) => {}
            Err(StoreError::Closed) => return,
            Err(e) => {
                if failures == 0 {
                    // The events stay in the spool, and are moved once the database takes them.
                    tracing::error!(error = %e, "audit spool: moving events into the chain failed; retrying");
                }
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100) * failures.min(20);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// This process's segment, appended to under a lock (one `write` per event).
#[derive(Debug)]
struct SegmentWriter {
    dir: PathBuf,
    spool_id: String,
    current: Mutex<Segment>,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    file: File,
    /// Bytes of whole lines written.
    len: u64,
    /// A failed write could not be cut back: the next event starts a new segment.
    broken: bool,
}

impl Segment {
    fn create(dir: &Path, spool_id: &str, number: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(segment_path(dir, spool_id, number))?;
        Ok(Self {
            number,
            file,
            len: 0,
            broken: false,
        })
    }
}

impl SegmentWriter {
    fn create(dir: &Path, spool_id: &str, number: u64) -> std::io::Result<Self> {
        Ok(Self {
            current: Mutex::new(Segment::create(dir, spool_id, number)?),
            dir: dir.to_path_buf(),
            spool_id: spool_id.to_owned(),
        })
    }

    /// Appends one whole line, or nothing.
    fn write(&self, line: &[u8]) -> std::io::Result<()> {
        let mut segment = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if segment.broken || segment.len >= SEGMENT_BYTES {
            *segment = Segment::create(&self.dir, &self.spool_id, segment.number + 1)?;
        }
        if let Err(e) = segment.file.write_all(line) {
            // A part written (a disk filling up) would glue the next line to it.
            if segment.file.set_len(segment.len).is_err() {
                segment.broken = true;
            }
            return Err(e);
        }
        segment.len += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::spool_file::read_pending;
    use crate::audit::spool_file::testing::{actors, at, line};

    #[test]
    fn a_writer_starts_a_new_segment_past_its_size_and_after_a_write_it_could_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SegmentWriter::create(dir.path(), "abc", 5).unwrap();
        writer.write(&line(1)).unwrap();
        writer.current.lock().unwrap().len = SEGMENT_BYTES;
        writer.write(&line(2)).unwrap();
        writer.current.lock().unwrap().broken = true;
        writer.write(&line(3)).unwrap();
        assert_eq!(segments(dir.path(), "abc").unwrap(), [5, 6, 7]);
        let batch = read_pending(dir.path(), &at(5, 0), 100).unwrap();
        assert_eq!(actors(&batch), ["dr-1", "dr-2", "dr-3"]);
    }
}
