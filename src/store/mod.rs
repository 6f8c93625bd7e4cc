//! The durable store: SQLite in WAL mode, one writer thread with group commit whose commits are synced
//! (`durable`) before anyone hears of them, readers on their own connections.
//!
//! # Layout
//! - [`types`]: messages, parts, events and their states; what callers hand in and get back.
//! - [`migrations`]: the versioned schema.
//! - `writer`: the thread that owns the write connection and commits requests in groups; `durable`: the
//!   thread that syncs the commits and answers their callers; `keys`: the look-ups by number, reference
//!   and idempotency key.
//! - `write`, `inbound`, `records`: the operations the writer runs (outbound life cycle; inbound reassembly
//!   and delivery reports; modems, opt-outs, webhooks).
//! - `read`: queries; `recovery`: what a crash left behind, settled at open.
//!
//! Every method that changes something returns only after its change is on disk; an error means nothing of
//! it was committed (the API answers 503 for [`StoreError::is_unavailable`] errors).

mod accepted_rows;
mod checkpoint;
mod clock;
mod durable;
mod error;
mod inbound;
pub mod migrations;
mod opened;
mod outbox;
pub use outbox::Verdict;
mod idempotency_runs;
mod keys;
mod many_rows;
mod merged_hashes;
pub use keys::MergePolicy;
mod read;
mod records;
mod recovery;
mod retention;
mod rows;
pub mod types;
mod write;
mod writer;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;
use uuid::Uuid;

pub use clock::{Clock, ManualClock, Sleep, SystemClock, TokioClock};
pub use error::{Result, StoreError};
pub use read::{
    DailyCounts, ModemRecord, ModemSend, OptOutAuditEntry, OptOutRecord, RecentSend, Totals,
    WebhookBacklog,
};
pub use records::OptOutChange;
pub use recovery::Recovery;
pub use retention::{PruneCursor, Pruned};
pub use types::*;
pub(crate) use write::OPTED_OUT;

use crate::modem::job::ModemIdentity;
use crate::webhook::Subscription;

/// How to open the store.
#[derive(Clone)]
pub struct OpenOptions {
    /// Where timestamps come from.
    pub clock: Arc<dyn Clock>,
    /// Put parts a crash left `submitting` back in the queue instead of marking them `unknown`. Off by
    /// default: the recipient may then get the message twice.
    pub resend_submitting: bool,
    /// Most requests committed in one transaction.
    pub max_batch: usize,
    /// How long after sending a part a delivery report may still be matched to it.
    pub report_window: Duration,
    /// A quota on the database size in pages (`PRAGMA max_page_count`); writes beyond it fail as on a
    /// full disk. `None`: only the disk limits it.
    pub max_pages: Option<u32>,
    /// How long a write waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// The zone whose midnight starts a new day for per-SIM daily caps (prepaid plans count local days).
    pub cap_zone: TimeZone,
    /// The `[[webhooks]]`: each event one subscribes to is written to the outbox, once per such webhook,
    /// with the state change that causes it; none by default.
    pub webhooks: Vec<Subscription>,
    /// How `message.received` labels a reply (intent, needs_agent); unlabelled (`needs_agent`) when absent.
    pub inbound_verdict: Option<Verdict>,
    /// Frames (pages) in the write-ahead log at which the writer completes a checkpoint itself between two
    /// batches, so the log starts over (see `checkpoint`); also the size the log file is cut back to.
    /// Default 65,536: 256 MB (`[storage] wal_limit_mb`).
    pub wal_limit_frames: u32,
    /// Run the checkpointer thread (on by default). Off, only the writer's catch-up at
    /// `wal_limit_frames` bounds the log: tests use that to watch it alone.
    pub background_checkpoints: bool,
    /// When the look-ups by number, reference and idempotency key take in new messages (see `keys`).
    pub key_merge: MergePolicy,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            clock: Arc::new(SystemClock),
            resend_submitting: false,
            max_batch: 1024,
            report_window: Duration::from_secs(3 * 24 * 3600),
            max_pages: None,
            busy_timeout: Duration::from_secs(5),
            cap_zone: TimeZone::system(),
            webhooks: Vec::new(),
            inbound_verdict: None,
            wal_limit_frames: checkpoint::LIMIT_FRAMES,
            background_checkpoints: true,
            key_merge: MergePolicy::default(),
        }
    }
}

