//! The single writer: one thread owns the write connection and commits requests in groups.
//!
//! Callers send a job over a channel and wait. The thread takes every job that is waiting (up to a cap),
//! runs them all in one transaction, commits once, and hands the answers to `durable`, which answers each
//! caller once the commit is synced to disk; meanwhile the thread goes on with the next batch. Under load
//! many requests share a commit and a sync; with no load a request is committed alone at once.
//! A request refused on its merits (a conflict, a forbidden transition) writes nothing and does not disturb
//! the others; a storage failure fails the whole batch, and every caller in it hears so.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use rusqlite::{CachedStatement, Connection};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::accepted_rows::{self, AcceptedRows};
use super::checkpoint::LogKeeper;
use super::clock::Clock;
use super::durable::{Committed, Syncer};
use super::error::{Result, StoreError};
use super::keys::{Merger, MessageKeys, NewKeys};
use super::opened::OpenedFile;
use super::outbox::Wanted;
use super::types::{MessageState, WriterStats};

/// Everything a write operation may use: the open transaction's connection, the time the operation runs
/// at, the id generator (owned by this thread so ids are monotonic), and the batch's tally of new messages
/// and statements. One per batch; the time is set for each operation.
pub(crate) struct WriteCtx<'a> {
    pub conn: &'a Connection,
    now: Cell<Timestamp>,
    ids: &'a uuid::ContextV7,
    /// Webhook event types to write to the outbox.
    wanted: &'a Wanted,
    created: &'a NewMessages,
    merger: &'a Merger,
    prepared: Prepared<'a>,
    /// Accepted messages whose rows are not written yet (see [`accepted_rows`]).
    held: RefCell<Vec<AcceptedRows>>,
    /// Rows written for [`WriteCtx::hold`] since the batch began: not the doing of the request that
    /// happened to need them written (see [`WriteCtx::changes`]).
    held_changes: Cell<u64>,
}

impl<'a> WriteCtx<'a> {
    pub fn new(
        conn: &'a Connection,
        now: Timestamp,
        ids: &'a uuid::ContextV7,
        wanted: &'a Wanted,
        created: &'a NewMessages,
        merger: &'a Merger,
    ) -> Self {
        WriteCtx {
            conn,
            now: Cell::new(now),
            ids,
            wanted,
            created,
            merger,
            prepared: Prepared {
                conn,
                statements: RefCell::default(),
            },
            held: RefCell::default(),
            held_changes: Cell::new(0),
        }
    }

    /// Rows the batch's requests have changed so far, less those of held-back accepts written on
    /// another request's turn: a request that failed and changed none of its own left nothing behind.
    pub fn changes(&self) -> u64 {
        self.conn.total_changes() - self.held_changes.get()
    }

    /// Holds an accepted message's rows back, to be written with the batch's others (see
    /// [`accepted_rows`]). Only an accept may hold rows back: the writer writes them before it runs any
    /// other request, and before the commit.
    pub fn hold(&self, rows: AcceptedRows) {
        self.held.borrow_mut().push(rows);
    }

    /// Writes the rows held back so far, so what follows finds them in the database.
    pub fn write_held(&self) -> rusqlite::Result<()> {
        let held = self.held.take();
        if held.is_empty() {
            return Ok(());
        }
        let before = self.conn.total_changes();
        let written = accepted_rows::write(self, &held);
        self.held_changes
            .set(self.held_changes.get() + (self.conn.total_changes() - before));
        written
    }

    /// The time the current operation runs at.
    pub fn now(&self) -> Timestamp {
        self.now.get()
    }

    /// Runs `use_it` on the statement for `sql`, prepared at its first use in this batch (see
    /// [`Prepared`]). For the statements every accept or send runs; `use_it` must not ask for `sql` again.
    pub fn with_statement<T>(
        &self,
        sql: &'static str,
        use_it: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let statement = self.prepared.get(sql)?;
        let mut statement = statement.borrow_mut();
        use_it(&mut statement)
    }

