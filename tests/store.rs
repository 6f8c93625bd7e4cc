//! The durable store on real SQLite files: migrations, durability, group commit, idempotency, failures,
//! inbound reassembly, delivery reports and crash recovery.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use modemgate::store::*;
use rusqlite::Connection;

fn start() -> Timestamp {
    "2026-03-02T15:00:00Z".parse().unwrap()
}

/// The look-up by number merges at every batch here, so these tests read it through its table; the
/// daemon's tests mostly read it before a merge (see `looking_up_by_number_is_exact_...`).
fn options(clock: &ManualClock) -> OpenOptions {
    OpenOptions {
        clock: Arc::new(clock.clone()),
        key_merge: MergePolicy {
            messages: 1,
            every: Duration::MAX,
            slice: 1_000,
        },
        ..OpenOptions::default()
    }
}

fn open(path: &Path, clock: &ManualClock) -> Store {
    Store::open(path, options(clock)).unwrap()
}

const HOOK: &str = "http://127.0.0.1:9/hook";

/// The outbox rows of the one webhook `open_with_webhooks` configures.
fn hook_lane() -> modemgate::webhook::Lane {
    modemgate::webhook::Lane::Webhook(HOOK.into())
}

/// That webhook's outbox rows due now (at most 10).
async fn hook_due(store: &Store, clock: &ManualClock) -> Vec<modemgate::webhook::OutboxItem> {
    use modemgate::webhook::OutboxStore;
    store.next_due(&hook_lane(), clock.now(), 10).await.unwrap()
}

/// A store that writes every webhook event type to its outbox, for one webhook (`cms` at [`HOOK`]).
fn open_with_webhooks(path: &Path, clock: &ManualClock) -> Store {
    open_with_webhook_at(path, clock, HOOK, Some("cms"))
}

/// A store that writes every webhook event type to its outbox, for the webhook at `url`.
fn open_with_webhook_at(path: &Path, clock: &ManualClock, url: &str, name: Option<&str>) -> Store {
    let options = OpenOptions {
        webhooks: vec![modemgate::webhook::Subscription {
            url: url.into(),
            name: name.map(str::to_owned),
            events: None,
        }],
        ..options(clock)
    };
    Store::open(path, options).unwrap()
}

fn message(to: &str, text: &str, parts: usize) -> NewMessage {
    NewMessage {
        api_key: "cms".into(),
        idempotency_key: None,
        to: to.into(),
        text: text.into(),
        encoding: TextEncoding::Gsm7,
        parts: (1..=parts)
            .map(|i| NewPart {
                tpdu_length: 20 + i,
                pdu_hex: format!("0011000B91{i:02X}"),
            })
            .collect(),
        priority: 0,
        send_at: None,
        expires_at: None,
        reference: None,
        metadata: None,
        tz: None,
        region: None,
        category: Category::Standard,
    }
}

async fn state(store: &Store, id: uuid::Uuid) -> MessageState {
    store.get(id).await.unwrap().unwrap().message.state
}

fn schema(path: &Path) -> Vec<(String, String)> {
    let conn = Connection::open(path).unwrap();
    let mut st = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn migrates_from_empty_and_from_every_earlier_version() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let fresh = dir.path().join("fresh.db");
    drop(open(&fresh, &clock));
    let expected = schema(&fresh);
    assert!(expected.iter().any(|(name, _)| name == "optout_audit"));

    for version in 0..migrations::LATEST {
        let path = dir.path().join(format!("v{version}.db"));
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations::migrate(&mut conn, version).unwrap();
            assert_eq!(migrations::version(&conn).unwrap(), version);
            if version >= 1 {
                conn.execute(
                    "INSERT INTO messages (id, direction, state, peer, text, encoding, part_count, created_at, \
                     updated_at, reference, api_key, idempotency_key) \
                     VALUES ('0190a0a0-0000-7000-8000-000000000001', 'outbound', 'queued', \
                     '+15551230000', 'old', 'gsm7', 1, 1, 1, 'acct-old', 'cms', 'old-key')",
                    [],
                )
                .unwrap();
            }
            if (1..25).contains(&version) {
                // Inserted out of their order: the history goes by the row id before migration 25.
                conn.execute_batch(
                    "INSERT INTO events (id, message_id, at, actor, kind, state) VALUES \
                     (7, '0190a0a0-0000-7000-8000-000000000001', 2, 'dispatcher', 'held', 'scheduled'), \
                     (3, '0190a0a0-0000-7000-8000-000000000001', 1, 'api', 'accepted', 'queued');",
                )
                .unwrap();
            }
            if version >= 8 {
                // From version 8 the writer counts the messages it inserts (no insert trigger).
                conn.execute(
                    "INSERT INTO message_counts (state, modem, n) VALUES ('queued', '', 1)",
                    [],
                )
                .unwrap();
            }
        }
        let store = open(&path, &clock);
        // The look-up by number starts from every message there was (migration 21).
        let conversation = store
            .conversation("+15551230000", None, None)
            .await
            .unwrap();
        assert_eq!(conversation.messages.len(), usize::from(version >= 1));
        // So do those by reference and by idempotency key (migration 22).
        let by_reference = ListFilter {
            reference: Some("acct-old".into()),
            ..ListFilter::default()
        };
        let listed = store.list(by_reference).await.unwrap().messages;
        assert_eq!(listed.len(), usize::from(version >= 1));
        let accepted_at = store.accepted_at("cms", "old-key").await.unwrap();
        assert_eq!(accepted_at.is_some(), version >= 1);
        if version >= 1 {
            let old: uuid::Uuid = "0190a0a0-0000-7000-8000-000000000001".parse().unwrap();
            let history = store.get(old).await.unwrap().unwrap().events;
            let kinds: Vec<&str> = history.iter().map(|ev| ev.kind.as_str()).collect();
            assert_eq!(kinds, ["accepted", "held"], "v{version}");
            let mut repeat = message("+15551230000", "again", 1);
            repeat.idempotency_key = Some("old-key".into());
            let repeated = store.accept(repeat).await;
            assert!(
                matches!(repeated, Err(StoreError::IdempotencyConflict { .. })),
                "v{version}: {repeated:?}"
            );
        }
        drop(store);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(migrations::version(&conn).unwrap(), migrations::LATEST);
        assert_eq!(
            schema(&path),
            expected,
            "schema after migrating from v{version}"
        );
        let kept: u32 = conn
            .query_row(
                "SELECT count(*) FROM messages WHERE text = 'old'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, u32::from(version >= 1));
        // The metrics' counts start from what was there before the upgrade.
        let counted: i64 = conn
            .query_row(
                "SELECT coalesce(sum(n), 0) FROM message_counts WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counted, i64::from(version >= 1));
    }
}

/// The log keeps the SIM number a message went out from or came in on: swapping the SIM (a new ICCID that
/// reports no number) changes neither old messages nor, wrongly, the new SIM's number.
#[tokio::test]
async fn a_message_keeps_the_sim_number_it_used_after_the_sim_is_swapped() {
    use modemgate::modem::job::ModemIdentity;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("sim.db"), &clock);
    let sim = |iccid: &str, number: Option<&str>| ModemIdentity {
        iccid: Some(iccid.into()),
        own_number: number.map(str::to_owned),
        ..ModemIdentity::default()
    };
    store
        .upsert_modem("m1", sim("8901001", Some("+15550100001")))
        .await
        .unwrap();
    let sent = sent_message(&store, "+14158900001", "m1", &[1]).await;
    let InboundOutcome::Complete(reply) = store
        .record_inbound(deliver("EE", "ok", None))
        .await
        .unwrap()
    else {
        panic!("one part")
    };
    store
        .upsert_modem("m1", sim("8902002", None))
        .await
        .unwrap();
    for id in [sent, reply.id] {
        let message = store.get(id).await.unwrap().unwrap().message;
        assert_eq!(
            message.modem_number.as_deref(),
            Some("+15550100001"),
            "{id}"
        );
    }
    let record = store.modems().await.unwrap();
    assert_eq!(
        record[0].identity.own_number, None,
        "the old SIM's number is not the new one's"
    );
}