/// A handle on the store; cheap to clone, shared by the API, the dispatcher and the workers' glue.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pub(crate) writer: writer::Writer,
    /// Waits for what is committed to be durable, before acting on a read (see `durable`).
    durable: durable::Durable,
    readers: read::Readers,
    /// The database's path (for its size on disk) and the file opened there: a file deleted or put in
    /// its place later is not it.
    file: opened::OpenedFile,
    clock: Arc<dyn Clock>,
    report_window: Duration,
    cap_zone: TimeZone,
    recovery: Recovery,
}

/// Free space on the database's file system below which the store does not count as writable (see
/// [`Store::check`]): room for a few batches of a campaign. Less, and writes may fail at any moment.
const ROOM: u64 = 16 * 1024 * 1024;

/// See [`Store::disk_usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub database: u64,
    pub log: u64,
}

/// A day for the per-SIM daily caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapDay {
    /// `YYYY-MM-DD` in the cap zone.
    pub day: String,
    /// When the next day starts.
    pub ends: Timestamp,
}

impl Store {
    /// Opens (creating with mode 0600 if needed) and migrates the database at `path`, then recovers from
    /// a crash. Blocking: call it at start-up.
    pub fn open(path: impl AsRef<Path>, options: OpenOptions) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let open_fail = |source| StoreError::Open {
            path: path.clone(),
            source: Arc::new(source),
        };
        let mut conn = Connection::open(&path).map_err(open_fail)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_fail)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{}: journal_mode is {mode}, WAL is required",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_fail)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_fail)?;
        // Savepoints (one per request in a batch) journal pages to a temporary file unless told otherwise:
        // keep that in memory, and keep hot index pages cached.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(open_fail)?;
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(open_fail)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_fail)?;
        // `id IN rarray(?)`: the look-ups by key hand SQLite the ids `keys` found.
        rusqlite::vtab::array::load_module(&conn).map_err(open_fail)?;
        migrations::migrate(&mut conn, migrations::LATEST)?;
        if let Some(pages) = options.max_pages {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(open_fail)?;
        }
        let wanted = Arc::new(outbox::Wanted {
            webhooks: options.webhooks,
            verdict: options.inbound_verdict,
        });
        let merger = keys::Merger::start(&conn, options.key_merge)?;
        let recovery = recovery::recover(
            &mut conn,
            options.clock.now(),
            options.resend_submitting,
            &wanted,
            &merger,
        )?;
        if !recovery.unknown.is_empty() || !recovery.requeued.is_empty() {
            tracing::warn!(
                unknown = recovery.unknown.len(),
                requeued = recovery.requeued.len(),
                "recovered messages left in flight at the last stop (a crash, or a stop the store could not record)"
            );
        }
        let checkpointer = if options.background_checkpoints {
            let checkpointer = Connection::open(&path).map_err(open_fail)?;
            checkpointer
                .busy_timeout(options.busy_timeout)
                .map_err(open_fail)?;
            Some(checkpoint::spawn(checkpointer)?)
        } else {
            None
        };
        let file = opened::OpenedFile::new(path.clone());
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let (syncer, durable) = durable::Syncer::spawn(wal.into())?;
        let writer = writer::Writer::spawn(
            conn,
            writer::Setting {
                clock: options.clock.clone(),
                wanted,
                file: file.clone(),
                syncer,
            },
            merger,
            options.max_batch,
            checkpoint::LogKeeper::new(checkpointer, options.wal_limit_frames),
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                writer,
                durable,
                readers: read::Readers::new(path.clone()),
                file,
                clock: options.clock,
                report_window: options.report_window,
                cap_zone: options.cap_zone,
                recovery,
            }),
        })
    }

    /// Bytes on disk now: the database file and its write-ahead log (0 for a file not there). The
    /// admin's measure of growth, and of what retention gives back to new messages.
    pub fn disk_usage(&self) -> DiskUsage {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut log = self.inner.file.path.clone().into_os_string();
        log.push("-wal");
        DiskUsage {
            database: size(&self.inner.file.path),
            log: size(Path::new(&log)),
        }
    }

    /// Whether the store can take writes, as far as it knows without writing: the file at its path is the
    /// one it opened, its last batch was committed (not refused for a full disk or an I/O error), and its
    /// disk has 16 MiB free. [`probe`](Self::probe) learns when a refusing store takes writes again.
    pub fn check(&self) -> Result<()> {
        if let Some(what) = self.inner.file.changed() {
            return Err(StoreError::FileChanged {
                path: self.inner.file.path.clone(),
                what,
            });
        }
        match self.writer_stats().failing {
            0 => self.room(),
            refused => Err(StoreError::Unwritable { refused }),
        }
    }

    /// Whether the database's file system has [`ROOM`] free (when it can tell).
    fn room(&self) -> Result<()> {
        let dir = match self.inner.file.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let Ok(fs) = nix::sys::statvfs::statvfs(dir) else {
            return Ok(());
        };
        // 64 bits here, 32 on a 32-bit ARM board.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
        if free < ROOM {
            return Err(StoreError::DiskFull {
                free_kib: free / 1024,
            });
        }
        Ok(())
    }

    /// Writes one small row: a commit that succeeds ends [`check`](Self::check)'s `Unwritable`. Not while
    /// the disk has less than 16 MiB free: on a full disk a row that small still fits in the log's spare
    /// room, and the store would read as writable again while every real batch is refused.
    pub async fn probe(&self) -> Result<()> {
        self.room()?;
        self.inner
            .writer
            .write(|ctx| {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO store_probe (id, at) VALUES (1, ?1) \
                         ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    )
                    .and_then(|mut probe| probe.execute([ctx.now().to_string()]))
                    .map(drop)
                    .map_err(StoreError::sqlite("probing for writes"))
            })
            .await
    }

    /// What recovery did when this store was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The clock this store was opened with (the dispatcher shares it).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The cap day containing `at`.
    pub fn cap_day(&self, at: Timestamp) -> CapDay {
        let local = at.to_zoned(self.inner.cap_zone.clone());
        let date = local.date();
        let ends = date
            .tomorrow()
            .and_then(|d| d.to_zoned(self.inner.cap_zone.clone()))
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX);
        CapDay {
            day: date.to_string(),
            ends,
        }
    }

    /// How well group commit is batching.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats.snapshot()
    }

    /// The writer's counts once `until` holds for them: for waiting until the store refuses writes, or
    /// takes them again, without polling (they are checked at each refusal and each recovery).
    pub async fn writer_stats_until(&self, until: impl Fn(&WriterStats) -> bool) -> WriterStats {
        self.inner.writer.stats.until(until).await
    }

    // ---- outbound life cycle ----

    /// Stores a new outbound message durably. A repeat of an idempotency key with the same body returns
    /// the original (`duplicate: true`); with a different body, [`StoreError::IdempotencyConflict`].
    pub async fn accept(&self, message: NewMessage) -> Result<Accepted> {
        let request = Arc::new(write::Fingerprinted::new(message)?);
        // The request comes back to be freed on this thread, which allocated it (see `Fingerprinted`).
        let (accepted, _spent_here) = self
            .inner
            .writer
            .accept(move |ctx| write::accept(ctx, &request).map(|accepted| (accepted, request)))
            .await?;
        Ok(accepted)
    }

    /// What an earlier request with the same API key and `Idempotency-Key` created, creating nothing:
    /// `None` when the key is new (or there is none), [`StoreError::IdempotencyConflict`] when the body
    /// differs. For answering a repeat of a request the gateway would now refuse.
    pub async fn replay(&self, message: NewMessage) -> Result<Option<Accepted>> {
        let request = write::Fingerprinted::new(message)?;
        self.inner
            .writer
            .write(move |ctx| write::replay(ctx, &request))
            .await
    }

    /// Several messages in one transaction, a result for each; the outer error means none was committed.
    pub async fn accept_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Result<Accepted>>> {
        let requests: Vec<_> = messages
            .into_iter()
            .map(|message| write::Fingerprinted::new(message).map(Arc::new))
            .collect();
        let (results, _spent_here) = self
            .inner
            .writer
            .accept(move |ctx| {
                let mut results = Vec::with_capacity(requests.len());
                let mut spent = Vec::with_capacity(requests.len());
                for request in requests {
                    let before = ctx.changes();
                    let result = request.and_then(|request| {
                        let accepted = write::accept(ctx, &request);
                        spent.push(request);
                        accepted
                    });
                    match result {
                        // Failed halfway: the whole request (and its batch) is rolled back.
                        Err(error) if ctx.changes() != before => return Err(error),
                        result => results.push(result),
                    }
                }
                Ok((results, spent))
            })
            .await?;
        Ok(results)
    }

    /// Queued/scheduled → sending on `modem` (`note` says why this modem, e.g. a fallback); returns the
    /// parts still to send, in order.
    pub async fn claim(
        &self,
        id: Uuid,
        modem: &str,
        note: Option<String>,
    ) -> Result<Vec<PendingPart>> {
        let modem = modem.to_owned();
        self.inner
            .writer
            .write(move |ctx| write::claim(ctx, id, &modem, note.as_deref()))
            .await
    }

    /// Durable before the worker writes the PDU (the `Submitting` ack), unless the message was withdrawn
    /// (see [`Submission`]; `send_by` is the end of the recipient's sending window). Like the other writes
    /// a modem causes, queued when called, so the event hub keeps each modem's order without waiting for
    /// each.
    pub fn part_submitting(
        &self,
        id: Uuid,
        part: u16,
        modem: &str,
        send_by: Option<Timestamp>,
    ) -> impl Future<Output = Result<Submission>> + Send + 'static {
        let modem = modem.to_owned();
        self.inner
            .writer
            .write(move |ctx| write::part_submitting(ctx, id, part, &modem, send_by))
    }

    /// The network took the part; returns the message state after it (sent once every part is). Counts
    /// towards the modem's daily cap.
    pub fn part_sent(
        &self,
        id: Uuid,
        part: u16,
        modem: &str,
        tp_mr: u8,
    ) -> impl Future<Output = Result<MessageState>> + Send + 'static {
        self.part_sent_at(id, part, modem, tp_mr, None)
    }

    /// [`part_sent`](Self::part_sent) for a part the network took at `at` (`None`: now), recorded late
    /// because the store refused it then: the log keeps when it went out, which shows it inside the
    /// recipient's sending window, not when the disk had room again.
    pub fn part_sent_at(
        &self,
        id: Uuid,
        part: u16,
        modem: &str,
        tp_mr: u8,
        at: Option<Timestamp>,
    ) -> impl Future<Output = Result<MessageState>> + Send + 'static {
        let modem = modem.to_owned();
        let zone = self.inner.cap_zone.clone();
        self.inner.writer.write(move |ctx| {
            let at = at.unwrap_or(ctx.now());
            let day = at.to_zoned(zone).date().to_string();
            write::part_sent(ctx, id, part, &modem, tp_mr, &day, at)
        })
    }

    /// A part failed: back to the queue at `retry_at`, or the message fails.
    pub async fn part_failed(&self, failure: PartFailure) -> Result<MessageState> {
        self.inner
            .writer
            .write(move |ctx| write::part_failed(ctx, &failure))
            .await
    }

    /// The part may or may not have been sent: the message becomes `unknown`.
    pub async fn part_unknown(&self, id: Uuid, part: u16, modem: &str, reason: &str) -> Result<()> {
        let (modem, reason) = (modem.to_owned(), reason.to_owned());
        self.inner
            .writer
            .write(move |ctx| write::part_unknown(ctx, id, part, &modem, &reason))
            .await
    }

    /// The job came back unsent: sending → queued, not before `retry_at` when given; `unknown` instead if
    /// a part was submitting and `handback` cannot rule out that it went out.
    pub async fn requeue(
        &self,
        id: Uuid,
        modem: &str,
        reason: &str,
        handback: Handback,
        retry_at: Option<Timestamp>,
    ) -> Result<Requeued> {
        let (modem, reason) = (modem.to_owned(), reason.to_owned());
        self.inner
            .writer
            .write(move |ctx| write::requeue(ctx, id, &modem, &reason, handback, retry_at))
            .await
    }

    /// Queued/scheduled → cancelled; anything else is an [`StoreError::InvalidTransition`].
    pub async fn cancel(&self, id: Uuid, actor: &str) -> Result<()> {
        let actor = actor.to_owned();
        self.inner
            .writer
            .write(move |ctx| write::close_pending(ctx, id, MessageState::Cancelled, &actor, None))
            .await
    }

    /// Queued/scheduled → expired (its `expires_at` passed before it could be sent).
    pub async fn expire(&self, id: Uuid) -> Result<()> {
        self.inner
            .writer
            .write(move |ctx| {
                write::close_pending(
                    ctx,
                    id,
                    MessageState::Expired,
                    "dispatcher",
                    Some(write::EXPIRED),
                )
            })
            .await
    }

    /// Deletes a chunk of what was written before `cutoff` (see `retention`), going on from `cursor`;
    /// call again with [`Pruned::next`] until it is `None`.
    pub async fn prune(
        &self,
        cutoff: Timestamp,
        cursor: PruneCursor,
        chunk: usize,
    ) -> Result<Pruned> {
        self.inner
            .writer
            .write(move |ctx| retention::prune(ctx, cutoff, cursor, chunk))
            .await
    }

    /// Holds a pending message until `until` (quiet hours, caps), naming the rule.
    pub async fn hold(
        &self,
        id: Uuid,
        until: Timestamp,
        reason: &str,
        rule: Option<&str>,
    ) -> Result<()> {
        let (reason, rule) = (reason.to_owned(), rule.map(str::to_owned));
        self.inner
            .writer
            .write(move |ctx| write::hold(ctx, id, until, &reason, rule.as_deref()))
            .await
    }

    /// A rule refuses a pending message for good: it fails with `code`.
    pub async fn block(
        &self,
        id: Uuid,
        code: &str,
        reason: &str,
        rule: Option<&str>,
    ) -> Result<()> {
        let (code, reason, rule) = (code.to_owned(), reason.to_owned(), rule.map(str::to_owned));
        self.inner
            .writer
            .write(move |ctx| write::block(ctx, id, &code, &reason, rule.as_deref()))
            .await
    }

    /// Appends an event without changing state (e.g. why the sticky modem was passed over).
    pub async fn note(&self, id: Uuid, actor: &str, kind: &str, detail: &str) -> Result<()> {
        let (actor, kind, detail) = (actor.to_owned(), kind.to_owned(), detail.to_owned());
        self.inner
            .writer
            .write(move |ctx| write::note(ctx, id, &actor, &kind, &detail))
            .await
    }

    /// Appends an event by the collections rules naming the rule that decided (e.g. an opt-out recorded
    /// from this inbound message), so "why" can be answered from the message's history.
    pub async fn rule_event(&self, id: Uuid, kind: &str, detail: &str, rule: &str) -> Result<()> {
        let (kind, detail, rule) = (kind.to_owned(), detail.to_owned(), rule.to_owned());
        self.inner
            .writer
            .write(move |ctx| write::rule_event(ctx, id, &kind, &detail, &rule))
            .await
    }

    // ---- inbound ----

    /// Stores an inbound part (raw PDU kept); returns the message once every part is in. Re-reading a
    /// stored PDU changes nothing.
    pub fn record_inbound(
        &self,
        part: InboundPart,
    ) -> impl Future<Output = Result<InboundOutcome>> + Send + 'static {
        self.inner
            .writer
            .write(move |ctx| inbound::record_inbound(ctx, &part))
    }

    /// Releases concatenated inbound messages still missing parts `after` their first part arrived, as
    /// received with what came (a `[…]` for each missing part, the gap named in `error`); returns them
    /// for the reply rules.
    pub async fn release_incomplete(&self, after: std::time::Duration) -> Result<Vec<Message>> {
        self.inner
            .writer
            .write(move |ctx| {
                let cutoff = ctx
                    .now()
                    .checked_sub(
                        jiff::SignedDuration::try_from(after).unwrap_or(jiff::SignedDuration::MAX),
                    )
                    .unwrap_or(jiff::Timestamp::MIN);
                inbound::release_incomplete(ctx, cutoff)
            })
            .await
    }

    /// Received messages the reply rules have not finished with (a crash came between storing one and
    /// its rules), oldest first: the daemon runs the rules on them at start.
    pub async fn rules_pending(&self) -> Result<Vec<Message>> {
        self.read(read::rules_pending).await
    }

    /// The reply rules are done with message `id`.
    pub async fn rules_applied(&self, id: Uuid) -> Result<()> {
        self.inner
            .writer
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached("DELETE FROM inbound_rules_pending WHERE message_id = ?1")
                    .and_then(|mut st| st.execute([id.to_string()]))
                    .map(drop)
                    .map_err(StoreError::sqlite("recording that the reply rules ran"))
            })
            .await
    }

    /// Matches a delivery report by modem + TP-MR + recipient within the report window.
    pub fn record_report(
        &self,
        report: ReportIn,
    ) -> impl Future<Output = Result<ReportOutcome>> + Send + 'static {
        self.record_report_at(report, None)
    }

    /// [`record_report`](Self::record_report) for a report that came at `at` (`None`: now), recorded late
    /// because the store refused it then: its part's `reported_at` (the message's `delivered_at`) is when
    /// it came.
    pub fn record_report_at(
        &self,
        report: ReportIn,
        at: Option<Timestamp>,
    ) -> impl Future<Output = Result<ReportOutcome>> + Send + 'static {
        let window = self.inner.report_window;
        self.inner
            .writer
            .write(move |ctx| inbound::record_report(ctx, &report, window, at))
    }

    // ---- records ----

    pub fn upsert_modem(
        &self,
        id: &str,
        identity: ModemIdentity,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let id = id.to_owned();
        self.inner
            .writer
            .write(move |ctx| records::upsert_modem(ctx, &id, &identity))
    }

    pub async fn set_optout(&self, change: OptOutChange) -> Result<()> {
        self.inner
            .writer
            .write(move |ctx| records::set_optout(ctx, &change))
            .await
    }

    // ---- readers ----

    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Folds the write-ahead log into the database file and empties it, for a clean shutdown: the next
    /// start then need not read the log back (a 660 MB log after a bulk load cost ~1 s of start). Returns
    /// whether it completed; a reader still busy leaves the rest to the next start, which is only slower.
    /// The checkpointer thread may be in the middle of its own (passive) checkpoint, which makes this one
    /// answer "busy" at once: it is tried again for up to a second.
    pub async fn checkpoint(&self) -> Result<bool> {
        self.read(|conn| {
            for _ in 0..50 {
                let busy: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                    .map_err(StoreError::sqlite("checkpointing the write-ahead log"))?;
                if busy == 0 {
                    return Ok(true);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(false)
        })
        .await
    }

    /// A message with its parts and event history.
    pub async fn get(&self, id: Uuid) -> Result<Option<MessageDetail>> {
        self.read(move |conn| read::message(conn, id)).await
    }

    pub async fn list(&self, filter: ListFilter) -> Result<Page> {
        self.read(move |conn| read::list(conn, &filter)).await
    }

    /// Both directions with `number`, in time order.
    pub async fn conversation(
        &self,
        number: &str,
        limit: Option<u32>,
        after: Option<String>,
    ) -> Result<Page> {
        let filter = ListFilter {
            peer: Some(number.to_owned()),
            limit,
            after,
            ..ListFilter::default()
        };
        self.list(filter).await
    }

    /// Every outbound message still to send, in id order: for tests and tools (the dispatcher pages).
    pub async fn queue(&self) -> Result<Vec<QueueEntry>> {
        self.read(read::queue).await
    }

    /// Up to `limit` messages due at `now`, in the dispatcher's order (priority, then age), strictly after
    /// `after` (from the head when `None`): the dispatcher's next page.
    pub async fn queue_due(
        &self,
        now: Timestamp,
        after: Option<QueueKey>,
        limit: usize,
    ) -> Result<Vec<PagedEntry>> {
        self.read(move |conn| read::queue_due(conn, now, after, limit))
            .await
    }

    /// Up to `limit` messages whose due time fell between `from` and `now` (both included), at or before
    /// `upto` in the dispatcher's order (`None`: anywhere), in that order.
    pub async fn queue_became_due(
        &self,
        from: Timestamp,
        now: Timestamp,
        upto: Option<QueueKey>,
        limit: usize,
    ) -> Result<Vec<PagedEntry>> {
        self.read(move |conn| read::queue_became_due(conn, from, now, upto, limit))
            .await
    }

    /// The `limit` messages due soonest after `now`, in (due time, id) order.
    pub async fn queue_later(&self, now: Timestamp, limit: usize) -> Result<Vec<PagedEntry>> {
        self.read(move |conn| read::queue_later(conn, now, limit))
            .await
    }

    /// Up to `limit` pending messages whose `expires_at` has passed (to expire those not in memory).
    pub async fn overdue(&self, now: Timestamp, limit: usize) -> Result<Vec<Uuid>> {
        self.read(move |conn| read::overdue(conn, now, limit)).await
    }

    /// Parts sent on the cap day containing `at`, per SIM.
    pub async fn daily_sent(&self, at: Timestamp) -> Result<DailyCounts> {
        let day = self.cap_day(at).day;
        self.read(move |conn| read::daily_sent(conn, &day)).await
    }

    /// Messages the modems sent since `since`, oldest first.
    pub async fn modem_sends_since(&self, since: Timestamp) -> Result<Vec<ModemSend>> {
        self.read(move |conn| read::modem_sends_since(conn, since))
            .await
    }

    /// The modem each of `recipients` last heard from (those that heard from none are absent).
    pub async fn last_modems_of(
        &self,
        recipients: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>> {
        self.read(move |conn| read::last_modems_of(conn, &recipients))
            .await
    }

    pub async fn sends_since(&self, recipient: &str, since: Timestamp) -> Result<u32> {
        let recipient = recipient.to_owned();
        self.read(move |conn| read::sends_since(conn, &recipient, since))
            .await
    }

    pub async fn is_opted_out(&self, number: &str) -> Result<bool> {
        let number = number.to_owned();
        self.read(move |conn| read::is_opted_out(conn, &number))
            .await
    }

    /// Every number currently opted out, with its latest audit entry.
    pub async fn optouts(&self) -> Result<Vec<OptOutRecord>> {
        self.read(read::optouts).await
    }

    /// The opt-out audit trail, oldest first: every number's, or `number`'s.
    pub async fn optout_audit(&self, number: Option<String>) -> Result<Vec<OptOutAuditEntry>> {
        self.read(move |conn| read::optout_audit(conn, number.as_deref()))
            .await
    }

    /// When the message that `api_key` sent with `Idempotency-Key` `key` was accepted, if one was.
    pub async fn accepted_at(&self, api_key: &str, key: &str) -> Result<Option<Timestamp>> {
        let (api_key, key) = (api_key.to_owned(), key.to_owned());
        self.read(move |conn| {
            let value = keys::idempotency(&api_key, &key);
            keys::ids(conn, keys::KeyKind::Idempotency, &value)
                .and_then(|ids| {
                    rusqlite::OptionalExtension::optional(
                        conn.prepare_cached(
                            "SELECT created_at FROM messages WHERE id IN rarray(?1) AND api_key = ?2 \
                             AND idempotency_key = ?3",
                        )?
                        .query_row(rusqlite::params![ids, api_key, key], |row| rows::ts(row, 0)),
                    )
                })
                .map_err(StoreError::sqlite("looking up an idempotency key"))
        })
        .await
    }

    /// `number`'s opt-out record, if it is opted out.
    pub async fn optout(&self, number: &str) -> Result<Option<OptOutRecord>> {
        let number = number.to_owned();
        self.read(move |conn| read::optout(conn, &number)).await
    }

    /// Sends completed after `since` that count against contact caps (confirmations excluded).
    pub async fn recent_sends(&self, since: Timestamp) -> Result<Vec<RecentSend>> {
        self.read(move |conn| read::recent_sends(conn, since)).await
    }

    /// The latest standard outbound message sent (or delivered) to `peer`.
    pub async fn last_sent_to(&self, peer: &str) -> Result<Option<Message>> {
        let peer = peer.to_owned();
        self.read(move |conn| read::last_sent_to(conn, &peer)).await
    }

    /// The first answer the reply rules queued to `peer` after the reply `after` arrived: a reply whose
    /// rules are run again after a crash must not be answered twice.
    pub async fn rules_answer_after(&self, peer: &str, after: Uuid) -> Result<Option<Uuid>> {
        let peer = peer.to_owned();
        self.read(move |conn| read::rules_answer_after(conn, &peer, after))
            .await
    }

    pub async fn modems(&self) -> Result<Vec<ModemRecord>> {
        self.read(read::modems).await
    }

    /// Counts for `/metrics`: messages by state and modem (kept by the writer and triggers), and the
    /// webhook backlog (a scan of the undelivered outbox rows): fine at scrape intervals.
    pub async fn totals(&self) -> Result<Totals> {
        self.read(read::totals).await
    }
}

/// Creates the database file readable by its owner only (it holds phone numbers and message texts), and
/// tightens an existing file that is more open. SQLite gives the WAL and shm files the same mode.
fn create_private(path: &PathBuf) -> Result<()> {
    let io = |source| StoreError::Io {
        path: path.clone(),
        source: Arc::new(source),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "database file was readable by others: setting mode 0600");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    Ok(())
}
