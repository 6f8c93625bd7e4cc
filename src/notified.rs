//! Waiting for a condition on counts that a `Notify` announces changes of, without polling.

use tokio::sync::Notify;

/// Returns what `read` gives once `holds` is true of it: checked now and again each time `changed`
/// is notified (with `notify_waiters`). The wait is registered before each read, so a change between
/// the read and the wait is not missed.
pub(crate) async fn until<T>(
    changed: &Notify,
    read: impl Fn() -> T,
    holds: impl Fn(&T) -> bool,
) -> T {
    loop {
        let mut notified = std::pin::pin!(changed.notified());
        notified.as_mut().enable();
        let now = read();
        if holds(&now) {
            return now;
        }
        notified.await;
    }
}
