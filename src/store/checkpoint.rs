//! Checkpoints off the writer thread. SQLite's automatic checkpoint runs inside a committing writer and
//! with `synchronous=FULL` it fsyncs the database file there, stalling every caller in the next batch. The
//! writer instead nudges this thread now and then; a passive checkpoint never blocks the writer.

use std::sync::mpsc;

use rusqlite::Connection;

use super::error::{Result, StoreError};

/// Committed requests between nudges (about a few MB of WAL).
pub(crate) const EVERY_REQUESTS: u64 = 2_000;

/// Starts the checkpointer on its own connection; it stops when the returned sender is dropped.
pub(crate) fn spawn(conn: Connection) -> Result<mpsc::SyncSender<()>> {
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%error, "WAL checkpoint failed; the next one will catch up");
                }
            }
        })
        .map_err(|source| StoreError::Io {
            path: "store-checkpoint thread".into(),
            source: std::sync::Arc::new(source),
        })?;
    Ok(nudge)
}
