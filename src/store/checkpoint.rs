//! Checkpoints off the writer thread. SQLite's automatic checkpoint runs inside a committing writer and
//! with `synchronous=FULL` it fsyncs the database file there, stalling every caller in the next batch. The
//! writer instead nudges this thread now and then; a passive checkpoint never blocks the writer.

use std::sync::mpsc;

use rusqlite::Connection;

use super::error::{Result, StoreError};

/// Rows written between nudges (a few MB of WAL). Counted in rows, not requests: one batch request can
/// write thousands, and counting requests let the WAL grow to hundreds of MB during a bulk load, which the
/// next start then had to read.
pub(crate) const EVERY_ROWS: u64 = 20_000;

/// Longest time between nudges while anything is written. Rows alone undercount what a commit costs in
/// WAL when traffic is light: every commit writes whole pages (one message's accept, claim, submit, sent
/// and webhook rows came to ~220 KB of WAL in a soak run), so at a few messages a second 20,000 rows took
/// ten minutes and the WAL reached 610 MB.
pub(crate) const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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
