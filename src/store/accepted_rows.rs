//! The rows of the messages a batch accepts (the message, its parts, its first event), held back and
//! written together: once the batch has run, or before anything else in it uses the database.
//!
//! Written one statement per row, an accept ran three statements, each opening a cursor on every B-tree
//! it writes (the table, its indexes, the parent a part's foreign key checks) and searching each one from
//! its root, though each goes at the end of each tree. Written many to a statement (see [`many_rows`]),
//! under callgrind the writer's instructions per accept, the key merge left aside, fell from 50,100 to
//! 43,700 (BENCHMARKS.md, "Store", session 26).
//!
//! `OR FAIL`: a statement of many rows that may stop halfway at a failed constraint makes SQLite keep a
//! statement journal (a copy of every page it touches) to undo the rows before it. A failure here breaks
//! the whole batch, which is rolled back anyway, so nothing needs undoing. Parts still get that journal
//! (a foreign key's check aborts whatever the statement says), once per statement, not once per row.

use std::sync::{Arc, LazyLock};

use jiff::Timestamp;
use uuid::Uuid;

use super::many_rows::{self, Binder, Texts};
use super::rows::{ms, opt_ms};
use super::types::{MessageState, NewPart};
use super::write::Fingerprinted;
use super::writer::WriteCtx;

/// An accepted message whose rows are not written yet.
pub(crate) struct AcceptedRows {
    pub id: Uuid,
    pub state: MessageState,
    /// When it was accepted.
    pub at: Timestamp,
    /// Shared with the caller's answer, which frees it on the caller's thread.
    pub request: Arc<Fingerprinted>,
}

static MESSAGES: LazyLock<Texts> = LazyLock::new(|| {
    many_rows::texts(
        "INSERT OR FAIL INTO messages (id, direction, state, peer, text, encoding, part_count, priority, \
         send_at, expires_at, reference, metadata, tz, api_key, idempotency_key, body_hash, created_at, \
         updated_at, category, region)",
        "(?, 'outbound', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "",
    )
});

static PARTS: LazyLock<Texts> = LazyLock::new(|| {
    many_rows::texts(
        "INSERT OR FAIL INTO parts (message_id, part, state, tpdu_length, pdu)",
        "(?, ?, 'pending', ?, ?)",
        "",
    )
});

static EVENTS: LazyLock<Texts> = LazyLock::new(|| {
    many_rows::texts(
        "INSERT OR FAIL INTO events (message_id, seq, at, actor, kind, state)",
        "(?, 1, ?, 'api', 'accepted', ?)",
        "",
    )
});

/// Writes `rows`: every message, then every part, then every first event.
pub(crate) fn write(ctx: &WriteCtx<'_>, rows: &[AcceptedRows]) -> rusqlite::Result<()> {
    insert(ctx, &MESSAGES, rows, |bind, row| {
        let message = &row.request.message;
        let at = ms(row.at);
        id(bind, row.id)?;
        bind.value(row.state)?;
        bind.value(&message.to)?;
        bind.value(&message.text)?;
        bind.value(message.encoding)?;
        bind.value(message.parts.len() as i64)?;
        bind.value(message.priority)?;
        bind.value(opt_ms(message.send_at))?;
        bind.value(opt_ms(message.expires_at))?;
        bind.value(&message.reference)?;
        bind.value(&row.request.metadata)?;
        bind.value(&message.tz)?;
        bind.value(&message.api_key)?;
        bind.value(&message.idempotency_key)?;
        bind.value(&row.request.hash)?;
        bind.value(at)?;
        bind.value(at)?;
        bind.value(message.category)?;
        bind.value(&message.region)
    })?;
    let parts: Vec<(Uuid, usize, &NewPart, &[u8])> = rows
        .iter()
        .flat_map(|row| {
            let request = &*row.request;
            let parts = request.message.parts.iter().zip(&request.pdus);
            parts
                .enumerate()
                .map(move |(index, (part, pdu))| (row.id, index + 1, part, pdu.as_slice()))
        })
        .collect();
    insert(
        ctx,
        &PARTS,
        &parts,
        |bind, &(message, number, part, pdu)| {
            id(bind, message)?;
            bind.value(number as i64)?;
            bind.value(part.tpdu_length as i64)?;
            bind.value(pdu)
        },
    )?;
    insert(ctx, &EVENTS, rows, |bind, row| {
        id(bind, row.id)?;
        bind.value(ms(row.at))?;
        bind.value(row.state)
    })
}

/// Inserts `rows` through `texts`' statements, kept by the batch (see [`WriteCtx::with_statement`]).
fn insert<T>(
    ctx: &WriteCtx<'_>,
    texts: &'static Texts,
    rows: &[T],
    bind: impl Fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    for (text, chunk) in many_rows::chunks(texts, rows) {
        ctx.with_statement(text, |statement| many_rows::fill(statement, chunk, &bind))?;
    }
    Ok(())
}

