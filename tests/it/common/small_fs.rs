//! A full disk, for real: a small tmpfs that a test fills.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for one test, unmounted when dropped. Its mount
/// point is directly under the temp directory, so that another user (the
/// PostgreSQL server) can reach it when it is theirs.
pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// A tmpfs of `size` (owned by `owner` when given); None, after saying
    /// why, where mounting is not allowed.
    pub fn mount(size: &str, owner: Option<&str>) -> Option<Self> {
        let mut options = format!("size={size}");
        if let Some(owner) = owner {
            let id = |flag: &str| {
                let out = Command::new("id").args([flag, owner]).output().ok()?;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            };
            options.push_str(&format!(",uid={},gid={},mode=0700", id("-u")?, id("-g")?));
        }
        let dir = std::env::temp_dir().join(format!(
            "clinscribe-small-fs-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                eprintln!(
                    "SKIPPED a full-disk test: cannot mount a tmpfs here (needs root): {why}"
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes a file until the file system is full.
pub fn fill(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let block = vec![0u8; size];
        while file.write_all(&block).is_ok() && file.flush().is_ok() {}
    }
    let _ = file.sync_all();
}
