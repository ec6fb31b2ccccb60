//! Operations: backup, restore, seed, check, vacuum, adoption of the original's
//! database, scheduled backups — with the real binary where processes matter.
//! One file per command.

mod adopt;
mod backup;
mod maintenance;
mod restore;
mod seed;

use std::path::{Path, PathBuf};

use crate::common::open_db;

pub(super) fn backups_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("clinical_")
    });
    v.sort();
    v
}

pub(super) fn backup_path_from(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backup:"))
        .expect("backup line");
    PathBuf::from(line.trim_start_matches("backup:").trim())
}

pub(super) async fn integrity(path: &Path) -> String {
    let db = open_db(path).await;
    let r: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(db.readers())
        .await
        .unwrap();
    db.close().await;
    r
}

pub(super) fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}