/// Opt-outs from before their source was recorded get it from how the code of the time wrote them: the
/// API named no message, the rules did, and audited a reply under review as such. Lifted ones get none.
#[tokio::test]
async fn migration_14_tells_earlier_opt_outs_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v13.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        migrations::migrate(&mut conn, 13).unwrap();
        conn.execute_batch(
            "INSERT INTO optouts (number, active, created_at, updated_at, source_message) VALUES
                 ('+15550000001', 1, 1, 1, NULL), ('+15550000002', 1, 1, 1, 'm2'),
                 ('+15550000003', 1, 1, 1, 'm3'), ('+15550000004', 0, 1, 2, 'm4');
             INSERT INTO optout_audit (number, at, active, actor, source_message, detail) VALUES
                 ('+15550000001', 1, 1, 'api:ops', NULL, 'letter'),
                 ('+15550000002', 1, 1, 'rules', 'm2', 'STOP'),
                 ('+15550000003', 1, 1, 'rules', 'm3', 'review: please stop texting me'),
                 ('+15550000004', 1, 1, 'rules', 'm4', 'STOP'),
                 ('+15550000004', 2, 0, 'rules', 'm4', 'START');",
        )
        .unwrap();
    }
    drop(open(&path, &ManualClock::new(start())));
    let conn = Connection::open(&path).unwrap();
    let sources: Vec<(String, Option<String>)> = conn
        .prepare("SELECT number, source FROM optouts ORDER BY number")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [
        ("+15550000001", Some("api")),
        ("+15550000002", Some("keyword")),
        ("+15550000003", Some("review")),
        ("+15550000004", None),
    ]
    .map(|(n, s)| (n.to_owned(), s.map(str::to_owned)));
    assert_eq!(sources, expected);
}

/// The metrics' message counts, kept by triggers, against a count over the whole table.
async fn assert_totals_match(store: &Store, path: &Path) {
    let mut kept: Vec<(String, Option<String>, u64)> = store
        .totals()
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(state, modem, n)| (state.as_str().to_owned(), modem, n))
        .collect();
    kept.sort();
    let conn = Connection::open(path).unwrap();
    let mut counted: Vec<(String, Option<String>, u64)> = conn
        .prepare("SELECT state, modem, count(*) FROM messages GROUP BY state, modem")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.unsigned_abs()))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    counted.sort();
    assert_eq!(kept, counted);
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", migrations::LATEST + 1)
        .unwrap();
    let error = Store::open(&path, OpenOptions::default()).err().unwrap();
    assert!(matches!(error, StoreError::TooNew { .. }), "{error}");
}

/// The list's cursor and the export's resume go by id: a clock behind the last run's (a box without a
/// real-time clock booting before NTP) must not give new messages smaller ids than stored ones.
#[tokio::test]
async fn ids_keep_growing_across_a_restart_with_the_clock_set_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    let first = store
        .accept(message("+15551230001", "before", 1))
        .await
        .unwrap()
        .id;
    drop(store);
    clock.set(
        start()
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap(),
    );
    let store = open(&path, &clock);
    let mut ids = vec![first];
    for text in ["after", "after again"] {
        ids.push(
            store
                .accept(message("+15551230001", text, 1))
                .await
                .unwrap()
                .id,
        );
    }
    assert!(ids.is_sorted(), "{ids:?}");
}

#[tokio::test]
async fn database_files_are_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    store
        .accept(message("+15551230001", "hi", 1))
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("gw.db-wal")), 0o600);
    let conn = Connection::open(&path).unwrap();
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn a_checkpoint_empties_the_write_ahead_log_into_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let store = open(&path, &ManualClock::new(start()));
    let batch = (0..200)
        .map(|i| message(&format!("+1555000{i:04}"), "log me", 1))
        .collect();
    store.accept_batch(batch).await.unwrap();
    let wal = dir.path().join("gw.db-wal");
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(len(&wal) > 0, "the accepts should sit in the log first");
    assert!(store.checkpoint().await.unwrap());
    assert_eq!(len(&wal), 0, "TRUNCATE leaves an empty log");
    let rows: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 200);
}

/// Under writes that never pause, the log starts over once it holds the limit: the writer copies what is
/// left into the database between two batches. Without the checkpointer thread (off here, so only the
/// writer's catch-up can do it) every frame would stay in the log.
#[tokio::test]
async fn the_writer_keeps_the_write_ahead_log_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let limit = 64;
    let options = OpenOptions {
        wal_limit_frames: limit,
        background_checkpoints: false,
        ..options(&ManualClock::new(start()))
    };
    let store = Store::open(&path, options).unwrap();
    let wal = dir.path().join("gw.db-wal");
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut largest_log = 0;
    for round in 0..40 {
        let batch = (0..100)
            .map(|i| {
                message(
                    &format!("+1555{round:03}{i:04}"),
                    "a longer text to fill pages",
                    1,
                )
            })
            .collect();
        store.accept_batch(batch).await.unwrap();
        largest_log = largest_log.max(len(&wal));
    }
    // One batch writes well under the limit again, so the log never holds much more than limit + a batch.
    let frame = 4096 + 24;
    assert!(
        largest_log < 3 * limit as u64 * frame,
        "the log reached {largest_log} bytes"
    );
    assert!(
        len(&path) > 2 * largest_log,
        "the rows should be in the database file ({} bytes), not the log ({largest_log})",
        len(&path)
    );
    drop(store);
    let rows: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 4_000);
}

#[tokio::test]
async fn an_existing_open_file_is_tightened_to_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = open(&path, &ManualClock::new(start()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("gw.db"), &ManualClock::new(start()));
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .accept(message(&format!("+1555100{i:04}"), "hello", 1))
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 400);
    let stats = store.writer_stats();
    assert_eq!(stats.requests, 400);
    assert!(
        stats.commits < stats.requests / 2,
        "400 concurrent accepts took {} commits",
        stats.commits
    );
    // Every accepted message is readable from another connection.
    let page = store
        .list(ListFilter {
            limit: Some(1000),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 400);
}

#[tokio::test]
async fn idempotency_returns_the_original_or_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("gw.db"), &ManualClock::new(start()));
    let mut first = message("+15551230002", "pay now", 1);
    first.idempotency_key = Some("k-1".into());
    let original = store.accept(first.clone()).await.unwrap();
    assert!(!original.duplicate);

    let again = store.accept(first.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, original.id);

    let mut different = first.clone();
    different.text = "pay later".into();
    match store.accept(different).await {
        Err(StoreError::IdempotencyConflict { original: id, .. }) => assert_eq!(id, original.id),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The key is scoped to the API key.
    let mut other_key = first.clone();
    other_key.api_key = "other".into();
    assert_ne!(store.accept(other_key).await.unwrap().id, original.id);

    // In a batch the conflict is one item's result; the rest commit.
    let mut conflicting = first.clone();
    conflicting.text = "changed".into();
    let results = store
        .accept_batch(vec![message("+15551230003", "a", 1), conflicting])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(StoreError::IdempotencyConflict { .. })
    ));
    let total = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(total.messages.len(), 3);
}

/// Idempotency keys are merged into rows by a hash of the key: a row may name another key's message
/// (two keys, one hash), and that must not make a send a repeat of it.
#[tokio::test]
async fn a_send_is_a_repeat_only_of_its_own_key_whatever_a_hash_row_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    let mut first = message("+15551230002", "pay now", 1);
    first.idempotency_key = Some("k-a".into());
    let original = store.accept(first).await.unwrap();
    let mut other = message("+15551230002", "pay later", 1);
    other.idempotency_key = Some("k-b".into());
    let second = store.accept(other.clone()).await.unwrap();
    // Merged at the next batch (this file's stores merge at every batch).
    store.accept(message("+15551230003", "x", 1)).await.unwrap();
    // The first message's id goes first in every row, as a collision would put it, and alone in the
    // row of k-c, which no send used.
    let conn = Connection::open(&path).unwrap();
    let packed = original.id.as_bytes().to_vec();
    let rows = conn
        .execute(
            "UPDATE idempotency_keys SET ids = unhex(hex(?1) || hex(ids))",
            [&packed],
        )
        .unwrap();
    assert_eq!(rows, 2, "both keys were merged");
    let digest = <sha2::Sha256 as sha2::Digest>::digest(b"cms\nk-c");
    let hash = i64::from_be_bytes(digest[..8].try_into().unwrap());
    conn.execute(
        "INSERT INTO idempotency_keys (run, hash, ids) \
         VALUES ((SELECT max(run) FROM idempotency_runs), ?1, ?2)",
        rusqlite::params![hash, packed],
    )
    .unwrap();
    let again = store.accept(other).await.unwrap();
    assert!(again.duplicate && again.id == second.id, "{again:?}");
    let mut third = message("+15551230002", "new", 1);
    third.idempotency_key = Some("k-c".into());
    assert!(store.replay(third.clone()).await.unwrap().is_none());
    assert!(store.accepted_at("cms", "k-c").await.unwrap().is_none());
    assert!(store.accepted_at("cms", "k-b").await.unwrap().is_some());
    let fresh = store.accept(third).await.unwrap();
    assert!(!fresh.duplicate && fresh.id != original.id);
}

