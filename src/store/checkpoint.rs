//! Checkpoints, and what keeps the write-ahead log bounded.
//!
//! SQLite's automatic checkpoint runs inside a committing writer, and it fsyncs the database file there,
//! stalling every caller in the next batch. So a thread of its own does passive checkpoints, nudged by
//! the writer as the log grows and at least every second while anything is written.
//!
//! Passive checkpoints alone do not bound the log under sustained writes: SQLite starts the log over only
//! when a write finds every frame of it copied, and while batches keep coming each checkpoint ends behind
//! the commits made while it copied. A bulk load grew the `-wal` file past 1 GB in 8 s that way, every
//! frame written to new file space (which the kernel zeroes and allocates first: a fifth of the writer's
//! time), and a start after a crash would have had to read all of it. So once the log holds a limit of
//! frames (256 MB by default) the writer copies the rest itself, between two batches, and its next commit
//! starts the log over. The file keeps that size while the load lasts, and is given back a minute after.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::error::{Result, StoreError};

/// Frames (pages) written between nudges: 32 MB, so the checkpointer keeps up with a bulk load and has
/// little left to copy at the limit, while its passes, each ending with an fsync of the database file that
/// the writer's own fsyncs queue behind, come no more often than that needs.
const NUDGE_FRAMES: u32 = 8_192;

/// Longest time between nudges while anything is written. Commits under light traffic write whole pages
/// for a few rows (one message's accept, claim, submit, sent and webhook rows came to ~220 KB of log in a
/// soak run), so waiting for a volume let the log reach 610 MB in ten minutes.
const EVERY: Duration = Duration::from_secs(1);

/// The default limit of frames in the log: 256 MB of 4 KB pages. Each catch-up holds the writer for the
/// rest of the copy and an fsync of the database file (5-130 ms under a campaign's load), so the limit sets
/// how often callers wait that long; but every frame past the file's size goes to new file space, which
/// the kernel allocates and zeroes first (a fifth of the writer's time in session 25's profile of a fresh
/// database, against 2 % once the log wrote over its own file), and a smaller log starts over into space
/// it has sooner. In session 16 a 1 GB limit gave `bench/bench.py campaign` a p99 of 21-31 ms against
/// 14.1 ms at 2 GB; on session 21's VM 512 MB gave 17.3-19.5 ms against 17.2-19.4 ms at 2 GB. In session
/// 25, alternating 256 MB with 512 MB: `bench/bench.py batch` 68,660 and 66,070 msg/s, p99 115 and 113 ms,
/// against 65,710 and 62,790, p99 168 and 143 ms; `campaign` p99 12.2 and 12.8 ms against 13.5 and 13.6.
pub(crate) const LIMIT_FRAMES: u32 = 65_536;

/// Past the limit, the writer catches up once the checkpointer has left at most this many frames to copy
/// (4 MB: a few milliseconds, which every caller in the next batch waits for) beyond the last two commits
/// (a batch of 1,000 messages writes ~1,200 frames, and the checkpointer never ends closer than the
/// commits made while it copied) ...
const CATCH_UP_FRAMES: u32 = 1_024;

/// ... or, if it never gets that close, once the log holds this many times the limit, whatever the wait.
const HARD_LIMIT_FACTOR: u32 = 2;

/// Under light traffic the log may start over at nearly every commit, but only if the checkpointer has
/// copied all of it by then; a commit landing while it copies (a message's claim, send and report commits
/// come in quick succession) leaves the log to grow instead. Measured with `bench/bench.py wal` (5 POSTs a
/// second through 4 modems) the `-wal` file crept up ~12 MB a minute, towards the limit. So when the log
/// grew less than this in the last second ...
const LIGHT_FRAMES: u32 = 512;

/// ... and holds at least this much (4 MB: it has not started over for a while), the writer, which then
/// has little to do, catches up itself as at the limit: no commit can land meanwhile, so its next commit
/// starts the log over. That costs the writer a copy of the last commits and an fsync of the database,
/// a few milliseconds, once per 4 MB of log.
const SETTLE_FRAMES: u32 = 1_024;

/// Once the log has grown slower than [`LIGHT_FRAMES`] a second for this long, the campaign that grew it
/// is over: the file, kept at up to the limit (256 MB) so a sustained load writes into space it already
/// has, is cut back to [`QUIET_FILE_FRAMES`] when the log next starts over, which under light traffic is
/// within seconds. A disk that a campaign filled to the limit is returned to the admin a minute after it,
/// and the next campaign pays for new file space again until the log reaches its limit.
const QUIET: Duration = Duration::from_secs(60);

