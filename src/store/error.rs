//! What can go wrong in the store, typed so the API can map each case to its status code.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::types::MessageState;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or prepared (the daemon cannot start).
    #[error("opening database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("database {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("migrating database to version {version}: {source}")]
    Migration {
        version: u32,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("database has schema version {found}, newer than this build knows ({latest})")]
    TooNew { found: u32, latest: u32 },
    /// SQLite failed (disk full, I/O error, read-only file...): nothing of the request was committed.
    #[error("database error while {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The batch this request was in was rolled back (SQLite abandoned it on a full disk or an I/O error, or
    /// another request failed halfway): nothing was committed; try again.
    #[error(
        "the write was rolled back with its batch (disk full, I/O error or a failed write beside it)"
    )]
    RolledBack,
    /// The writer thread is gone (shutting down or crashed): nothing was committed.
    #[error("the database writer has stopped")]
    Closed,
    /// The store's last batches were refused (a full disk, an I/O error): it answers reads, not writes.
    #[error(
        "the database refuses writes: its last {refused} batches failed (disk full? see the journal)"
    )]
    Unwritable { refused: u64 },
    /// The disk holding the database is all but full: the next write may fail.
    #[error("the disk holding the database has only {free_kib} KiB free")]
    DiskFull { free_kib: u64 },
    /// The database file at the configured path is not the one the daemon opened: its writes would go to
    /// a file no later start reads, so they are refused.
    #[error(
        "database {path} was {what} while the daemon runs: writes are refused until the file it opened is \
         back at that path (a restart would open the file there now, or a new, empty one)"
    )]
    FileChanged { path: PathBuf, what: &'static str },
    /// The idempotency key was used before with a different body (HTTP 409).
    #[error(
        "idempotency key {key:?} was already used for message {original} with a different body"
    )]
    IdempotencyConflict { key: String, original: Uuid },
    #[error("message {0} not found")]
    NotFound(Uuid),
    #[error("message {id} is {state}: cannot {action}")]
    InvalidTransition {
        id: Uuid,
        state: MessageState,
        action: &'static str,
    },
    #[error("message {id} has no part {part}")]
    NoSuchPart { id: Uuid, part: u16 },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("invalid cursor {0:?}")]
    InvalidCursor(String),
}

impl StoreError {
    /// The storage itself failed: the API answers 503 and the client retries later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite { .. }
                | StoreError::RolledBack
                | StoreError::Closed
                | StoreError::Io { .. }
                | StoreError::Unwritable { .. }
                | StoreError::DiskFull { .. }
                | StoreError::FileChanged { .. }
        )
    }

    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite {
            context,
            source: Arc::new(source),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