/// Each merge writes its idempotency keys as a run of their own, and runs of a size are compacted into
/// one as they accumulate (`idempotency_runs`). Through all of it, and across a restart, every key still
/// makes its repeat the original message and a different body under it a conflict.
#[tokio::test]
async fn idempotency_keys_stay_exact_as_their_runs_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    let send = |n: usize| {
        let mut send = message("+15551230002", &format!("pay {n}"), 1);
        send.idempotency_key = Some(format!("k-{n}"));
        send
    };
    // One key per batch, so one run per key (this file's stores merge at every batch): 40 runs of
    // one key, compacted 16 at a time.
    let mut originals = Vec::new();
    for n in 0..40 {
        originals.push(store.accept(send(n)).await.unwrap().id);
    }
    let counts = |path: &Path| -> (i64, i64) {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT (SELECT count(*) FROM idempotency_runs), (SELECT count(*) FROM idempotency_keys)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
    };
    let (runs, keys) = counts(&path);
    assert!(runs < 20, "{runs} runs: not compacted");
    assert!(keys >= 39, "{keys} keys merged");
    repeats_are_answered(&store, &originals, send).await;
    drop(store);
    let store = open(&path, &clock);
    repeats_are_answered(&store, &originals, send).await;
}

/// Each `send(n)` again is a repeat of `originals[n]`, and with another text a conflict.
async fn repeats_are_answered(
    store: &Store,
    originals: &[uuid::Uuid],
    send: impl Fn(usize) -> NewMessage,
) {
    for (n, original) in originals.iter().enumerate() {
        let again = store.accept(send(n)).await.unwrap();
        assert!(again.duplicate && again.id == *original, "k-{n}: {again:?}");
        let mut other = send(n);
        other.text = "changed".into();
        let conflict = store.accept(other).await;
        assert!(
            matches!(conflict, Err(StoreError::IdempotencyConflict { .. })),
            "k-{n}: {conflict:?}"
        );
    }
}

#[tokio::test]
async fn a_full_database_rejects_accepts_and_never_claims_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = Store::open(
        &path,
        OpenOptions {
            max_pages: Some(40),
            ..options(&clock)
        },
    )
    .unwrap();
    let text = "x".repeat(1500);
    let mut accepted = Vec::new();
    let error = loop {
        match store.accept(message("+15551230004", &text, 1)).await {
            Ok(a) => accepted.push(a.id),
            Err(error) => break error,
        }
        assert!(accepted.len() < 10_000, "the quota never filled");
    };
    assert!(error.is_unavailable(), "{error}");
    assert!(!accepted.is_empty());
    // Exactly the messages that were acknowledged are on disk.
    drop(store);
    let store = open(&path, &clock);
    let page = store
        .list(ListFilter {
            limit: Some(1000),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let stored: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(stored, accepted);
}

#[tokio::test]
async fn a_locked_database_rejects_accepts_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = Store::open(
        &path,
        OpenOptions {
            busy_timeout: Duration::from_millis(50),
            ..options(&clock)
        },
    )
    .unwrap();
    // Another process holding the write lock makes the batch fail to begin (root ignores file modes, so a
    // read-only file would not do).
    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let error = store
        .accept(message("+15551230009", "x", 1))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    locker.execute_batch("ROLLBACK").unwrap();
    let accepted = store.accept(message("+15551230009", "y", 1)).await.unwrap();
    let page = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [accepted.id]
    );
}

#[tokio::test]
async fn life_cycle_of_an_outbound_message() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let path = dir.path().join("gw.db");
    let store = open(&path, &clock);
    let id = store
        .accept(message("+15551230005", "two parts", 2))
        .await
        .unwrap()
        .id;
    assert_eq!(state(&store, id).await, MessageState::Queued);
    assert_eq!(store.queue().await.unwrap().len(), 1);

    let parts = store.claim(id, "m1", None).await.unwrap();
    assert_eq!(parts.iter().map(|p| p.part).collect::<Vec<_>>(), [1, 2]);
    // A part can only be recorded sent after it was durably submitting... and only once pending.
    // The window the gate found open is on the record of the first part.
    let closes = start()
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    assert_eq!(
        store
            .part_submitting(id, 1, "m1", Some(closes))
            .await
            .unwrap(),
        Submission::Recorded
    );
    assert!(store.part_submitting(id, 1, "m1", None).await.is_err());
    // Once a part is being written, the message can no longer be cancelled.
    assert!(matches!(
        store.cancel(id, "api").await,
        Err(StoreError::InvalidTransition {
            state: MessageState::Sending,
            ..
        })
    ));
    assert_eq!(
        store.part_sent(id, 1, "m1", 7).await.unwrap(),
        MessageState::Sending
    );
    store.part_submitting(id, 2, "m1", None).await.unwrap();
    assert_eq!(
        store.part_sent(id, 2, "m1", 8).await.unwrap(),
        MessageState::Sent
    );
    let detail = store.get(id).await.unwrap().unwrap();
    assert_eq!(detail.parts[1].tp_mr, Some(8));
    let kinds: Vec<_> = detail.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "accepted",
            "claimed",
            "submitting",
            "part_sent",
            "submitting",
            "part_sent",
            "sent"
        ]
    );
    let window = format!("within the recipient's sending window, which closes at {closes}");
    assert_eq!(detail.events[2].detail.as_deref(), Some(window.as_str()));
    assert_eq!(detail.events[2].rule.as_deref(), Some("quiet_hours"));
    assert_eq!(
        detail.events[4].detail, None,
        "said once, at the first part"
    );
    assert_eq!(
        store.daily_sent(clock.now()).await.unwrap().of("m1", None),
        2
    );
    assert_eq!(
        store
            .last_modems_of(vec!["+15551230005".into()])
            .await
            .unwrap()["+15551230005"],
        "m1"
    );
    assert_eq!(store.sends_since("+15551230005", start()).await.unwrap(), 1);
    assert!(store.queue().await.unwrap().is_empty());
    let modems = store.modems().await.unwrap();
    assert_eq!(modems[0].parts_sent, 2);
    assert_totals_match(&store, &path).await;
}

#[tokio::test]
async fn failures_retry_or_fail_and_pending_messages_close() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("gw.db"), &clock);
    let id = store
        .accept(message("+15551230006", "a", 1))
        .await
        .unwrap()
        .id;
    store.claim(id, "m1", None).await.unwrap();
    store.part_submitting(id, 1, "m1", None).await.unwrap();
    let retry_at = start() + jiff::SignedDuration::from_secs(60);
    let after = store
        .part_failed(PartFailure {
            id,
            part: 1,
            modem: "m1".into(),
            code: Some(42),
            detail: "+CMS ERROR: 42".into(),
            retry_at: Some(retry_at),
        })
        .await
        .unwrap();
    assert_eq!(after, MessageState::Queued);
    let queued = store.queue().await.unwrap();
    assert_eq!(queued[0].not_before, Some(retry_at));
    assert_eq!(queued[0].attempts, 1);
    assert_eq!(queued[0].pinned_modem, None);

    store.claim(id, "m2", Some("retry".into())).await.unwrap();
    store.part_submitting(id, 1, "m2", None).await.unwrap();
    let after = store
        .part_failed(PartFailure {
            id,
            part: 1,
            modem: "m2".into(),
            code: Some(21),
            detail: "+CMS ERROR: 21".into(),
            retry_at: None,
        })
        .await
        .unwrap();
    assert_eq!(after, MessageState::Failed);
    assert_eq!(
        store.get(id).await.unwrap().unwrap().message.error_code,
        Some(21)
    );

    let cancel = store
        .accept(message("+15551230007", "b", 1))
        .await
        .unwrap()
        .id;
    store.cancel(cancel, "api").await.unwrap();
    assert_eq!(state(&store, cancel).await, MessageState::Cancelled);
    let expire = store
        .accept(message("+15551230007", "c", 1))
        .await
        .unwrap()
        .id;
    store.expire(expire).await.unwrap();
    assert_eq!(state(&store, expire).await, MessageState::Expired);

    let mut later = message("+15551230008", "d", 1);
    later.send_at = Some(start() + jiff::SignedDuration::from_hours(1));
    let held = store.accept(later).await.unwrap();
    assert_eq!(held.state, MessageState::Scheduled);
    let until = start() + jiff::SignedDuration::from_hours(18);
    store
        .hold(held.id, until, "quiet hours", Some("reg_f_8_to_21"))
        .await
        .unwrap();
    let detail = store.get(held.id).await.unwrap().unwrap();
    assert_eq!(detail.message.not_before, Some(until));
    assert_eq!(
        detail.events.last().unwrap().rule.as_deref(),
        Some("reg_f_8_to_21")
    );
}

