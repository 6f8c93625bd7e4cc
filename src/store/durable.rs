//! Making committed batches durable off the writer thread.
//!
//! With `synchronous=FULL`, SQLite fsyncs the write-ahead log inside each commit, and the writer thread,
//! the one thread every write waits on, sat idle for the disk a tenth of its time under load. The writer
//! now commits with `synchronous=NORMAL`: SQLite writes the batch's frames to the log (the page cache)
//! and returns, and checkpoints still sync the log before copying it into the database, and the database
//! after. The batch's answers come here; a sync thread `fdatasync`s the log, which makes every frame
//! written before the call durable, and only then answers the batch's callers. Batches committed while
//! it syncs share a later sync, so the writer starts its next batch at once and the disk is waited for
//! once per sync, not once per batch.
//!
//! Two threads sync, taking turns at the handed batches: while one waits for the disk or answers its
//! callers, the other can start the sync that covers the batches committed since. With one thread those
//! batches waited for the sync in flight, then for its answers, before theirs began: 7-9 % of the store
//! bench's throughput (BENCHMARKS.md). A sync covers every frame written before it starts, whoever
//! wrote it, so a thread that finishes first may mark batches durable that the other still holds.
//! Answers to different batches may therefore come out of commit order; each still comes only after a
//! sync that began after its batch was committed.
//!
//! The log is the file SQLite opened at `<database>-wal`: it stays that file while the writer's
//! connection is open (SQLite deletes it only when the last connection closes), so each thread opens it
//! once. Each opens its own descriptor because Linux reports a failed write-back once per open file
//! description: sharing one, the thread that asked second could hear success for pages the first heard
//! were lost.
//!
//! Readers may see a batch before its sync ends (a process crash loses nothing of it: the kernel has
//! it; a power cut could). What acts on the outside world after a read waits for [`Durable::settled`],
//! so it never announces what a power cut could take back; the dispatcher needs no wait, as a part is
//! recorded `submitting`, and that write is synced, with everything before it, before its PDU is sent.
//!
//! A failed sync may have lost the pages it was to write (Linux marks them clean and a later sync
//! reports success), so after one every batch is refused: the store is unwritable until a restart reads
//! back what the log really holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use tokio::sync::watch;

use super::error::{Result, StoreError};
use super::writer::Finish;

/// How many threads sync the log (see the module's comment for why two).
const SYNC_THREADS: usize = 2;

/// A batch handed over by the writer: its answers and the commit's outcome.
pub(crate) struct Committed {
    pub finishes: Vec<Box<dyn Finish>>,
    pub commit: Result<()>,
}

/// The writer's end: hands batches to the sync thread.
pub(crate) struct Syncer {
    batches: mpsc::Sender<(Committed, u64)>,
    state: Arc<State>,
}

/// What the writer, the sync thread and [`Durable`] share.
struct State {
    /// Batches committed so far (the writer counts them).
    committed: AtomicU64,
    /// Batches known durable: the highest committed count a finished sync covered.
    synced: watch::Sender<u64>,
    /// The first failed sync, after which writes are refused.
    failed: OnceLock<StoreError>,
}

/// A handle for waiting until what is committed is also durable.
#[derive(Clone)]
pub(crate) struct Durable {
    state: Arc<State>,
}

impl Durable {
    /// Returns once every batch committed before the call is durable (at once when nothing waits for a
    /// sync); an error if the sync failed.
    pub async fn settled(&self) -> Result<()> {
        let target = self.state.committed.load(Ordering::Acquire);
        let mut synced = self.state.synced.subscribe();
        let reached = synced.wait_for(|synced| *synced >= target).await.is_ok();
        match self.state.failed.get() {
            Some(error) => Err(error.clone()),
            None if reached => Ok(()),
            // The sync thread is gone: the store is closing.
            None => Err(StoreError::Closed),
        }
    }
}

impl Syncer {
    /// Opens the log SQLite writes at `wal` (it must exist: the writer's connection has used it) and
    /// starts the sync thread.
    pub fn spawn(wal: PathBuf) -> Result<(Syncer, Durable)> {
        let io_error = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io {
                path,
                source: Arc::new(source),
            }
        };
        let state = Arc::new(State {
            committed: AtomicU64::new(0),
            synced: watch::Sender::new(0),
            failed: OnceLock::new(),
        });
        let (batches, handed) = mpsc::channel();
        let handed = Arc::new(Mutex::new(handed));
        for _ in 0..SYNC_THREADS {
            let log = File::open(&wal).map_err(io_error(&wal))?;
            let (wal, handed, state) = (wal.clone(), handed.clone(), state.clone());
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || run(&log, &wal, &handed, &state))
                .map_err(io_error(&PathBuf::from("store-sync thread")))?;
        }
        let durable = Durable {
            state: state.clone(),
        };
        Ok((Syncer { batches, state }, durable))
    }

    /// Why writes are refused, if a sync failed.
    pub fn failed(&self) -> Option<StoreError> {
        self.state.failed.get().cloned()
    }

    /// Hands over a batch; its callers are answered once it is durable (a failed commit's at once, in
    /// order with the rest).
    pub fn hand_over(&self, batch: Committed) {
        let seq = if batch.commit.is_ok() {
            self.state.committed.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.state.committed.load(Ordering::Acquire)
        };
        if let Err(mpsc::SendError((batch, _))) = self.batches.send((batch, seq)) {
            // The sync thread is gone (it cannot panic, but if it did): nothing can be made durable.
            let error = StoreError::Closed;
            for finish in batch.finishes {
                finish.finish(Err(error.clone()));
            }
        }
    }
}