/// The file kept under light traffic (8 MB): room for the log's cycles of up to [`SETTLE_FRAMES`].
const QUIET_FILE_FRAMES: u32 = 2 * SETTLE_FRAMES;

/// What the writer does after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Nothing,
    /// Wake the checkpointer thread.
    Nudge,
    /// Checkpoint on the writer's own connection now, so the next commit starts the log over.
    CatchUp,
}

/// When the writer nudges the checkpointer or catches up itself, from the log's length after each commit.
#[derive(Debug)]
struct WalPolicy {
    /// Frames in the log at which the writer catches up itself.
    limit: u32,
    nudged_frames: u32,
    nudged_at: Instant,
    /// Frames in the log after the commit before.
    last_frames: u32,
    /// When the log last grew at a campaign's pace, [`LIGHT_FRAMES`] a second or more.
    busy_at: Instant,
    /// The most frames of file the log keeps when it starts over: the limit, or [`QUIET_FILE_FRAMES`]
    /// once it has been [`QUIET`]; `changed` until the writer has told SQLite.
    file_frames: u32,
    file_changed: bool,
}

impl WalPolicy {
    fn new(limit: u32, now: Instant) -> Self {
        WalPolicy {
            limit: limit.max(1),
            nudged_frames: 0,
            nudged_at: now,
            last_frames: 0,
            busy_at: now,
            file_frames: limit.max(1),
            file_changed: false,
        }
    }

    /// The file's new size limit in frames, once, after [`after_commit`](Self::after_commit) changed it.
    fn file_change(&mut self) -> Option<u32> {
        std::mem::take(&mut self.file_changed).then_some(self.file_frames)
    }

    /// After a commit that left `frames` frames in the log (fewer than before: it was started over), of
    /// which the checkpointer last said it had copied `copied` (more than `frames`: it spoke of the log
    /// before it started over).
    fn after_commit(&mut self, frames: u32, copied: u32, now: Instant) -> Step {
        let started_over = |before: u32| if frames < before { 0 } else { before };
        self.nudged_frames = started_over(self.nudged_frames);
        let commit = frames - started_over(self.last_frames);
        self.last_frames = frames;
        let grown = frames - self.nudged_frames;
        let behind = frames - copied.min(frames);
        let close = behind <= CATCH_UP_FRAMES.saturating_add(commit.saturating_mul(2));
        let second_passed = grown > 0 && now.duration_since(self.nudged_at) >= EVERY;
        let settling = second_passed && grown < LIGHT_FRAMES && frames >= SETTLE_FRAMES && close;
        let step = if settling
            || frames >= self.limit
                && (close || frames >= self.limit.saturating_mul(HARD_LIMIT_FACTOR))
        {
            Step::CatchUp
        } else if frames >= self.limit || grown >= NUDGE_FRAMES || second_passed {
            Step::Nudge
        } else {
            return Step::Nothing;
        };
        let seconds = now.duration_since(self.nudged_at).as_secs().max(1);
        if u64::from(grown) >= u64::from(LIGHT_FRAMES) * seconds {
            self.busy_at = now;
        }
        let file_frames = if now.duration_since(self.busy_at) >= QUIET {
            QUIET_FILE_FRAMES.min(self.limit)
        } else {
            self.limit
        };
        if file_frames != self.file_frames {
            self.file_frames = file_frames;
            self.file_changed = true;
        }
        self.nudged_frames = frames;
        self.nudged_at = now;
        step
    }
}

/// Whether the log ran past its limit by half, which only a reader holding an old snapshot causes (an
/// admin's `sqlite3` shell with a transaction open, a backup tool left running): no checkpoint may copy
/// what that reader still sees, so the log cannot start over and grows, without bound, until it ends.
#[derive(Debug, Default)]
struct Overrun {
    told: bool,
    /// Frames in the log after the commit before: fewer now means it started over.
    last: u32,
}

impl Overrun {
    /// After a commit that left `frames` frames in the log: `Some(true)` the first time it is past half
    /// again the `limit`, `Some(false)` once it has started over after that.
    fn after_commit(&mut self, frames: u32, limit: u32) -> Option<bool> {
        let started_over = frames < self.last;
        self.last = frames;
        let past = frames >= limit.saturating_add(limit / 2);
        match (past, self.told) {
            (true, false) => {
                self.told = true;
                Some(true)
            }
            (false, true) if started_over => {
                self.told = false;
                Some(false)
            }
            _ => None,
        }
    }
}