    /// Counts a message row just inserted, for the metrics' counts (see [`NewMessages`]), and keeps its
    /// keys for the look-ups.
    pub fn created(&self, id: Uuid, keys: MessageKeys, state: MessageState, modem: Option<&str>) {
        self.created.add(state, modem.unwrap_or(""));
        self.created.keys.borrow_mut().extend(keys.keys(id));
    }

    /// The messages that may have idempotency key `value` (see [`keys::idempotency`]), whose hash is
    /// `hash`: of this batch, committed but not merged, or merged.
    ///
    /// [`keys::idempotency`]: super::keys::idempotency
    pub fn idempotent(&self, value: &str, hash: i64) -> rusqlite::Result<Vec<Uuid>> {
        let recent = self.created.keys.borrow().idempotent(value, hash);
        match recent.or_else(|| self.merger.idempotent(value, hash)) {
            Some(id) => Ok(vec![id]),
            None if self.merger.may_be_merged(hash) => {
                super::idempotency_runs::ids(self.conn, hash)
            }
            None => Ok(Vec::new()),
        }
    }

    pub fn wants(&self, kind: crate::webhook::EventKind) -> bool {
        self.wanted.wants(kind)
    }

    /// The webhooks subscribed to `kind`: each gets its own outbox row.
    pub fn webhooks_for(
        &self,
        kind: crate::webhook::EventKind,
    ) -> impl Iterator<Item = &'a crate::webhook::Subscription> + use<'a> {
        let wanted: &'a Wanted = self.wanted;
        wanted
            .webhooks
            .iter()
            .filter(move |webhook| webhook.wants(kind))
    }

    /// The reply rules' label for an inbound message, when they gave the store one.
    pub fn verdict(&self, sender: &str, text: &str) -> Option<(Option<String>, bool)> {
        self.wanted
            .verdict
            .as_ref()
            .map(|verdict| verdict(sender, text))
    }

    /// A new time-ordered id stamped with the injected clock's time.
    pub fn new_id(&self) -> Uuid {
        let ms = self.now().as_millisecond().max(0);
        let ts = uuid::Timestamp::from_unix(
            self.ids,
            (ms / 1000) as u64,
            ((ms % 1000) * 1_000_000) as u32,
        );
        Uuid::new_v7(ts)
    }
}

/// The statements a batch has used through [`WriteCtx::with_statement`], kept out of rusqlite's cache
/// until the batch ends. Taking a statement from that cache hashes its whole text on the way out and
/// again on the way back, which for the three inserts of an accept was 5-7 % of the writer's time per
/// message; a batch finds its own by the text's address among a handful.
struct Prepared<'c> {
    conn: &'c Connection,
    statements: RefCell<Vec<(&'static str, Shared<'c>)>>,
}

type Shared<'c> = Rc<RefCell<CachedStatement<'c>>>;

impl<'c> Prepared<'c> {
    fn get(&self, sql: &'static str) -> rusqlite::Result<Shared<'c>> {
        let found = self
            .statements
            .borrow()
            .iter()
            .find(|(text, _)| std::ptr::eq(*text, sql))
            .map(|(_, statement)| statement.clone());
        if let Some(statement) = found {
            return Ok(statement);
        }
        let statement = Rc::new(RefCell::new(self.conn.prepare_cached(sql)?));
        self.statements.borrow_mut().push((sql, statement.clone()));
        Ok(statement)
    }
}

/// The messages a batch created, by state and modem, added to `message_counts` once before the commit.
///
/// Changes of state are counted by triggers, but a trigger on insert makes every insert a multi-row
/// statement, which SQLite guards with a statement journal: a copy of each page it touches. That was a
/// quarter of the writer's time per accepted message; one upsert per (state, modem) per batch is not.
#[derive(Default)]
pub(crate) struct NewMessages {
    counts: RefCell<HashMap<(MessageState, String), i64>>,
    /// Their keys, for the look-ups once the batch is committed.
    keys: RefCell<NewKeys>,
}

impl NewMessages {
    fn add(&self, state: MessageState, modem: &str) {
        *self
            .counts
            .borrow_mut()
            .entry((state, modem.to_owned()))
            .or_insert(0) += 1;
    }