/// Takes every batch handed over and not yet taken, syncs the log and answers them; until the writer
/// is gone.
fn run(log: &File, wal: &Path, handed: &Mutex<mpsc::Receiver<(Committed, u64)>>, state: &State) {
    while let Some(batches) = take(handed) {
        let newest = batches.iter().map(|(_, seq)| *seq).max().unwrap_or(0);
        let needs_sync = batches.iter().any(|(batch, _)| batch.commit.is_ok());
        let synced = if needs_sync && state.failed.get().is_none() {
            log.sync_data().map_err(|source| {
                let error = StoreError::Io {
                    path: wal.to_path_buf(),
                    source: Arc::new(source),
                };
                tracing::error!(%error, "syncing the write-ahead log failed: the store refuses writes until a restart");
                state.failed.get_or_init(|| error).clone()
            })
        } else {
            Ok(())
        }
        // After a failed sync, this thread's or the other's (before or during this one), nothing is
        // promised durable.
        .and_then(|()| state.failed.get().map_or(Ok(()), |error| Err(error.clone())));
        state.synced.send_if_modified(|synced| {
            let newer = newest > *synced;
            *synced = (*synced).max(newest);
            newer
        });
        for (batch, _) in batches {
            let answer = batch.commit.and_then(|()| synced.clone());
            for finish in batch.finishes {
                finish.finish(answer.clone());
            }
        }
    }
}

/// Waits for a batch, then takes it with every other one waiting; `None` once the writer is gone.
/// The other thread waits for the lock meanwhile: it has nothing to take either.
fn take(handed: &Mutex<mpsc::Receiver<(Committed, u64)>>) -> Option<Vec<(Committed, u64)>> {
    // A thread that panicked holding the lock left the receiver whole: it only receives.
    let handed = handed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let first = handed.recv().ok()?;
    let mut batches = vec![first];
    batches.extend(handed.try_iter());
    Some(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the answer a caller would get.
    struct Answer(mpsc::Sender<Result<()>>);

    impl Finish for Answer {
        fn finish(self: Box<Self>, commit: Result<()>) {
            let _ = self.0.send(commit);
        }
    }

    fn batch(commit: Result<()>, answers: &mpsc::Sender<Result<()>>) -> Committed {
        Committed {
            finishes: vec![
                Box::new(Answer(answers.clone())),
                Box::new(Answer(answers.clone())),
            ],
            commit,
        }
    }

    /// Sync threads on a log file in `dir`.
    fn on_a_log(dir: &Path) -> (Syncer, Durable) {
        let wal = dir.join("gw.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        Syncer::spawn(wal).unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_answered_once_synced_and_a_failed_commit_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let (syncer, durable) = on_a_log(dir.path());
        let (answers, answered) = mpsc::channel();
        syncer.hand_over(batch(Ok(()), &answers));
        syncer.hand_over(batch(Err(StoreError::RolledBack), &answers));
        // The two threads may take one batch each, and the failed one needs no sync: in either order.
        let got: Vec<Result<()>> = answered.iter().take(4).collect();
        let synced = got.iter().filter(|answer| answer.is_ok()).count();
        let rolled_back = got
            .iter()
            .filter(|answer| matches!(answer, Err(StoreError::RolledBack)))
            .count();
        assert_eq!((synced, rolled_back), (2, 2), "{got:?}");
        durable.settled().await.unwrap();
        assert!(syncer.failed().is_none());
    }

    /// Both threads take batches and may finish out of order; every caller is answered once, and what
    /// is marked durable never goes back below the newest batch synced.
    #[tokio::test]
    async fn many_batches_are_each_answered_once_and_the_synced_mark_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (syncer, durable) = on_a_log(dir.path());
        let (answers, answered) = mpsc::channel();
        for _ in 0..200 {
            syncer.hand_over(batch(Ok(()), &answers));
        }
        drop(answers);
        let got: Vec<Result<()>> = answered.iter().collect();
        assert_eq!(got.len(), 400);
        assert!(got.iter().all(Result::is_ok), "{got:?}");
        assert_eq!(*durable.state.synced.borrow(), 200);
        durable.settled().await.unwrap();
    }

    /// `fdatasync` on /dev/null fails (EINVAL), as on a disk that lost the pages.
    #[tokio::test]
    async fn after_a_failed_sync_the_writer_is_told_and_every_wait_refused() {
        let (syncer, durable) = Syncer::spawn("/dev/null".into()).unwrap();
        let (answers, answered) = mpsc::channel();
        syncer.hand_over(batch(Ok(()), &answers));
        let got: Vec<Result<()>> = answered.iter().take(2).collect();
        assert!(
            got.iter()
                .all(|answer| matches!(answer, Err(StoreError::Io { .. }))),
            "{got:?}"
        );
        assert!(matches!(syncer.failed(), Some(StoreError::Io { .. })));
        assert!(matches!(
            durable.settled().await,
            Err(StoreError::Io { .. })
        ));
    }
}