fn deliver(pdu: &str, text: &str, concat: Option<(u8, u8)>) -> InboundPart {
    InboundPart {
        modem: "m1".into(),
        pdu_hex: pdu.into(),
        content: InboundContent::Decoded {
            sender: "+15557654321".into(),
            text: text.into(),
            encoding: TextEncoding::Gsm7,
            sent_at: Some(start()),
            concat: concat.map(|(part, parts)| ConcatInfo {
                reference: 77,
                part,
                parts,
            }),
        },
    }
}

#[tokio::test]
async fn reassembles_out_of_order_parts_and_ignores_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let store = open(&path, &ManualClock::new(start()));
    let third = deliver("AA03", "C", Some((3, 3)));
    assert_eq!(
        store.record_inbound(third.clone()).await.unwrap(),
        InboundOutcome::Partial { have: 1, parts: 3 }
    );
    assert_eq!(
        store.record_inbound(third).await.unwrap(),
        InboundOutcome::Duplicate
    );
    assert_eq!(
        store
            .record_inbound(deliver("AA01", "A", Some((1, 3))))
            .await
            .unwrap(),
        InboundOutcome::Partial { have: 2, parts: 3 }
    );
    let InboundOutcome::Complete(message) = store
        .record_inbound(deliver("AA02", "B", Some((2, 3))))
        .await
        .unwrap()
    else {
        panic!("three parts should complete the message");
    };
    assert_eq!(message.text, "ABC");
    assert_eq!(message.state, MessageState::Received);
    assert_eq!(message.direction, Direction::Inbound);
    assert_eq!(message.part_count, 3);
    // A re-read of any part after completion changes nothing.
    assert_eq!(
        store
            .record_inbound(deliver("AA02", "B", Some((2, 3))))
            .await
            .unwrap(),
        InboundOutcome::Duplicate
    );
    let single = store
        .record_inbound(deliver("BB", "STOP", None))
        .await
        .unwrap();
    assert!(matches!(single, InboundOutcome::Complete(ref m) if m.text == "STOP"));
    let garbage = InboundPart {
        modem: "m1".into(),
        pdu_hex: "FFFF".into(),
        content: InboundContent::Undecodable {
            error: "bad TP-MTI".into(),
        },
    };
    let InboundOutcome::Complete(kept) = store.record_inbound(garbage).await.unwrap() else {
        panic!("undecodable PDUs are kept as messages");
    };
    assert_eq!(kept.encoding, TextEncoding::Undecoded);
    assert_eq!(kept.error.as_deref(), Some("bad TP-MTI"));

    let conversation = store
        .conversation("+15557654321", None, None)
        .await
        .unwrap();
    assert_eq!(conversation.messages.len(), 2);
    assert_eq!(store.modems().await.unwrap()[0].received, 3);
    // Received messages are counted by the modem they came in on.
    assert_totals_match(&store, &path).await;
}

#[tokio::test]
async fn an_incomplete_inbound_message_is_released_with_what_came() {
    use modemgate::webhook::EventKind;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open_with_webhooks(&dir.path().join("gw.db"), &clock);
    let after = Duration::from_secs(30 * 60);
    store
        .record_inbound(deliver("DD01", "I can pay ", Some((1, 3))))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    store
        .record_inbound(deliver("DD03", " on Friday", Some((3, 3))))
        .await
        .unwrap();

    // Not yet: the first part is 29 minutes old.
    clock.advance(Duration::from_secs(28 * 60));
    assert!(store.release_incomplete(after).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    let released = store.release_incomplete(after).await.unwrap();
    assert_eq!(released.len(), 1, "{released:?}");
    let message = &released[0];
    assert_eq!(message.text, "I can pay […] on Friday");
    assert_eq!(message.state, MessageState::Received);
    assert_eq!(message.part_count, 2);
    assert_eq!(message.peer, "+15557654321");
    assert_eq!(message.modem.as_deref(), Some("m1"));
    assert_eq!(
        message.error.as_deref(),
        Some("incomplete: 2 of 3 parts arrived; part 2 never came")
    );
    let due = hook_due(&store, &clock).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, EventKind::MessageReceived);
    // Released once: a second sweep finds nothing.
    assert!(store.release_incomplete(after).await.unwrap().is_empty());

    // The lost part turning up late waits on its own, then is released on its own.
    assert_eq!(
        store
            .record_inbound(deliver("DD02", "50 dollars", Some((2, 3))))
            .await
            .unwrap(),
        InboundOutcome::Partial { have: 1, parts: 3 }
    );
    clock.advance(after);
    let late = store.release_incomplete(after).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].text, "[…]50 dollars[…]");
    let conversation = store
        .conversation("+15557654321", None, None)
        .await
        .unwrap();
    assert_eq!(conversation.messages.len(), 2);
}

async fn sent_message(store: &Store, to: &str, modem: &str, tp_mrs: &[u8]) -> uuid::Uuid {
    send(store, message(to, "x", tp_mrs.len()), modem, tp_mrs).await
}

/// Accepts `message` and sends its parts on `modem` with TP-MRs `tp_mrs`, one per part.
async fn send(store: &Store, message: NewMessage, modem: &str, tp_mrs: &[u8]) -> uuid::Uuid {
    let id = store.accept(message).await.unwrap().id;
    store.claim(id, modem, None).await.unwrap();
    for (index, tp_mr) in tp_mrs.iter().enumerate() {
        let part = index as u16 + 1;
        store.part_submitting(id, part, modem, None).await.unwrap();
        store.part_sent(id, part, modem, *tp_mr).await.unwrap();
    }
    id
}

fn report(modem: &str, tp_mr: u8, recipient: &str, status: u8) -> ReportIn {
    ReportIn {
        modem: modem.into(),
        tp_mr,
        recipient: recipient.into(),
        status,
        discharged_at: None,
    }
}

/// A message whose part went `unknown` (written, then the port vanished before `+CMGS` answered) is
/// settled by that part's delivery report, matched by modem and recipient since its TP-MR was never
/// learnt; two such parts to one recipient cannot be told apart, so neither is.
#[tokio::test]
async fn a_report_settles_a_part_left_unknown_when_only_one_fits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("gw.db"), &clock);
    let unknown = |to: &'static str| {
        let store = store.clone();
        async move {
            let id = store.accept(message(to, "x", 1)).await.unwrap().id;
            store.claim(id, "m1", None).await.unwrap();
            store.part_submitting(id, 1, "m1", None).await.unwrap();
            store
                .part_unknown(id, 1, "m1", "the port vanished")
                .await
                .unwrap();
            id
        }
    };
    let lone = unknown("+15551110001").await;
    let twin_a = unknown("+15551110002").await;
    let twin_b = unknown("+15551110002").await;
    assert_eq!(
        store
            .record_report(report("m2", 7, "+15551110001", 0))
            .await
            .unwrap(),
        ReportOutcome::Unmatched,
        "another modem's report"
    );
    assert_eq!(
        store
            .record_report(report("m1", 7, "+15551110001", 0))
            .await
            .unwrap(),
        ReportOutcome::Matched {
            id: lone,
            part: 1,
            state: MessageState::Delivered
        }
    );
    let detail = store.get(lone).await.unwrap().unwrap();
    assert_eq!(detail.message.error, None, "{:?}", detail.message);
    assert_eq!(detail.parts[0].tp_mr, Some(7));
    let last = detail.events.last().unwrap();
    assert!(
        last.detail
            .as_deref()
            .is_some_and(|d| d.contains("matched by its recipient")),
        "{last:?}"
    );
    assert_eq!(
        store
            .record_report(report("m1", 8, "+15551110002", 0))
            .await
            .unwrap(),
        ReportOutcome::Unmatched
    );
    assert_eq!(state(&store, twin_a).await, MessageState::Unknown);
    assert_eq!(state(&store, twin_b).await, MessageState::Unknown);
}

