//! Which database file the store opened, so a file moved away, deleted or replaced under the running
//! daemon is noticed: SQLite keeps writing to the file it has open, which no later start reads, so the
//! writer refuses every batch meanwhile rather than acknowledge what a restart would lose.

use std::path::{Path, PathBuf};

/// The database's path and the file that was there when the store opened it.
#[derive(Debug, Clone)]
pub(crate) struct OpenedFile {
    pub path: PathBuf,
    /// (device, inode); `None` when there was no file (an in-memory database in tests).
    identity: Option<(u64, u64)>,
}

impl OpenedFile {
    pub fn new(path: PathBuf) -> Self {
        let identity = identity(&path);
        OpenedFile { path, identity }
    }

    /// How the file at the path differs from the one opened, if it does. One `stat`: cheap enough for
    /// every commit.
    pub fn changed(&self) -> Option<&'static str> {
        match (self.identity, identity(&self.path)) {
            (Some(_), None) => Some("moved away or deleted"),
            (Some(opened), Some(now)) if opened != now => Some("replaced"),
            _ => None,
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