/// The writer's side of checkpointing: after each commit, nudges the checkpointer or catches up itself, as
/// its [`WalPolicy`] says.
pub(crate) struct LogKeeper {
    /// `None` when no checkpointer runs (tests that watch the writer bound the log alone).
    checkpointer: Option<Checkpointer>,
    policy: WalPolicy,
    overrun: Overrun,
    /// Frames in the log after the last commit that wrote to it, as SQLite's WAL hook tells.
    frames: Arc<AtomicU32>,
}

impl LogKeeper {
    pub fn new(checkpointer: Option<Checkpointer>, limit: u32) -> Self {
        LogKeeper {
            checkpointer,
            policy: WalPolicy::new(limit, Instant::now()),
            overrun: Overrun::default(),
            frames: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Has SQLite tell it the log's length after each commit by `conn` (the writer's connection), and keep
    /// the file at up to the limit when the log starts over, never below it, so a log reused up to the
    /// limit writes into file space it already has (new space is zeroed and allocated first).
    pub fn watch(&self, conn: &mut Connection) {
        set_file_limit(conn, self.policy.file_frames);
        let frames = self.frames.clone();
        let hook = conn.wal_hook(Some(move |_: &mut Wal, pages: c_int| {
            frames.store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }));
        if let Err(error) = hook {
            tracing::warn!(%error, "no WAL hook: the log is bounded by the checkpointer alone");
        }
    }

    /// After a commit by `conn` (the writer's connection, now between transactions) at `now`.
    pub fn committed(&mut self, conn: &Connection, now: Instant) {
        let frames = self.frames.load(Ordering::Relaxed);
        let copied_before = self
            .checkpointer
            .as_ref()
            .map_or(0, |c| c.copied.load(Ordering::Relaxed));
        let step = self.policy.after_commit(frames, copied_before, now);
        match self.overrun.after_commit(frames, self.policy.limit) {
            Some(true) => tracing::warn!(
                log_mb = u64::from(frames) * 4096 / 1_048_576,
                limit_mb = u64::from(self.policy.limit) * 4096 / 1_048_576,
                "the write-ahead log cannot start over: a reader holds an old snapshot of the database \
                 (an sqlite3 shell with a transaction open? a backup left running?); it grows until that \
                 reader ends"
            ),
            Some(false) => tracing::info!("the write-ahead log started over again"),
            None => {}
        }
        if let Some(file_frames) = self.policy.file_change() {
            tracing::debug!(
                file_mb = u64::from(file_frames) * 4096 / 1_048_576,
                "the write-ahead log file is kept at up to this size from its next start over"
            );
            set_file_limit(conn, file_frames);
        }
        match step {
            Step::Nothing => {}
            Step::Nudge => {
                if let Some(checkpointer) = &self.checkpointer {
                    // Full means one is already pending: that one will do.
                    let _ = checkpointer.nudge.try_send(());
                }
            }
            // Nothing else writes now, so this copies every frame no reader still needs: usually the last
            // few commits, the checkpointer having copied the rest.
            Step::CatchUp => {
                let started = Instant::now();
                match passive(conn) {
                    Ok((log, copied)) => tracing::debug!(
                        log,
                        copied,
                        behind = frames.saturating_sub(copied_before),
                        took = ?started.elapsed(),
                        "WAL caught up by the writer"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "WAL checkpoint failed; the next commit tries again");
                    }
                }
            }
        }
    }
}

/// Has SQLite cut the log file back to `frames` pages (if longer) at the first commit after the log starts
/// over (`journal_size_limit`).
fn set_file_limit(conn: &Connection, frames: u32) {
    if let Err(error) = conn.pragma_update(None, "journal_size_limit", i64::from(frames) * 4096) {
        tracing::warn!(%error, "could not set the write-ahead log file's size limit");
    }
}

/// The writer's handle on the checkpointer thread.
pub(crate) struct Checkpointer {
    nudge: mpsc::SyncSender<()>,
    /// Frames of the log its last checkpoint had copied when it ended.
    copied: Arc<AtomicU32>,
}

/// Starts the checkpointer on its own connection; it stops when the returned handle is dropped.
pub(crate) fn spawn(conn: Connection) -> Result<Checkpointer> {
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    let copied = Arc::new(AtomicU32::new(0));
    let told = copied.clone();
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                match passive(&conn) {
                    // -1: another checkpoint (the writer's) held the lock.
                    Ok((_, done)) => {
                        if let Ok(done) = u32::try_from(done) {
                            told.store(done, Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "WAL checkpoint failed; the next one will catch up");
                    }
                }
            }
        })
        .map_err(|source| StoreError::Io {
            path: "store-checkpoint thread".into(),
            source: Arc::new(source),
        })?;
    Ok(Checkpointer { nudge, copied })
}