#[tokio::test]
async fn status_reports_match_by_modem_reference_and_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("gw.db"), &clock);
    let to_a = sent_message(&store, "+15551110001", "m1", &[5, 6]).await;
    let to_b = sent_message(&store, "+15551110002", "m1", &[9]).await;
    let on_m2 = sent_message(&store, "+15551110002", "m2", &[9]).await;

    // Wrong recipient, wrong modem, unknown reference: no match.
    for unmatched in [
        report("m1", 5, "+15551110002", 0),
        report("m3", 9, "+15551110002", 0),
        report("m1", 200, "+15551110001", 0),
    ] {
        assert_eq!(
            store.record_report(unmatched).await.unwrap(),
            ReportOutcome::Unmatched
        );
    }
    // The national form of the number matches too; a message is delivered once every part is.
    let first = store
        .record_report(report("m1", 5, "5551110001", 0))
        .await
        .unwrap();
    assert_eq!(
        first,
        ReportOutcome::Matched {
            id: to_a,
            part: 1,
            state: MessageState::Sent
        }
    );
    let second = store
        .record_report(report("m1", 6, "+15551110001", 0))
        .await
        .unwrap();
    assert!(matches!(
        second,
        ReportOutcome::Matched {
            state: MessageState::Delivered,
            ..
        }
    ));
    // SC still trying: no change; then permanent failure.
    let pending = store
        .record_report(report("m1", 9, "+15551110002", 0x20))
        .await
        .unwrap();
    assert!(
        matches!(pending, ReportOutcome::Matched { id, state: MessageState::Sent, .. } if id == to_b)
    );
    let failed = store
        .record_report(report("m1", 9, "+15551110002", 0x41))
        .await
        .unwrap();
    assert!(
        matches!(failed, ReportOutcome::Matched { id, state: MessageState::Failed, .. } if id == to_b)
    );
    assert_eq!(state(&store, on_m2).await, MessageState::Sent);

    // Outside the window a report matches nothing.
    let late = sent_message(&store, "+15551110003", "m1", &[11]).await;
    clock.advance(Duration::from_secs(4 * 24 * 3600));
    assert_eq!(
        store
            .record_report(report("m1", 11, "+15551110003", 0))
            .await
            .unwrap(),
        ReportOutcome::Unmatched
    );
    assert_eq!(state(&store, late).await, MessageState::Sent);
}

#[tokio::test]
async fn a_crash_leaves_submitting_parts_unknown_and_requeues_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    let in_flight = store
        .accept(message("+15552220001", "a", 2))
        .await
        .unwrap()
        .id;
    store.claim(in_flight, "m1", None).await.unwrap();
    store
        .part_submitting(in_flight, 1, "m1", None)
        .await
        .unwrap();
    let claimed = store
        .accept(message("+15552220002", "b", 1))
        .await
        .unwrap()
        .id;
    store.claim(claimed, "m2", None).await.unwrap();
    let half_sent = store
        .accept(message("+15552220003", "c", 2))
        .await
        .unwrap()
        .id;
    store.claim(half_sent, "m3", None).await.unwrap();
    store
        .part_submitting(half_sent, 1, "m3", None)
        .await
        .unwrap();
    store.part_sent(half_sent, 1, "m3", 1).await.unwrap();
    let queued = store
        .accept(message("+15552220004", "d", 1))
        .await
        .unwrap()
        .id;
    drop(store);

    let store = open(&path, &clock);
    assert_eq!(store.recovery().unknown, [in_flight]);
    let mut requeued = store.recovery().requeued.clone();
    requeued.sort();
    let mut expected = vec![claimed, half_sent];
    expected.sort();
    assert_eq!(requeued, expected);
    assert_eq!(state(&store, in_flight).await, MessageState::Unknown);
    let detail = store.get(in_flight).await.unwrap().unwrap();
    assert_eq!(detail.parts[0].state, PartState::Unknown);
    assert_eq!(detail.events.last().unwrap().kind, "recovered");
    assert_eq!(
        detail.message.error.as_deref(),
        Some("restarted while a part was being submitted: it may or may not have been sent"),
        "an unknown message says why"
    );
    let queue = store.queue().await.unwrap();
    let ids: Vec<_> = queue.iter().map(|e| e.id).collect();
    assert_eq!(ids, [claimed, half_sent, queued]);
    // The rest of a half-sent message must go out on the modem that sent its first part.
    assert_eq!(queue[1].pinned_modem.as_deref(), Some("m3"));
    let rest = store.claim(half_sent, "m3", None).await.unwrap();
    assert_eq!(rest.iter().map(|p| p.part).collect::<Vec<_>>(), [2]);
    // Both may have reached their phones, so both count against the caps after the restart: the
    // unknown one, and the half-sent one once (its second part adds nothing).
    store
        .part_submitting(half_sent, 2, "m3", None)
        .await
        .unwrap();
    store.part_sent(half_sent, 2, "m3", 2).await.unwrap();
    let mut counted: Vec<_> = store
        .recent_sends(start() - jiff::SignedDuration::from_secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.recipient, s.message_id))
        .collect();
    counted.sort();
    assert_eq!(
        counted,
        [
            ("+15552220001".to_owned(), in_flight),
            ("+15552220003".to_owned(), half_sent)
        ]
    );
}

#[tokio::test]
async fn resending_submitting_parts_after_a_crash_is_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let store = open(&path, &clock);
    let id = store
        .accept(message("+15552220005", "a", 1))
        .await
        .unwrap()
        .id;
    store.claim(id, "m1", None).await.unwrap();
    store.part_submitting(id, 1, "m1", None).await.unwrap();
    drop(store);
    let store = Store::open(
        &path,
        OpenOptions {
            resend_submitting: true,
            ..options(&clock)
        },
    )
    .unwrap();
    assert_eq!(store.recovery().requeued, [id]);
    assert_eq!(state(&store, id).await, MessageState::Queued);
}