/// Binds a message id as the tables keep it: lower-case hyphenated text.
fn id(bind: &mut Binder<'_, '_>, id: Uuid) -> rusqlite::Result<()> {
    // SQLite copies the text as it is bound, so the buffer may go once bound.
    bind.value(&*id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tokio::sync::oneshot;

    use crate::outbound::ComposeOptions;
    use crate::store::types::{Accepted, NewMessage};
    use crate::store::{OpenOptions, Store, StoreError};

    /// A send of `text` with idempotency key `key`, made as the API makes one: 153 characters a part.
    fn message(to: &str, key: &str, text: &str) -> NewMessage {
        let options = ComposeOptions {
            api_key: "cms".into(),
            idempotency_key: Some(key.into()),
            ..ComposeOptions::default()
        };
        crate::outbound::compose(to, text, options).unwrap()
    }

    /// Polls `request` once, which queues it with the writer, and hands it back to be awaited.
    async fn queued<F: Future + Unpin>(mut request: F) -> F {
        tokio::select! {
            biased;
            _ = &mut request => panic!("answered before the writer was let go"),
            () = std::future::ready(()) => request,
        }
    }

    /// Runs `requests` as one batch: the writer is held inside a request of its own until they have all
    /// been queued, and then takes them together.
    async fn in_one_batch<T, F>(store: &Store, requests: impl FnOnce() -> Vec<F>) -> Vec<T>
    where
        F: Future<Output = T> + Unpin,
    {
        let (started, writer_started) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holding = store.inner.writer.write(move |_| {
            let _ = started.send(());
            let _ = released.recv();
            Ok(())
        });
        writer_started.await.unwrap();
        let mut pending = Vec::new();
        for request in requests() {
            pending.push(queued(request).await);
        }
        release.send(()).unwrap();
        holding.await.unwrap();
        let mut answers = Vec::new();
        for request in pending {
            answers.push(request.await);
        }
        answers
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir.join("db"), OpenOptions::default()).unwrap()
    }

    type Answer = std::pin::Pin<Box<dyn Future<Output = Result<Accepted, StoreError>> + Send>>;

    /// Accepts held back, then a request of another kind in the same batch: it finds their rows (the
    /// writer wrote them first), and the commit keeps them, parts and first events included.
    #[tokio::test]
    async fn a_request_after_accepts_in_its_batch_finds_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let counted = std::sync::Arc::new(std::sync::Mutex::new(None));
        let count_here = counted.clone();
        let answers = in_one_batch(&store, || {
            let accepts = (0..3).map(|n| {
                let store = store.clone();
                Box::pin(async move {
                    store
                        .accept(message(
                            "+14155550100",
                            &format!("k{n}"),
                            &"x".repeat(153 * (n + 1)),
                        ))
                        .await
                }) as Answer
            });
            let store = store.clone();
            let count = Box::pin(async move {
                let rows = store
                    .inner
                    .writer
                    .write(move |ctx| {
                        let count = |sql: &str| {
                            ctx.conn
                                .query_row(sql, [], |row| row.get::<_, i64>(0))
                                .map_err(StoreError::sqlite("counting"))
                        };
                        Ok((
                            count("SELECT count(*) FROM messages")?,
                            count("SELECT count(*) FROM parts")?,
                            count("SELECT count(*) FROM events")?,
                        ))
                    })
                    .await;
                *count_here.lock().unwrap() = Some(rows);
                Err(StoreError::Closed)
            }) as Answer;
            accepts.chain([count]).collect()
        })
        .await;
        let ids: Vec<_> = answers[..3]
            .iter()
            .map(|a| a.as_ref().unwrap().id)
            .collect();
        assert_eq!(
            counted.lock().unwrap().take().unwrap().unwrap(),
            (3, 6, 3),
            "messages, parts (1 + 2 + 3), first events"
        );
        for (n, id) in ids.into_iter().enumerate() {
            let stored = store.get(id).await.unwrap().unwrap();
            assert_eq!(stored.message.part_count as usize, n + 1);
            assert_eq!(stored.events.len(), 1, "{:?}", stored.events);
            assert_eq!(stored.events[0].kind, "accepted");
        }
    }

    /// Sends with one idempotency key in one batch: the second (a different body) writes the first's
    /// held-back row to find it and gets a conflict, which does not undo the batch (the row was not its
    /// own); the repeats get the original.
    #[tokio::test]
    async fn a_repeat_in_the_same_batch_finds_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let send = |text: &'static str| {
            let store = store.clone();
            Box::pin(async move { store.accept(message("+14155550100", "k", text)).await })
                as Answer
        };
        let answers = in_one_batch(&store, || {
            vec![send("hello"), send("other"), send("hello"), send("hello")]
        })
        .await;
        let original = answers[0].as_ref().unwrap();
        assert!(!original.duplicate);
        for repeat in [&answers[2], &answers[3]] {
            let repeat = repeat.as_ref().unwrap();
            assert_eq!((repeat.id, repeat.duplicate), (original.id, true));
        }
        assert!(
            matches!(&answers[1], Err(StoreError::IdempotencyConflict { original: id, .. }) if *id == original.id),
            "{:?}",
            answers[1]
        );
        assert!(store.get(original.id).await.unwrap().is_some());
        assert_eq!(store.writer_stats().refused, 0);
    }
}