/// A passive checkpoint: copies what no reader still needs, waits for no one. Returns (frames in the log,
/// frames copied); SQLite reports -1 for both when another checkpoint held the lock.
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_held_past_its_limit_is_told_once_and_its_start_over_once() {
        let mut overrun = Overrun::default();
        assert_eq!(overrun.after_commit(1_000, 1_000), None, "at the limit");
        assert_eq!(overrun.after_commit(1_499, 1_000), None);
        assert_eq!(overrun.after_commit(1_500, 1_000), Some(true));
        assert_eq!(overrun.after_commit(9_000, 1_000), None, "told once");
        assert_eq!(overrun.after_commit(10, 1_000), Some(false));
        assert_eq!(overrun.after_commit(20, 1_000), None);
        assert_eq!(overrun.after_commit(5, 1_000), None, "told once");
        assert_eq!(overrun.after_commit(1_600, 1_000), Some(true), "again");
    }

    #[test]
    fn the_writer_nudges_as_the_log_grows_and_catches_up_at_the_limit() {
        let start = Instant::now();
        let mut policy = WalPolicy::new(20_000, start);
        assert_eq!(policy.after_commit(100, 0, start), Step::Nothing);
        assert_eq!(policy.after_commit(8_191, 0, start), Step::Nothing);
        assert_eq!(policy.after_commit(8_192, 0, start), Step::Nudge);
        assert_eq!(policy.after_commit(16_000, 8_192, start), Step::Nothing);
        assert_eq!(policy.after_commit(16_384, 8_192, start), Step::Nudge);
        assert_eq!(policy.after_commit(20_000, 19_000, start), Step::CatchUp);
        // The log started over: counted again from its start, and what the checkpointer said it had
        // copied was of the old one.
        assert_eq!(policy.after_commit(30, 19_000, start), Step::Nothing);
        assert_eq!(policy.after_commit(8_222, 19_000, start), Step::Nudge);
    }

    #[test]
    fn past_the_limit_the_writer_waits_for_the_checkpointer_to_come_close_up_to_a_hard_limit() {
        let start = Instant::now();
        let mut policy = WalPolicy::new(10_000, start);
        assert_eq!(policy.after_commit(9_900, 0, start), Step::Nudge);
        assert_eq!(policy.after_commit(10_000, 6_000, start), Step::Nudge);
        assert_eq!(policy.after_commit(10_100, 6_000, start), Step::Nudge);
        assert_eq!(policy.after_commit(10_200, 9_100, start), Step::CatchUp);
        // Commits of 1,500 frames (a batch): a checkpointer two commits behind is close.
        let mut batches = WalPolicy::new(10_000, start);
        assert_eq!(batches.after_commit(9_000, 0, start), Step::Nudge);
        assert_eq!(batches.after_commit(10_500, 6_000, start), Step::Nudge);
        assert_eq!(batches.after_commit(12_000, 9_000, start), Step::CatchUp);
        // A checkpointer that never comes close: the writer catches up at twice the limit.
        let mut behind = WalPolicy::new(10_000, start);
        for frames in (100..20_000).step_by(100) {
            assert_ne!(
                behind.after_commit(frames, 0, start),
                Step::CatchUp,
                "{frames}"
            );
        }
        assert_eq!(behind.after_commit(20_000, 0, start), Step::CatchUp);
    }

    #[test]
    fn under_light_traffic_a_log_that_did_not_start_over_is_caught_up_by_the_writer() {
        let start = Instant::now();
        let at = |seconds: u32| start + EVERY * seconds;
        // Light (under 512 frames in the second), 4 MB without starting over, the checkpointer close.
        let mut light = WalPolicy::new(LIMIT_FRAMES, start);
        assert_eq!(light.after_commit(900, 0, at(1)), Step::Nudge);
        assert_eq!(light.after_commit(1_100, 900, at(2)), Step::CatchUp);
        // Not for a log that starts over on its own.
        let mut small = WalPolicy::new(LIMIT_FRAMES, start);
        assert_eq!(small.after_commit(400, 0, at(1)), Step::Nudge);
        assert_eq!(small.after_commit(600, 400, at(2)), Step::Nudge);
        // Not under heavier traffic: the catch-ups would hold up callers for nothing.
        let mut busy = WalPolicy::new(LIMIT_FRAMES, start);
        assert_eq!(busy.after_commit(900, 0, at(1)), Step::Nudge);
        assert_eq!(busy.after_commit(1_500, 900, at(2)), Step::Nudge);
        // Not while the checkpointer is far behind: nudged, it copies first.
        let mut behind = WalPolicy::new(LIMIT_FRAMES, start);
        assert_eq!(behind.after_commit(5_000, 0, at(1)), Step::Nudge);
        assert_eq!(behind.after_commit(5_100, 0, at(2)), Step::Nudge);
        assert_eq!(behind.after_commit(5_200, 5_100, at(3)), Step::CatchUp);
    }

    #[test]
    fn a_minute_after_the_log_last_grew_fast_its_file_is_kept_small_until_it_grows_fast_again() {
        let start = Instant::now();
        let at = |seconds: u32| start + EVERY * seconds;
        let mut policy = WalPolicy::new(LIMIT_FRAMES, start);
        // A campaign: 8,192 frames in under a second.
        assert_eq!(policy.after_commit(8_192, 0, start), Step::Nudge);
        // Then 100 frames a second, and a batch of 1,200 frames after a 30-s pause: still quiet.
        for second in 1..60 {
            let frames = 8_192 + 100 * second;
            policy.after_commit(frames, frames, at(second));
            assert_eq!(policy.file_change(), None, "{second}");
        }
        policy.after_commit(14_200, 14_200, at(60));
        assert_eq!(policy.file_change(), Some(QUIET_FILE_FRAMES));
        policy.after_commit(15_400, 14_200, at(90));
        assert_eq!(
            policy.file_change(),
            None,
            "told once, and a lone batch is no campaign"
        );
        // 600 frames in a second is a campaign again.
        policy.after_commit(16_000, 15_400, at(91));
        assert_eq!(policy.file_change(), Some(LIMIT_FRAMES));
    }

    /// The SQLite behaviour the policy relies on: the file is cut back to `journal_size_limit` at the first
    /// commit after the log starts over, and kept at that size until then.
    #[test]
    fn the_log_file_stays_at_the_limit_after_a_campaign_and_shrinks_once_traffic_has_been_light() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let mut conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let limit = 4_096; // 16 MB
        let mut keeper = LogKeeper::new(None, limit);
        keeper.watch(&mut conn);
        let log_file = || {
            std::fs::metadata(dir.path().join("log.db-wal"))
                .unwrap()
                .len()
        };
        // What the checkpointer does on its own connection: copy the whole log.
        let checkpointer = Connection::open(&path).unwrap();
        let copy_all = || {
            let (log, copied) = passive(&checkpointer).unwrap();
            assert_eq!(log, copied);
        };
        let start = Instant::now();
        let at = |seconds: u32| start + EVERY * seconds;
        // A campaign: 20 MB of log in a second.
        for _ in 0..20 {
            write(&conn, &mut keeper, 1024, start);
        }
        assert!(log_file() > 20_000_000, "{}", log_file());
        // The next commit starts the log over, keeping the limit's worth of file.
        copy_all();
        write(&conn, &mut keeper, 1, at(1));
        assert_eq!(log_file(), u64::from(limit) * 4096);
        // A minute of light traffic: the next start over cuts the file to the quiet size.
        for second in 2..=60 {
            write(&conn, &mut keeper, 1, at(second));
        }
        assert_eq!(file_limit(&conn), i64::from(QUIET_FILE_FRAMES) * 4096);
        copy_all();
        write(&conn, &mut keeper, 1, at(61));
        assert_eq!(log_file(), u64::from(QUIET_FILE_FRAMES) * 4096);
        // A campaign again (12 MB in a second): its file is kept when the log starts over.
        for _ in 0..12 {
            write(&conn, &mut keeper, 1024, at(62));
        }
        write(&conn, &mut keeper, 1, at(63));
        assert_eq!(file_limit(&conn), i64::from(limit) * 4096);
        copy_all();
        write(&conn, &mut keeper, 1, at(64));
        assert!(log_file() > 12_000_000, "{}", log_file());
    }

    /// A commit of `kb` KB through `keeper` at `now`.
    fn write(conn: &Connection, keeper: &mut LogKeeper, kb: i64, now: Instant) {
        conn.execute("INSERT INTO t VALUES (zeroblob(?1))", [kb * 1024])
            .unwrap();
        keeper.committed(conn, now);
    }

    fn file_limit(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "journal_size_limit", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn light_traffic_is_nudged_every_second_and_no_traffic_never() {
        let start = Instant::now();
        let mut policy = WalPolicy::new(LIMIT_FRAMES, start);
        assert_eq!(policy.after_commit(5, 0, start), Step::Nothing);
        let later = start + EVERY;
        assert_eq!(policy.after_commit(9, 0, later), Step::Nudge);
        assert_eq!(policy.after_commit(9, 0, later + EVERY * 5), Step::Nothing);
    }
}
