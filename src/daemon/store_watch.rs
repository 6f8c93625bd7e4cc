//! Watches the store for trouble the admin must hear of even when nothing is being written: a store that
//! refuses writes (a full disk) is probed until it takes them again, so `/readyz` recovers without waiting
//! for a message; a disk all but full is a warning before it refuses writes; a database file deleted or
//! replaced under the running daemon is an error in the journal, and the writer refuses every write until
//! the file is back (they would go to a file no later start reads).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::store::{Store, StoreError};

/// How often the store is looked at: a stat of its file, and a one-row write while it refuses writes.
const EVERY: Duration = Duration::from_secs(5);

/// How often a changed file is logged again while it stays changed.
const REMIND_EVERY: u32 = 120;

/// Looks at `store` every [`EVERY`] until `shutdown`.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Looks since the file was first seen changed; `None` while it is the file opened.
    let mut changed_for: Option<u32> = None;
    let mut short_of_room = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let checked = store.check();
        // `check` looks at the file first: any other answer means it is the one opened.
        if let Err(error @ StoreError::FileChanged { .. }) = &checked {
            let looks = changed_for.map_or(0, |n| n + 1);
            if looks.is_multiple_of(REMIND_EVERY) {
                error!(%error, "the database file changed under the daemon");
            }
            changed_for = Some(looks);
        } else if changed_for.take().is_some() {
            info!("the database file is the one the daemon opened again");
        }
        let full = matches!(checked, Err(StoreError::DiskFull { .. }));
        let ok = checked.is_ok();
        match checked {
            Err(StoreError::Unwritable { .. }) => {
                // A commit that succeeds resets the writer's count, and it logs that itself.
                let _ = store.probe().await;
            }
            Err(error @ StoreError::DiskFull { .. }) if !short_of_room => {
                warn!(%error, "the disk is all but full: /readyz says not ready, and sends are refused once it is full");
            }
            _ => {}
        }
        if short_of_room && ok {
            info!("the disk holding the database has room again");
        }
        short_of_room = full || (short_of_room && !ok);
    }
}
