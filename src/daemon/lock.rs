//! One daemon per database. A second `serve` on the same file (an admin debugging with the service up)
//! would run start-up recovery against messages the first is sending: it marks them `unknown` for good,
//! and with `resend_unknown_on_start` sends them twice. So `serve` takes an exclusive lock on
//! `<database>.lock` before it opens the store, and holds it until it stops; the kernel drops it when the
//! process dies, so a crash never leaves a stale lock behind.
//!
//! A lock file beside the database, not the database itself: SQLite's own locks on that file are POSIX
//! locks, which any close of another descriptor of the file in this process would silently release.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another modemgate (pid {holder}) is serving {database}: stop it first (systemctl stop modemgate)"
    )]
    Held { database: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file for `database`. It stays on disk when the daemon stops, so it also tells that a daemon
/// served that database before.
pub fn path_for(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The lock file showing that a daemon served `database` before, when the database itself is gone (moved
/// or deleted): a new, empty one in its place would forget the opt-outs.
pub fn left_behind(database: &Path) -> Option<PathBuf> {
    let lock = path_for(database);
    (!database.exists() && lock.exists()).then_some(lock)
}

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: Flock<File>,
}

impl DatabaseLock {
    /// Takes the lock for `database`, or says who holds it. Never waits.
    pub fn acquire(database: &Path) -> Result<DatabaseLock, LockError> {
        let path = path_for(database);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                // Best effort: the holder's pid, as it wrote it.
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "unknown".to_owned(),
                    pid => pid.to_owned(),
                };
                return Err(LockError::Held {
                    database: database.to_path_buf(),
                    holder,
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DatabaseLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("gw.db");
        let first = DatabaseLock::acquire(&database).unwrap();
        let err = DatabaseLock::acquire(&database).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, LockError::Held { holder, .. } if *holder == std::process::id().to_string()),
            "{message}"
        );
        assert!(message.contains("gw.db"), "{message}");
        // Another database is not held.
        DatabaseLock::acquire(&dir.path().join("other.db")).unwrap();
        drop(first);
        DatabaseLock::acquire(&database).unwrap();
    }
}
