//! Runs retention (`[storage] retain_days`, see `store::retention`): a pass at start and one an hour, each
//! in chunks, so it never holds the writer long.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::metrics::Metrics;
use crate::config::RetainDays;
use crate::store::{PruneCursor, Store};

/// How often a pass runs: a cutoff an hour later deletes an hour's worth, a few thousand rows at most.
const EVERY: Duration = Duration::from_secs(3600);

/// Messages (and webhook events) per writer transaction: ~10 ms of the writer's time.
const CHUNK: usize = 500;

/// Prunes what is older than `retain` until `shutdown`.
pub async fn run(
    store: Store,
    retain: RetainDays,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let now = store.now();
        let cutoff = now.checked_sub(retain.span()).unwrap_or(Timestamp::MIN);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = pass(&store, cutoff, retain, &metrics) => {}
        }
        let next = now.checked_add(EVERY).unwrap_or(Timestamp::MAX);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = store.clock().sleep_until(next) => {}
        }
    }
}

/// One pass: chunks until nothing before `cutoff` is left; an error ends it until the next hour.
async fn pass(store: &Store, cutoff: Timestamp, retain: RetainDays, metrics: &Metrics) {
    let (mut cursor, mut messages, mut webhook_events, mut other_rows) =
        (PruneCursor::default(), 0, 0, 0);
    loop {
        match store.prune(cutoff, cursor, CHUNK).await {
            Ok(pruned) => {
                messages += pruned.messages;
                webhook_events += pruned.webhook_events;
                metrics.add_retention_deleted(
                    u64::try_from(pruned.messages).unwrap_or(u64::MAX),
                    u64::try_from(pruned.webhook_events).unwrap_or(u64::MAX),
                );
                other_rows += pruned.other_rows;
                match pruned.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            Err(error) => {
                warn!(%error, "retention: could not delete old records; trying again in an hour");
                break;
            }
        }
    }
    if messages + webhook_events + other_rows > 0 {
        info!(
            messages,
            webhook_events,
            other_rows,
            %cutoff,
            retain_days = retain.days(),
            "retention: deleted finished messages and records from before the cutoff"
        );
    }
}