    /// Adds the tally to `message_counts`, inside the batch's transaction.
    pub fn flush(&self, conn: &Connection) -> rusqlite::Result<()> {
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        for ((state, modem), n) in counts {
            conn.prepare_cached(
                "INSERT INTO message_counts (state, modem, n) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (state, modem) DO UPDATE SET n = n + excluded.n",
            )?
            .execute(rusqlite::params![state, modem, n])?;
        }
        Ok(())
    }
}

/// A queued write request, type-erased so one channel carries every kind.
pub(crate) trait Job: Send {
    /// Runs inside the batch transaction; returns whether it succeeded, and itself, holding what to tell
    /// the caller once the batch's fate is known.
    ///
    /// The request goes on to `durable`'s thread and is freed there, not here: the caller's thread
    /// allocated it, and glibc frees a block under the lock of the arena it came from, which that thread's
    /// own allocations take too. Freed on the writer, requests and their messages' memory made it wait on
    /// those locks; perf caught it asleep there at 60 % of its context switches under the store bench.
    fn run(self: Box<Self>, ctx: &WriteCtx<'_>) -> (bool, Box<dyn Finish>);
    /// Whether the request only accepts messages, which may leave their rows for the writer to write
    /// later (see [`WriteCtx::hold`]). Any other request finds the database as if none were held.
    fn accepts_only(&self) -> bool;
    /// The batch could not even start: tell the caller without running.
    fn abort(self: Box<Self>, error: StoreError);
}

/// A request's answer, given once its batch's fate is known (committed and synced, or not).
pub(crate) trait Finish: Send {
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Request<T, F> {
    /// Taken when the request runs.
    op: Option<F>,
    accepts_only: bool,
    /// What the operation returned, kept for [`Finish::finish`].
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Request<T, F>
where
    T: Send + 'static,
    F: FnOnce(&WriteCtx<'_>) -> Result<T> + Send + 'static,
{
    fn run(mut self: Box<Self>, ctx: &WriteCtx<'_>) -> (bool, Box<dyn Finish>) {
        let result = self
            .op
            .take()
            .map_or(Err(StoreError::RolledBack), |op| op(ctx));
        let ok = result.is_ok();
        self.result = Some(result);
        (ok, self)
    }

    fn accepts_only(&self) -> bool {
        self.accepts_only
    }

    fn abort(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send, F: Send> Finish for Request<T, F> {
    fn finish(mut self: Box<Self>, commit: Result<()>) {
        // A request that failed on its own keeps its own error; one that succeeded is only as good as the
        // commit. A caller that gave up waiting is not an error.
        let answer = match (self.result.take(), commit) {
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Err(error)), _) | (_, Err(error)) => Err(error),
            // Only a request that ran is finished, and running leaves a result.
            (None, Ok(())) => Err(StoreError::RolledBack),
        };
        let _ = self.reply.send(answer);
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    commits: AtomicU64,
    /// Batches refused since the last commit: a full disk refuses every one, and each would otherwise be
    /// an error line (60,000 in 20 s under load), crowding the journal out.
    failing: AtomicU64,
    /// Every batch refused since the store was opened, for `/metrics`.
    refused: AtomicU64,
    /// When "the store commits again" was last logged (ms since the Unix epoch): on a full disk a small
    /// commit still fits now and then, and each would say so.
    recovery_told_ms: AtomicU64,
    /// Woken when a batch is refused and when the store commits again after refusals: not at every
    /// commit, so it costs the writer nothing while all is well.
    changed: Notify,
}

/// The least time between two "the store commits again" lines.
const RECOVERY_TOLD_EVERY_MS: u64 = 60_000;

impl Stats {
    /// Returns the counts once `until` holds for them, checked now and after each refusal or recovery.
    pub async fn until(&self, until: impl Fn(&WriterStats) -> bool) -> WriterStats {
        crate::notified::until(&self.changed, || self.snapshot(), until).await
    }

    pub fn snapshot(&self) -> WriterStats {
        WriterStats {
            requests: self.requests.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
        }
    }
}

/// What the writer works with besides its connection.
pub(crate) struct Setting {
    pub clock: Arc<dyn Clock>,
    /// Webhook event types to write to the outbox, and the reply rules' labels.
    pub wanted: Arc<Wanted>,
    /// The database file opened: checked before every batch.
    pub file: OpenedFile,
    /// Syncs each commit and then answers its callers.
    pub syncer: Syncer,
}

/// The callers' end of the writer.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it stops when every `Writer` clone is dropped. It nudges
    /// the checkpointer and bounds the log through `log`.
    pub fn spawn(
        conn: Connection,
        setting: Setting,
        merger: Merger,
        max_batch: usize,
        log: LogKeeper,
    ) -> Result<Writer> {
        // Commits write the log; `syncer` makes them durable (see `durable`). Checkpoints still sync.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(StoreError::sqlite("setting synchronous=NORMAL"))?;
        // Room for every statement the writer runs, among them the fifteen of `many_rows` (three sizes
        // each for messages, parts, events, merged keys and idempotency runs): one pushed out of
        // rusqlite's cache (16 by default) is compiled again at its next use.
        conn.set_prepared_statement_cache_capacity(128);
        // Unbounded: every caller waits for its own answer, so what is queued is bounded by the callers.
        let (jobs, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                run(
                    conn,
                    rx,
                    &setting,
                    merger,
                    max_batch.max(1),
                    &thread_stats,
                    log,
                )
            })
            .map_err(|source| StoreError::Io {
                path: "store-writer thread".into(),
                source: Arc::new(source),
            })?;
        Ok(Writer { jobs, stats })
    }

    /// Queues `op` for the next batch at once (not when the future is first polled) and answers once that
    /// batch is committed (or failed). Writes are applied in the order they were queued, so a caller that
    /// queues two writes before awaiting either keeps their order and lets them share one commit.
    pub fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue(op, false)
    }

    /// As [`Writer::write`], for an `op` that does nothing but accept messages: it may hold their rows
    /// back (see [`WriteCtx::hold`]).
    pub fn accept<T, F>(&self, op: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue(op, true)
    }

    fn queue<T, F>(
        &self,
        op: F,
        accepts_only: bool,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .jobs
            .send(Box::new(Request {
                op: Some(op),
                accepts_only,
                result: None,
                reply,
            }))
            .map_err(|_| StoreError::Closed);
        async move {
            queued?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Box<dyn Job>>,
    setting: &Setting,
    mut merger: Merger,
    max_batch: usize,
    stats: &Stats,
    mut log: LogKeeper,
) {
    let ids = uuid::ContextV7::new();
    continue_ids(&conn, &ids);
    let mut batch = Vec::with_capacity(max_batch);
    log.watch(&mut conn);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        commit_batch(&conn, setting, &ids, &mut merger, batch.drain(..), stats);
        stats.requests.fetch_add(count, Ordering::Relaxed);
        log.committed(&conn, std::time::Instant::now());
    }
    tracing::debug!("store writer stopped: every handle dropped");
}

/// Starts `ids` after the newest message id stored, so ids keep growing across a restart even when the
/// clock is now behind the last run's (an RTC-less box booting before NTP, a clock stepped back): the list's
/// cursor (`after=<id>`) and the export's resume go by id, and would skip messages created with smaller ids.
/// Within a run the context keeps them monotonic itself: an earlier time reuses the last one.
fn continue_ids(conn: &Connection, ids: &uuid::ContextV7) {
    let newest = conn
        .query_row("SELECT max(id) FROM messages", [], |row| {
            row.get::<_, Option<String>>(0)
        })
        .ok()
        .flatten()
        .and_then(|id| Uuid::parse_str(&id).ok())
        .and_then(|id| id.get_timestamp());
    if let Some(newest) = newest {
        let (seconds, nanos) = newest.to_unix();
        // A millisecond on, so the context's fresh counter cannot fall below the newest id's.
        let after = u128::from(seconds) * 1_000_000_000 + u128::from(nanos) + 1_000_000;
        let _ = uuid::Timestamp::from_unix(
            ids,
            u64::try_from(after / 1_000_000_000).unwrap_or(u64::MAX),
            (after % 1_000_000_000) as u32,
        );
    }
}

fn commit_batch(
    conn: &Connection,
    setting: &Setting,
    ids: &uuid::ContextV7,
    merger: &mut Merger,
    batch: impl Iterator<Item = Box<dyn Job>>,
    stats: &Stats,
) {
    let Setting {
        clock,
        wanted,
        file,
        syncer,
    } = setting;
    let began = match (file.changed(), syncer.failed()) {
        // Whatever is committed now would be in a file no later start reads.
        (Some(what), _) => Err(StoreError::FileChanged {
            path: file.path.clone(),
            what,
        }),
        (None, Some(failed)) => Err(failed),
        (None, None) => conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::sqlite("beginning a transaction")),
    };
    if let Err(error) = began {
        // Counted before any caller hears of it, so a caller that saw its 503 finds it in `/metrics`.
        let jobs: Vec<_> = batch.collect();
        refused(stats, &error, jobs.len());
        jobs.into_iter().for_each(|job| job.abort(error.clone()));
        return;
    }
    let mut finishes = Vec::new();
    // Requests after one that broke the batch, answered once the refusal is counted.
    let mut unrun = Vec::new();
    let mut broken = None;
    let created = NewMessages::default();
    let ctx = WriteCtx::new(conn, clock.now(), ids, wanted, &created, merger);
    for job in batch {
        if broken.is_none() && !job.accepts_only() {
            broken = held_written(&ctx);
        }
        if broken.is_some() {
            unrun.push(job);
            continue;
        }
        ctx.now.set(clock.now());
        let before = ctx.changes();
        let (ok, finish) = job.run(&ctx);
        finishes.push(finish);
        // Operations check everything that can refuse a request before they write, so a refused request
        // changed nothing and the batch goes on. One that failed halfway (an SQLite error) may have left
        // part of its rows: then the whole batch is rolled back, as it is when SQLite itself abandons the
        // transaction (disk full, I/O error). Savepoints per request would avoid that, but they cost more
        // than the rest of the batch together.
        if (!ok && ctx.changes() != before) || conn.is_autocommit() {
            broken = Some(StoreError::RolledBack);
        }
    }
    if broken.is_none() {
        broken = held_written(&ctx);
    }
    // Its statements go back to rusqlite's cache, and the merger is free to move on.
    drop(ctx);
    let keys = created.keys.take();
    let committed = match broken {
        // A rolled-back batch's tally and keys are dropped with it.
        Some(error) => Err(error),
        None => created
            .flush(conn)
            .and_then(|()| merger.slice(conn, keys.len()))
            .and_then(|slice| conn.execute_batch("COMMIT").map(|()| slice))
            .map_err(StoreError::sqlite("committing a batch")),
    };
    let (commit, slice) = match committed {
        Ok(slice) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            let refused = stats.failing.swap(0, Ordering::Relaxed);
            if refused > 0 {
                stats.changed.notify_waiters();
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let told = stats.recovery_told_ms.load(Ordering::Relaxed);
                if now_ms.saturating_sub(told) >= RECOVERY_TOLD_EVERY_MS {
                    stats.recovery_told_ms.store(now_ms, Ordering::Relaxed);
                    tracing::warn!(refused, "the store commits again");
                } else {
                    tracing::debug!(refused, "the store commits again");
                }
            }
            (Ok(()), Some(slice))
        }
        Err(error) => {
            refused(stats, &error, finishes.len() + unrun.len());
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            unrun.into_iter().for_each(|job| job.abort(error.clone()));
            (Err(error), None)
        }
    };
    syncer.hand_over(Committed { finishes, commit });
    // The next batch is the first to look the keys up.
    if let Some(slice) = slice {
        merger.committed(slice, keys);
    }
}

/// Writes the rows the batch's accepts held back; what breaks the batch if that failed (a full disk:
/// every request in it hears so, those that ran before as well).
fn held_written(ctx: &WriteCtx<'_>) -> Option<StoreError> {
    ctx.write_held()
        .err()
        .map(StoreError::sqlite("writing accepted messages"))
}

/// Counts a batch the store refused, and logs the first refusal in a row, then the 2nd, 4th, 8th...: the
/// journal shows that it goes on, not each one.
fn refused(stats: &Stats, error: &StoreError, requests: usize) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    let refused = stats.failing.fetch_add(1, Ordering::Relaxed) + 1;
    stats.changed.notify_waiters();
    if refused.is_power_of_two() {
        tracing::error!(%error, requests, refused, "batch not committed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::store::checkpoint::LogKeeper;
    use crate::store::clock::SystemClock;
    use crate::store::keys::MergePolicy;
    use crate::store::migrations;

    /// A writer on a real database whose commits are "synced" by `fdatasync` on /dev/null, which fails
    /// (EINVAL) as a disk that lost the pages does.
    fn writer_with_failing_syncs(dir: &std::path::Path) -> Writer {
        let path = dir.join("gw.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        migrations::migrate(&mut conn, migrations::LATEST).unwrap();
        let merger = Merger::start(&conn, MergePolicy::default()).unwrap();
        let (syncer, _durable) = Syncer::spawn("/dev/null".into()).unwrap();
        let setting = Setting {
            clock: Arc::new(SystemClock),
            wanted: Arc::new(Wanted {
                webhooks: Vec::new(),
                verdict: None,
            }),
            file: OpenedFile::new(path),
            syncer,
        };
        Writer::spawn(conn, setting, merger, 64, LogKeeper::new(None, 1_000)).unwrap()
    }

    /// A commit whose sync failed is not acknowledged, and nothing after it is even run: the pages the
    /// failed sync was to write may be gone, so the store refuses writes until a restart reads back what
    /// the log holds.
    #[tokio::test]
    async fn after_a_failed_sync_no_write_is_acknowledged_or_run() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_failing_syncs(dir.path());
        let probe = |ctx: &WriteCtx<'_>| {
            ctx.conn
                .execute(
                    "INSERT OR REPLACE INTO store_probe (id, at) VALUES (1, 'now')",
                    [],
                )
                .map_err(StoreError::sqlite("probing"))
        };
        let first = writer.write(probe).await;
        assert!(matches!(first, Err(StoreError::Io { .. })), "{first:?}");

        let ran = Arc::new(AtomicBool::new(false));
        let ran_here = ran.clone();
        let second = writer
            .write(move |ctx| {
                ran_here.store(true, Ordering::SeqCst);
                probe(ctx)
            })
            .await;
        assert!(matches!(second, Err(StoreError::Io { .. })), "{second:?}");
        assert!(
            !ran.load(Ordering::SeqCst),
            "a write ran after the failed sync"
        );
        // Counted before its callers are told.
        let stats = writer.stats.snapshot();
        assert_eq!((stats.commits, stats.refused), (1, 1), "{stats:?}");
    }
}