#[tokio::test]
async fn listing_filters_and_pages_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("gw.db"), &clock);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut m = message("+15553330001", "x", 1);
        m.reference = Some(format!("ref-{}", i % 2));
        ids.push(store.accept(m).await.unwrap().id);
        clock.advance(Duration::from_secs(1));
    }
    store.accept(message("+15553330002", "y", 1)).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(ListFilter {
                peer: Some("+15553330001".into()),
                limit: Some(2),
                after: after.clone(),
                ..ListFilter::default()
            })
            .await
            .unwrap();
        seen.extend(page.messages.iter().map(|m| m.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let by_reference = store
        .list(ListFilter {
            reference: Some("ref-1".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_reference.messages.len(), 2);
    let window = store
        .list(ListFilter {
            since: Some(start() + jiff::SignedDuration::from_secs(1)),
            until: Some(start() + jiff::SignedDuration::from_secs(3)),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[1..3]
    );
    assert!(matches!(
        store
            .list(ListFilter {
                after: Some("nope".into()),
                ..ListFilter::default()
            })
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
}

/// What the look-ups by key hold, read beside the store: (rows merged, whether a run is part done:
/// rows in the table past the watermark).
fn merge_state(path: &Path) -> (i64, bool) {
    let conn = Connection::open(path).unwrap();
    conn.query_row(
        "SELECT (SELECT count(*) FROM message_keys), EXISTS (SELECT 1 FROM message_keys \
         WHERE first > unhex(replace((SELECT upto FROM message_keys_merged), '-', '')))",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .unwrap()
}

/// Ids of the messages `column = value`, oldest first, read from the messages table directly.
fn ids_where(path: &Path, column: &str, value: &str) -> Vec<uuid::Uuid> {
    Connection::open(path)
        .unwrap()
        .prepare(&format!(
            "SELECT id FROM messages WHERE {column} = ?1 ORDER BY id"
        ))
        .unwrap()
        .query_map([value], |row| row.get::<_, String>(0))
        .unwrap()
        .map(|id| id.unwrap().parse().unwrap())
        .collect()
}

/// Every look-up by key against the messages table: each number's conversation, each reference's list,
/// each send's idempotency key through a reader (its acceptance time); then `replay`'s through the
/// writer (a replay, and one with another body), each followed by the reads again, since a replay is a
/// write and takes a run a slice further. Returns the merge states the reads were checked in.
async fn look_ups_match_the_table(
    store: &Store,
    path: &Path,
    numbers: &[&str],
    sent: &[NewMessage],
    replay: &[NewMessage],
) -> Vec<(i64, bool)> {
    let mut states = vec![reads_match_the_table(store, path, numbers, sent).await];
    for message in replay {
        let key = message.idempotency_key.as_deref().unwrap();
        let original = ids_where(path, "idempotency_key", key);
        let replayed = store.replay(message.clone()).await.unwrap();
        assert_eq!(replayed.map(|a| a.id), original.first().copied(), "{key}");
        let mut changed = message.clone();
        changed.text.push('!');
        assert!(
            matches!(store.replay(changed).await, Err(StoreError::IdempotencyConflict { original: id, .. }) if id == original[0]),
            "{key}"
        );
        states.push(reads_match_the_table(store, path, numbers, sent).await);
    }
    states
}

/// The reads of [`look_ups_match_the_table`]; returns the merge state they ran in.
async fn reads_match_the_table(
    store: &Store,
    path: &Path,
    numbers: &[&str],
    sent: &[NewMessage],
) -> (i64, bool) {
    let state = merge_state(path);
    for number in numbers {
        let page = store.conversation(number, Some(1000), None).await.unwrap();
        let found: Vec<_> = page.messages.iter().map(|m| m.id).collect();
        assert_eq!(
            found,
            ids_where(path, "peer", number),
            "conversation with {number}"
        );
        let reference = reference_of(number);
        let filter = ListFilter {
            reference: Some(reference.clone()),
            limit: Some(1000),
            ..ListFilter::default()
        };
        let listed: Vec<_> = store
            .list(filter)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(
            listed,
            ids_where(path, "reference", &reference),
            "{reference}"
        );
    }
    for message in sent {
        let key = message.idempotency_key.as_deref().unwrap();
        assert!(
            store.accepted_at("cms", key).await.unwrap().is_some(),
            "{key}"
        );
    }
    assert_eq!(store.accepted_at("cms", "never-sent").await.unwrap(), None);
    state
}

fn reference_of(number: &str) -> String {
    format!("acct-{}", &number[number.len() - 1..])
}

/// The look-ups by number, reference and idempotency key are merged a slice per batch behind a watermark
/// (see `store::keys`); they must answer exactly at every point: nothing merged, a run part done, a run
/// finished, and after a restart that cut a run short.
#[tokio::test]
async fn looking_up_by_key_is_exact_before_during_and_after_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let numbers = [
        "+15550000003",
        "+15550000001",
        "+15550000004",
        "+15550000002",
    ];
    let open_merging = || {
        let options = OpenOptions {
            key_merge: MergePolicy {
                messages: 7,
                every: Duration::MAX,
                slice: 3,
            },
            ..options(&clock)
        };
        Store::open(&path, options).unwrap()
    };
    let mut sent = Vec::new();
    let keyed = |sent: &mut Vec<NewMessage>, number: &str, text: &str| {
        let mut m = message(number, text, 1);
        m.reference = Some(reference_of(number));
        m.idempotency_key = Some(format!("key-{}", sent.len()));
        sent.push(m.clone());
        m
    };
    let store = open_merging();
    let (mut saw_partial, mut saw_merged, mut replayed) = (false, false, 0);
    for round in 0..12usize {
        if round % 3 == 0 {
            let batch: Vec<_> = (0..round % 5 + 1)
                .map(|i| keyed(&mut sent, numbers[(round + i) % 4], "batch"))
                .collect();
            // A repeat inside the batch is found among the batch's own keys.
            let repeat = batch[0].clone();
            let results = store
                .accept_batch([batch, vec![repeat]].concat())
                .await
                .unwrap();
            let ids: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
            assert!(ids.last().unwrap().duplicate && ids.last().unwrap().id == ids[0].id);
        } else {
            store
                .accept(keyed(&mut sent, numbers[round % 4], "single"))
                .await
                .unwrap();
        }
        // This round's sends are replayed; every send's key is read.
        let replay = &sent[replayed..];
        for (merged, partial) in
            look_ups_match_the_table(&store, &path, &numbers, &sent, replay).await
        {
            saw_partial |= partial;
            saw_merged |= merged > 0;
        }
        replayed = sent.len();
    }
    assert!(
        saw_partial && saw_merged,
        "the test never saw a run under way"
    );
    // Stop in the middle of a run: the next start does it again.
    while !merge_state(&path).1 {
        store
            .accept(keyed(&mut sent, numbers[0], "more"))
            .await
            .unwrap();
    }
    drop(store);
    let store = open_merging();
    look_ups_match_the_table(&store, &path, &numbers, &sent, &sent).await;
    store
        .accept(keyed(&mut sent, numbers[1], "after"))
        .await
        .unwrap();
    look_ups_match_the_table(&store, &path, &numbers, &sent, &sent).await;
}

#[tokio::test]
async fn state_changes_write_webhook_events_in_the_same_commit() {
    use modemgate::webhook::{Attempt, AttemptOutcome, EventKind, OutboxStore};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open_with_webhooks(&dir.path().join("gw.db"), &clock);
    let mut m = message("+15554440002", "x", 1);
    m.reference = Some("acct-7".into());
    m.metadata = Some(serde_json::json!({"case": 7}));
    let id = store.accept(m).await.unwrap().id;
    store.claim(id, "m1", None).await.unwrap();
    store.part_submitting(id, 1, "m1", None).await.unwrap();
    store.part_sent(id, 1, "m1", 4).await.unwrap();
    store
        .record_report(report("m1", 4, "+15554440002", 0))
        .await
        .unwrap();

    // Only the oldest undelivered event of a message is offered: sent before delivered.
    let due = hook_due(&store, &clock).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, EventKind::MessageSent);
    let body: serde_json::Value = serde_json::from_slice(&due[0].body).unwrap();
    assert_eq!(body["type"], "message.sent");
    assert_eq!(body["data"]["message_id"], id.to_string());
    assert_eq!(body["data"]["reference"], "acct-7");
    assert_eq!(body["data"]["metadata"]["case"], 7);

    let retry_at = start() + jiff::SignedDuration::from_secs(30);
    store
        .record_attempt(
            due[0].id,
            Attempt {
                at: clock.now(),
                outcome: AttemptOutcome::Status(500),
                next_at: retry_at,
            },
        )
        .await
        .unwrap();
    assert!(hook_due(&store, &clock).await.is_empty());
    clock.set(retry_at);
    let due = hook_due(&store, &clock).await;
    assert_eq!(due[0].attempts, 1);
    store
        .mark_delivered(due[0].id, clock.now(), 200)
        .await
        .unwrap();
    let due = hook_due(&store, &clock).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, EventKind::MessageDelivered);
    store
        .mark_delivered(due[0].id, clock.now(), 200)
        .await
        .unwrap();

    store
        .record_inbound(deliver("CC", "STOP", None))
        .await
        .unwrap();
    let opt_out = |number: &str, how: OptOutSource, detail: &str| {
        store.set_optout(OptOutChange {
            number: number.into(),
            opted_out: Some(how),
            actor: "rules".into(),
            source_message: None,
            modem: Some("m1".into()),
            detail: Some(detail.into()),
        })
    };
    opt_out("+15557654321", OptOutSource::Keyword, "STOP")
        .await
        .unwrap();
    assert!(store.is_opted_out("+15557654321").await.unwrap());
    let due = hook_due(&store, &clock).await;
    let kinds: Vec<_> = due.iter().map(|item| item.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::MessageReceived, EventKind::OptoutCreated]
    );
    let received: serde_json::Value = serde_json::from_slice(&due[0].body).unwrap();
    assert_eq!(received["data"]["text"], "STOP");
    assert_eq!(received["data"]["from"], "+15557654321");
    let optout: serde_json::Value = serde_json::from_slice(&due[1].body).unwrap();
    assert_eq!(
        (
            &optout["data"]["source"],
            &optout["data"]["keyword"],
            &optout["data"]["note"]
        ),
        (
            &serde_json::json!("keyword"),
            &serde_json::json!("STOP"),
            &serde_json::Value::Null
        )
    );
    // A reply under review: its text in `text`, not posing as a keyword; the audit trail marks it.
    opt_out(
        "+15557654322",
        OptOutSource::Review,
        "Please stop texting me",
    )
    .await
    .unwrap();
    let due = hook_due(&store, &clock).await;
    let review: serde_json::Value = serde_json::from_slice(&due[2].body).unwrap();
    assert_eq!(
        (
            &review["data"]["source"],
            &review["data"]["keyword"],
            &review["data"]["text"]
        ),
        (
            &serde_json::json!("review"),
            &serde_json::Value::Null,
            &serde_json::json!("Please stop texting me")
        )
    );
    let record = store.optout("+15557654322").await.unwrap().unwrap();
    assert_eq!(
        record.detail.as_deref(),
        Some("review: Please stop texting me")
    );

    // With no webhook subscribed, nothing is written.
    let quiet = open(&dir.path().join("quiet.db"), &clock);
    let id = quiet
        .accept(message("+15554440003", "x", 1))
        .await
        .unwrap()
        .id;
    quiet.expire(id).await.unwrap();
    assert!(hook_due(&quiet, &clock).await.is_empty());
}

#[tokio::test]
async fn outbox_rows_from_before_per_webhook_rows_go_to_the_shared_lane() {
    use modemgate::webhook::{EventKind, Lane, OutboxStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    // A database left at version 8 with an undelivered event, as the webhook loop of that version wrote it.
    {
        let mut conn = Connection::open(&path).unwrap();
        migrations::migrate(&mut conn, 8).unwrap();
        conn.execute(
            "INSERT INTO webhook_outbox (event_type, message_id, payload, next_attempt_at, created_at) \
             VALUES ('message.sent', '0190a0a0-0000-7000-8000-000000000001', '{}', 0, 0)",
            [],
        )
        .unwrap();
    }
    let store = open_with_webhooks(&path, &clock);
    assert!(hook_due(&store, &clock).await.is_empty());
    let shared = store
        .next_due(&Lane::Shared, clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(
        shared
            .iter()
            .map(|item| (item.kind, item.target.clone()))
            .collect::<Vec<_>>(),
        [(EventKind::MessageSent, None)]
    );
    // A new event goes to the webhook's own lane (an old row does not hold it back: lanes are ordered apart).
    let id = store
        .accept(message("+15554440004", "x", 1))
        .await
        .unwrap()
        .id;
    store.expire(id).await.unwrap();
    let own = hook_due(&store, &clock).await;
    assert_eq!(
        own.iter()
            .map(|item| (item.kind, item.target.as_deref()))
            .collect::<Vec<_>>(),
        [(EventKind::MessageExpired, Some(HOOK))]
    );
    // Counted apart in the backlog.
    let targets: Vec<_> = store
        .totals()
        .await
        .unwrap()
        .webhooks
        .into_iter()
        .map(|backlog| (backlog.target, backlog.pending))
        .collect();
    assert_eq!(targets, [(None, 1), (Some(HOOK.to_owned()), 1)]);
}

#[tokio::test]
async fn the_webhook_backlog_is_counted_per_webhook_with_its_oldest_event() {
    use modemgate::store::WebhookBacklog;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open_with_webhooks(&dir.path().join("gw.db"), &clock);
    let id = store
        .accept(message("+15554440005", "x", 1))
        .await
        .unwrap()
        .id;
    let queued_at = clock.now();
    store.expire(id).await.unwrap();
    clock.advance(std::time::Duration::from_secs(30));
    let other = store
        .accept(message("+15554440006", "x", 1))
        .await
        .unwrap()
        .id;
    store.expire(other).await.unwrap();
    assert_eq!(
        store.totals().await.unwrap().webhooks,
        [WebhookBacklog {
            target: Some(HOOK.into()),
            pending: 2,
            oldest: Some(queued_at),
        }]
    );
}

#[tokio::test]
async fn a_named_webhooks_undelivered_events_follow_it_to_a_new_url() {
    use modemgate::webhook::{Lane, OutboxStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    let clock = ManualClock::new(start());
    let expire_one = |store: Store, to: &'static str| async move {
        let id = store.accept(message(to, "x", 1)).await.unwrap().id;
        store.expire(id).await.unwrap();
    };
    // An event for `cms` at its old URL, and one for an unnamed webhook.
    expire_one(open_with_webhooks(&path, &clock), "+15554440007").await;
    let unnamed = "http://127.0.0.1:9/unnamed";
    expire_one(
        open_with_webhook_at(&path, &clock, unnamed, None),
        "+15554440008",
    )
    .await;
    // The admin gives `cms` a new URL.
    let moved_to = "https://cms.example/new-hook";
    let store = open_with_webhook_at(&path, &clock, moved_to, Some("cms"));
    let moved = store
        .follow_renamed_webhooks(vec![("cms".into(), moved_to.into())])
        .await
        .unwrap();
    assert_eq!(moved, [("cms".to_owned(), 1)]);
    let due = |url: &str| {
        let store = store.clone();
        let lane = Lane::Webhook(url.into());
        let now = clock.now();
        async move { store.next_due(&lane, now, 10).await.unwrap().len() }
    };
    assert_eq!((due(moved_to).await, due(HOOK).await), (1, 0));
    assert_eq!(
        due(unnamed).await,
        1,
        "an unnamed webhook's rows stay where they were"
    );
    // Done once: a second start moves nothing.
    assert!(
        store
            .follow_renamed_webhooks(vec![("cms".into(), moved_to.into())])
            .await
            .unwrap()
            .is_empty()
    );
}

/// One part of a fresh message to `to`, sent on `modem`.
async fn send_one(store: &Store, to: &str, modem: &str) {
    let id = store.accept(message(to, "x", 1)).await.unwrap().id;
    store.claim(id, modem, None).await.unwrap();
    store.part_submitting(id, 1, modem, None).await.unwrap();
    store.part_sent(id, 1, modem, 1).await.unwrap();
}

#[tokio::test]
async fn daily_counts_follow_the_sim_not_the_port() {
    use modemgate::modem::job::ModemIdentity;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open(&dir.path().join("gw.db"), &clock);
    let sim = |iccid: &str| ModemIdentity {
        iccid: Some(iccid.into()),
        ..ModemIdentity::default()
    };
    // Before its ICCID is known a modem's parts count under its id; after, under its SIM.
    send_one(&store, "+15550001001", "m1").await;
    store.upsert_modem("m1", sim("8901001")).await.unwrap();
    send_one(&store, "+15550001002", "m1").await;
    send_one(&store, "+15550001003", "m1").await;
    send_one(&store, "+15550001004", "m3").await;
    let counts = store.daily_sent(clock.now()).await.unwrap();
    assert_eq!((counts.of("m1", None), counts.of("m3", None)), (3, 1));

    // The SIM moves to port m2 and a fresh SIM goes into m1: the count goes with the SIM.
    store.upsert_modem("m2", sim("8901001")).await.unwrap();
    store.upsert_modem("m1", sim("8902002")).await.unwrap();
    send_one(&store, "+15550001005", "m2").await;
    let counts = store.daily_sent(clock.now()).await.unwrap();
    assert_eq!(
        counts.of("m2", None),
        3,
        "two from the SIM's time in m1, one from m2: {counts:?}"
    );
    assert_eq!(
        counts.of("m1", None),
        1,
        "the new SIM has sent nothing; m1's part from before the ICCID stays"
    );
    assert_eq!(counts.of("m3", None), 1);
    // A worker's own report of its SIM wins over the store's record (not written yet after a swap).
    assert_eq!(counts.of("m2", Some("8902002")), 0);
    assert_eq!(
        counts.of("m1", Some("8901001")),
        4,
        "the SIM's three, and the part m1 sent before any ICCID"
    );
}

#[tokio::test]
async fn cap_days_follow_the_cap_zone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = Store::open(
        dir.path().join("gw.db"),
        OpenOptions {
            cap_zone: jiff::tz::TimeZone::get("America/New_York").unwrap(),
            ..options(&clock)
        },
    )
    .unwrap();
    // 23:59:59 on 7 March in New York; the next day starts at 05:00 UTC.
    let day = store.cap_day("2026-03-08T04:59:59Z".parse().unwrap());
    assert_eq!(day.day, "2026-03-07");
    assert_eq!(
        day.ends,
        "2026-03-08T05:00:00Z".parse::<Timestamp>().unwrap()
    );
    // 8 March is 23 hours long there (DST starts): the next day starts at 04:00 UTC.
    let day = store.cap_day("2026-03-08T05:00:00Z".parse().unwrap());
    assert_eq!(day.day, "2026-03-08");
    assert_eq!(
        day.ends,
        "2026-03-09T04:00:00Z".parse::<Timestamp>().unwrap()
    );
}

/// Rows of `table` whose `message_id` is one of `ids`.
fn rows_of(path: &Path, table: &str, ids: &[uuid::Uuid]) -> i64 {
    let conn = Connection::open(path).unwrap();
    ids.iter()
        .map(|id| {
            conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE message_id = ?1"),
                [id.to_string()],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
        })
        .sum()
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

/// Retention deletes finished messages last changed before the cutoff with everything that hangs off them,
/// chunk by chunk, and keeps a pending message however old, newer messages, and every opt-out.
#[tokio::test]
async fn pruning_deletes_finished_messages_before_the_cutoff_and_keeps_the_rest() {
    use modemgate::webhook::{Attempt, AttemptOutcome, OutboxStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prune.db");
    let clock = ManualClock::new(start());
    let store = open_with_webhooks(&path, &clock);
    let mut old = Vec::new();
    for i in 0..3u8 {
        let mut sent = message(&format!("+1415890000{i}"), "x", 1);
        // One with every key a message is looked up by.
        if i == 0 {
            sent.reference = Some("acct-old".into());
            sent.idempotency_key = Some("old-1".into());
        }
        old.push(send(&store, sent, "m0", &[i + 1]).await);
    }
    let waiting = store
        .accept(message("+14158900010", "still waiting", 1))
        .await
        .unwrap()
        .id;
    // A webhook event that failed once: its attempt goes with it.
    let due = hook_due(&store, &clock).await;
    let attempt = Attempt {
        at: clock.now(),
        outcome: AttemptOutcome::Status(500),
        next_at: clock.now(),
    };
    store.record_attempt(due[0].id, attempt).await.unwrap();
    store
        .set_optout(OptOutChange {
            number: "+14158900001".into(),
            opted_out: Some(OptOutSource::Api),
            actor: "api:cms".into(),
            source_message: None,
            modem: None,
            detail: None,
        })
        .await
        .unwrap();
    // Two old replies: a question, and a STOP that an opt-out's audit names as its evidence.
    let received = |pdu: &'static str, text: &'static str| {
        let store = &store;
        async move {
            match store
                .record_inbound(deliver(pdu, text, None))
                .await
                .unwrap()
            {
                InboundOutcome::Complete(message) => message.id,
                other => panic!("{other:?}"),
            }
        }
    };
    old.push(received("CC", "can I pay Friday?").await);
    let stop = received("DD", "STOP").await;
    store
        .set_optout(OptOutChange {
            number: "+15557654321".into(),
            opted_out: Some(OptOutSource::Keyword),
            actor: "modem:m1".into(),
            source_message: Some(stop),
            modem: Some("m1".into()),
            detail: Some("STOP".into()),
        })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10 * 86_400));
    let cutoff = clock.now();
    clock.advance(Duration::from_secs(86_400));
    let recent = sent_message(&store, "+14158900020", "m0", &[9]).await;
    assert!(rows_of(&path, "events", &old) > 0 && rows_of(&path, "webhook_outbox", &old) > 0);
    let by_reference = || ListFilter {
        reference: Some("acct-old".into()),
        ..ListFilter::default()
    };
    let listed = store.list(by_reference()).await.unwrap().messages;
    assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), [old[0]]);

    // Chunks of 2: the walks take several calls.
    let (mut cursor, mut messages, mut events, mut calls) = (PruneCursor::default(), 0, 0, 0);
    loop {
        let pruned = store.prune(cutoff, cursor, 2).await.unwrap();
        (messages, events, calls) = (
            messages + pruned.messages,
            events + pruned.webhook_events,
            calls + 1,
        );
        match pruned.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(messages, 4);
    assert_eq!(
        events, 7,
        "a message.sent or message.received each, and two optout.created"
    );
    assert!(calls > 2, "{calls}");
    for id in &old {
        assert!(store.get(*id).await.unwrap().is_none());
    }
    for table in ["events", "parts", "webhook_outbox"] {
        assert_eq!(rows_of(&path, table, &old), 0, "{table}");
    }
    // The look-ups by key no longer name them, and still name what is kept.
    for id in &old {
        let packed = id.as_bytes().to_vec();
        let sql = "SELECT (SELECT count(*) FROM message_keys WHERE instr(ids, ?1) > 0) \
                   + (SELECT count(*) FROM idempotency_keys WHERE instr(ids, ?1) > 0)";
        let named: i64 = Connection::open(&path)
            .unwrap()
            .query_row(sql, [packed], |row| row.get(0))
            .unwrap();
        assert_eq!(named, 0, "{id}");
    }
    let kept = store
        .conversation("+14158900020", None, None)
        .await
        .unwrap();
    assert_eq!(kept.messages.len(), 1);
    assert!(
        store
            .list(by_reference())
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    // The key went with its message: a new send may use it.
    let mut reused = message("+14158900030", "another", 1);
    reused.idempotency_key = Some("old-1".into());
    let reused = store.accept(reused).await.unwrap();
    assert!(!reused.duplicate && !old.contains(&reused.id));
    assert_eq!(count(&path, "SELECT count(*) FROM webhook_attempts"), 0);
    let before = cutoff.as_millisecond();
    let recipient_sends = format!("SELECT count(*) FROM recipient_sends WHERE at < {before}");
    assert_eq!(count(&path, &recipient_sends), 0);
    // Kept: the pending message however old, the recent one with its event, the opt-out and its audit.
    assert_eq!(state(&store, waiting).await, MessageState::Queued);
    assert_eq!(state(&store, recent).await, MessageState::Sent);
    assert_eq!(rows_of(&path, "webhook_outbox", &[recent]), 1);
    assert!(store.is_opted_out("+14158900001").await.unwrap());
    assert_eq!(count(&path, "SELECT count(*) FROM optout_audit"), 2);
    // ... and the STOP the audit names, with its history.
    let evidence = store.get(stop).await.unwrap().expect("the STOP is kept");
    assert_eq!(evidence.message.text, "STOP");
    assert!(rows_of(&path, "events", &[stop]) > 0);
    // What /metrics counts follows the deletions.
    assert_totals_match(&store, &path).await;
    // A second pass has nothing left to do.
    let again = store
        .prune(cutoff, PruneCursor::default(), 100)
        .await
        .unwrap();
    assert_eq!((again.messages, again.webhook_events), (0, 0));
}

/// A number's opt-out events reach each webhook in the order they happened: a START's `optout.removed`
/// waits for the STOP's `optout.created`, as a message's later events wait for its earlier ones.
#[tokio::test]
async fn opt_out_events_of_one_number_go_out_in_order() {
    use modemgate::webhook::{EventKind, OutboxStore};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let store = open_with_webhooks(&dir.path().join("optout.db"), &clock);
    let change = |number: &str, opted_out: Option<OptOutSource>| OptOutChange {
        number: number.into(),
        opted_out,
        actor: "api:cms".into(),
        source_message: None,
        modem: None,
        detail: Some("asked by phone".into()),
    };
    store
        .set_optout(change("+14158900001", Some(OptOutSource::Api)))
        .await
        .unwrap();
    store
        .set_optout(change("+14158900001", None))
        .await
        .unwrap();
    store
        .set_optout(change("+14158900002", Some(OptOutSource::Api)))
        .await
        .unwrap();
    let due = hook_due(&store, &clock).await;
    let kinds: Vec<EventKind> = due.iter().map(|item| item.kind).collect();
    assert_eq!(kinds, [EventKind::OptoutCreated, EventKind::OptoutCreated]);
    store
        .mark_delivered(due[0].id, clock.now(), 200)
        .await
        .unwrap();
    let due = hook_due(&store, &clock).await;
    assert_eq!(due.len(), 2, "the other number's event is still due");
    let removed = due
        .iter()
        .find(|item| item.kind == EventKind::OptoutRemoved)
        .expect("the opt-in follows the delivered opt-out");
    let body: serde_json::Value = serde_json::from_slice(&removed.body).unwrap();
    assert_eq!(body["type"], "optout.removed");
    assert_eq!(body["data"]["number"], "+14158900001");
    assert_eq!(body["data"]["source"], "api");
    assert_eq!(body["data"]["note"], "asked by phone");
}
