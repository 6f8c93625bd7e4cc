//! Versioned schema migrations, applied in order at open; `PRAGMA user_version` records the last applied.
//!
//! A migration is never edited once released: a change is a new entry at the end, so every database,
//! whatever version it was left at, reaches the same schema.

use std::sync::Arc;

use rusqlite::Connection;

use super::error::{Result, StoreError};

/// Each entry takes the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: outbound and inbound messages, their parts, the event history, idempotency.
    r#"
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
        state TEXT NOT NULL,
        peer TEXT NOT NULL,
        text TEXT NOT NULL,
        encoding TEXT NOT NULL,
        part_count INTEGER NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        send_at INTEGER,
        expires_at INTEGER,
        reference TEXT,
        metadata TEXT,
        tz TEXT,
        api_key TEXT NOT NULL DEFAULT '',
        idempotency_key TEXT,
        body_hash BLOB,
        modem TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER,
        hold_reason TEXT,
        error_code INTEGER,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX messages_idempotency ON messages (api_key, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX messages_pending ON messages (state) WHERE state IN ('queued', 'scheduled', 'sending');
    CREATE INDEX messages_peer ON messages (peer, id);
    CREATE INDEX messages_reference ON messages (reference) WHERE reference IS NOT NULL;

    CREATE TABLE parts (
        message_id TEXT NOT NULL REFERENCES messages (id),
        part INTEGER NOT NULL,
        state TEXT NOT NULL,
        tpdu_length INTEGER NOT NULL,
        pdu TEXT NOT NULL,
        modem TEXT,
        tp_mr INTEGER,
        error_code INTEGER,
        submitted_at INTEGER,
        sent_at INTEGER,
        report_status INTEGER,
        reported_at INTEGER,
        PRIMARY KEY (message_id, part)
    ) WITHOUT ROWID;
    CREATE INDEX parts_report ON parts (modem, tp_mr, sent_at) WHERE tp_mr IS NOT NULL;

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        part INTEGER,
        detail TEXT,
        rule TEXT
    );
    CREATE INDEX events_message ON events (message_id, id);
    CREATE TRIGGER events_append_only BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    "#,
    // 2: inbound reassembly and modem identities/counters.
    r#"
    CREATE TABLE inbound_parts (
        id INTEGER PRIMARY KEY,
        modem TEXT NOT NULL,
        pdu TEXT NOT NULL,
        sender TEXT,
        concat_ref INTEGER,
        part INTEGER,
        parts INTEGER,
        text TEXT,
        encoding TEXT,
        sent_at INTEGER,
        received_at INTEGER NOT NULL,
        message_id TEXT
    );
    CREATE UNIQUE INDEX inbound_parts_pdu ON inbound_parts (modem, pdu);
    CREATE INDEX inbound_parts_open ON inbound_parts (modem, sender, concat_ref, parts)
        WHERE message_id IS NULL;

    CREATE TABLE modems (
        id TEXT PRIMARY KEY,
        manufacturer TEXT,
        model TEXT,
        revision TEXT,
        imei TEXT,
        imsi TEXT,
        iccid TEXT,
        own_number TEXT,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        parts_sent INTEGER NOT NULL DEFAULT 0,
        parts_failed INTEGER NOT NULL DEFAULT 0,
        received INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 3: caps, webhooks and opt-outs.
    r#"
    CREATE TABLE sim_daily_counters (
        modem TEXT NOT NULL,
        day TEXT NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (modem, day)
    ) WITHOUT ROWID;

    CREATE TABLE recipient_sends (
        id INTEGER PRIMARY KEY,
        recipient TEXT NOT NULL,
        modem TEXT NOT NULL,
        message_id TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX recipient_sends_recipient ON recipient_sends (recipient, at);

    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY,
        event_type TEXT NOT NULL,
        message_id TEXT,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        delivered_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;
    CREATE INDEX webhook_outbox_message ON webhook_outbox (message_id, id) WHERE delivered_at IS NULL;

    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES webhook_outbox (id),
        at INTEGER NOT NULL,
        status INTEGER,
        error TEXT
    );

    CREATE TABLE optouts (
        number TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        source_message TEXT,
        modem TEXT
    );

    CREATE TABLE optout_audit (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL,
        at INTEGER NOT NULL,
        active INTEGER NOT NULL,
        actor TEXT NOT NULL,
        source_message TEXT,
        modem TEXT,
        detail TEXT
    );
    CREATE INDEX optout_audit_number ON optout_audit (number, id);
    "#,
    // 4: databases made by builds before migrations 1 and 3 settled carry an index listings no longer use
    // (time ranges go by the time-ordered id) and lack the outbox's per-message one. No-op for others.
    r#"
    DROP INDEX IF EXISTS messages_created;
    CREATE INDEX IF NOT EXISTS webhook_outbox_message ON webhook_outbox (message_id, id)
        WHERE delivered_at IS NULL;
    "#,
    // 5: who a message is for, so the collections rules can tell the gateway's own answers (opt-out
    // confirmations, HELP replies) from collection texts.
    r#"
    ALTER TABLE messages ADD COLUMN category TEXT NOT NULL DEFAULT 'standard';
    "#,
    // 6: start-up reads no longer grow with the database. The dispatcher pages the queue instead of
    // holding it: its order (with the due-time columns, so skipping messages not yet due reads no table
    // row), the due time (the expression must match the queries' exactly), and expiry, each over pending
    // outbound messages only; the contact-cap history loaded at start is a time range of sends.
    r#"
    CREATE INDEX messages_queue_order ON messages (priority DESC, id, send_at, not_before)
        WHERE state IN ('queued', 'scheduled') AND direction = 'outbound';
    CREATE INDEX messages_queue_time
        ON messages (max(coalesce(send_at, 0), coalesce(not_before, 0)), id)
        WHERE state IN ('queued', 'scheduled') AND direction = 'outbound';
    CREATE INDEX messages_queue_expiry ON messages (expires_at)
        WHERE state IN ('queued', 'scheduled') AND direction = 'outbound' AND expires_at IS NOT NULL;
    CREATE INDEX recipient_sends_at ON recipient_sends (at);
    "#,
    // 7: message counts by state and modem for /metrics, kept by triggers in the same transaction as each
    // change: counting them at every scrape read the whole table (1.4-2.4 s with a million messages, and
    // it grows with the history kept for the regulator). The modem is '' while there is none.
    r#"
    CREATE TABLE message_counts (
        state TEXT NOT NULL,
        modem TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (state, modem)
    ) WITHOUT ROWID;
    INSERT INTO message_counts (state, modem, n)
        SELECT state, coalesce(modem, ''), count(*) FROM messages GROUP BY 1, 2;
    CREATE TRIGGER message_counts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO message_counts (state, modem, n) VALUES (NEW.state, coalesce(NEW.modem, ''), 1)
            ON CONFLICT (state, modem) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER message_counts_update AFTER UPDATE OF state, modem ON messages
        WHEN OLD.state IS NOT NEW.state OR OLD.modem IS NOT NEW.modem BEGIN
        UPDATE message_counts SET n = n - 1 WHERE state = OLD.state AND modem = coalesce(OLD.modem, '');
        INSERT INTO message_counts (state, modem, n) VALUES (NEW.state, coalesce(NEW.modem, ''), 1)
            ON CONFLICT (state, modem) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER message_counts_delete AFTER DELETE ON messages BEGIN
        UPDATE message_counts SET n = n - 1 WHERE state = OLD.state AND modem = coalesce(OLD.modem, '');
    END;
    "#,
    // 8: cheaper accepts and starts. New messages are counted by the writer once per batch (an insert
    // trigger made SQLite keep a statement journal for every insert), and the index of pending messages by
    // state, which every accept extended, is replaced by one of the messages in flight: start-up recovery's
    // `state = 'sending'` could not use the old one and read the whole table at every start (the dispatcher
    // pages queued messages through migration 6's indexes).
    r#"
    DROP TRIGGER message_counts_insert;
    DROP INDEX messages_pending;
    CREATE INDEX messages_sending ON messages (id) WHERE state = 'sending';
    "#,
    // 9: a webhook outbox row per event and webhook, so one receiver that is down neither holds back
    // the others' events of the same message nor has them posted again at every retry. Rows written
    // before (no target) still go to every webhook subscribed to their type; attempts name the webhook.
    r#"
    ALTER TABLE webhook_outbox ADD COLUMN target TEXT;
    ALTER TABLE webhook_attempts ADD COLUMN target TEXT;
    DROP INDEX webhook_outbox_message;
    CREATE INDEX webhook_outbox_message ON webhook_outbox (message_id, target, id)
        WHERE delivered_at IS NULL;
    "#,
    // 10: the webhook's configured name beside its URL, so its undelivered rows can follow it when the
    // admin gives it a new URL.
    r#"
    ALTER TABLE webhook_outbox ADD COLUMN target_name TEXT;
    "#,
    // 11: a reply's parts by the message they made, so reading the message can say when the sender's
    // phone sent it (the SMSC's timestamp in each part) without reading every part ever received.
    r#"
    CREATE INDEX inbound_parts_message ON inbound_parts (message_id) WHERE message_id IS NOT NULL;
    "#,
    // 12: a webhook event's attempts by the event, so retention deletes them with it without reading
    // every attempt ever made.
    r#"
    CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id);
    "#,
    // 13: the opt-out audit by the message that asked (the STOP), so retention can keep that message as
    // the opt-out's evidence without reading the whole audit for every message it deletes.
    r#"
    CREATE INDEX optout_audit_source ON optout_audit (source_message) WHERE source_message IS NOT NULL;
    "#,
    // 14: how each active opt-out came about (keyword, review, api), which decides whether a START from
    // the number may lift it. Earlier ones are told apart as the code that wrote them did: the rules
    // always name the reply that asked, the API never does, and a reply under review is audited as such.
    r#"
    ALTER TABLE optouts ADD COLUMN source TEXT;
    UPDATE optouts SET source = CASE
        WHEN source_message IS NULL THEN 'api'
        WHEN (SELECT a.detail FROM optout_audit a WHERE a.number = optouts.number AND a.active
              ORDER BY a.id DESC LIMIT 1) LIKE 'review: %' THEN 'review'
        ELSE 'keyword' END
    WHERE active;
    "#,
    // 15: the contact-cap history by message, so a send is counted once however many of its parts are
    // answered (a part left unknown counts, as a sent one does).
    r#"
    CREATE INDEX recipient_sends_message ON recipient_sends (message_id, at);
    "#,
    // 16: received messages the reply rules have not run on yet, written with the message: a STOP stored
    // (and deleted from the SIM) just before a crash is still an opt-out after the restart.
    r#"
    CREATE TABLE inbound_rules_pending (message_id TEXT PRIMARY KEY) WITHOUT ROWID;
    "#,
    // 17: the SIM's own number as it was when a message went out or came in, so the log's `from`/`to`
    // stays what it was after a SIM is swapped or a port renamed. Earlier messages have none and are
    // shown with their modem's number now, as before.
    r#"
    ALTER TABLE messages ADD COLUMN sim_number TEXT;
    "#,
    // 18: one row the daemon rewrites while the store refuses writes (a full disk), to learn when it takes
    // them again without waiting for a message.
    r#"
    CREATE TABLE store_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);
    "#,
    // 19: parts left unknown with no TP-MR (their +CMGS answer was lost), by modem and time: a delivery
    // report no sent part claims looks here. Few rows: such parts are rare.
    r#"
    CREATE INDEX parts_unknown ON parts (modem, submitted_at) WHERE state = 'unknown' AND tp_mr IS NULL;
    "#,
    // 20: the region of the recipient's address, for its quiet hours and caps.
    r#"
    ALTER TABLE messages ADD COLUMN region TEXT;
    "#,
    // 21: who each message is to or from as rows of ids per number, merged behind a watermark (see
    // `peers`), replacing the index on `messages (peer, id)`, which dirtied a page per recipient per commit.
    r#"
    CREATE TABLE message_peers (
        peer TEXT NOT NULL,
        first TEXT NOT NULL,
        ids BLOB NOT NULL,
        PRIMARY KEY (peer, first)
    ) WITHOUT ROWID;
    INSERT INTO message_peers (peer, first, ids)
        SELECT peer, min(id), unhex(group_concat(replace(id, '-', ''), '' ORDER BY id)) FROM messages
        GROUP BY peer;
    CREATE TABLE message_peers_merged (one INTEGER PRIMARY KEY CHECK (one = 1), upto TEXT NOT NULL);
    INSERT INTO message_peers_merged (one, upto) SELECT 1, coalesce(max(id), '') FROM messages;
    DROP INDEX messages_peer;
    "#,
    // 22: the look-ups by reference and by (API key, idempotency key) join those by number, merged the
    // same way (see `keys`): the two indexes they replace each dirtied a page per send per commit.
    // `message_keys` rows are of a kind (0 number, 1 reference) and start at `first`, their first id as
    // 16 bytes, as `ids` packs them. Idempotency keys (API key and key joined by a line feed) have a row
    // per hash (`keys::idempotency_hash`, registered as `modemgate_key_hash`). What the watermark covers
    // is moved or built; what is after it the writer reads at start, as before.
    r#"
    CREATE TABLE message_keys (
        kind INTEGER NOT NULL,
        key TEXT NOT NULL,
        first BLOB NOT NULL,
        ids BLOB NOT NULL,
        PRIMARY KEY (kind, key, first)
    ) WITHOUT ROWID;
    INSERT INTO message_keys (kind, key, first, ids)
        SELECT 0, peer, unhex(replace(first, '-', '')), ids FROM message_peers;
    INSERT INTO message_keys (kind, key, first, ids)
        SELECT 1, reference, unhex(replace(min(id), '-', '')),
            unhex(group_concat(replace(id, '-', ''), '' ORDER BY id))
        FROM messages WHERE reference IS NOT NULL AND id <= (SELECT upto FROM message_peers_merged)
        GROUP BY reference;
    CREATE TABLE message_idempotency (hash INTEGER PRIMARY KEY, ids BLOB NOT NULL);
    INSERT INTO message_idempotency (hash, ids)
        SELECT modemgate_key_hash(api_key || char(10) || idempotency_key),
            unhex(group_concat(replace(id, '-', ''), '' ORDER BY id))
        FROM messages WHERE idempotency_key IS NOT NULL AND id <= (SELECT upto FROM message_peers_merged)
        GROUP BY 1;
    ALTER TABLE message_peers_merged RENAME TO message_keys_merged;
    DROP TABLE message_peers;
    DROP INDEX messages_reference;
    DROP INDEX messages_idempotency;
    "#,
    // 23: merged idempotency keys in runs, one per merge, compacted as they accumulate (see
    // `idempotency_runs`): merging a run into one table ordered by hash dirtied a page per key once the
    // table was large. What the old table holds becomes run 1.
    r#"
    CREATE TABLE idempotency_keys (
        run INTEGER NOT NULL,
        hash INTEGER NOT NULL,
        ids BLOB NOT NULL,
        PRIMARY KEY (run, hash)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency_runs (run INTEGER PRIMARY KEY, keys INTEGER NOT NULL);
    INSERT INTO idempotency_keys (run, hash, ids) SELECT 1, hash, ids FROM message_idempotency;
    INSERT INTO idempotency_runs (run, keys) SELECT 1, count(*) FROM message_idempotency HAVING count(*) > 0;
    DROP TABLE message_idempotency;
    "#,
    // 24: the due-time index holds only messages with a time (`send_at` or a retry's `not_before`). The
    // others are due at once: the dispatcher finds them through `messages_queue_order`, and the queries by
    // due time never match them (their due time is 0). Every accept wrote an entry nobody read.
    r#"
    DROP INDEX messages_queue_time;
    CREATE INDEX messages_queue_time
        ON messages (max(coalesce(send_at, 0), coalesce(not_before, 0)), id)
        WHERE state IN ('queued', 'scheduled') AND direction = 'outbound'
        AND (send_at IS NOT NULL OR not_before IS NOT NULL);
    "#,
    // 25: the event history kept in order by message, numbered within it: it is only ever read, and
    // deleted, a message's at a time, and a row id of its own meant every event was written twice (the
    // table, and the index by message). The trigger went with the old table.
    r#"
    CREATE TABLE events_by_message (
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        part INTEGER,
        detail TEXT,
        rule TEXT,
        PRIMARY KEY (message_id, seq)
    ) WITHOUT ROWID;
    INSERT INTO events_by_message (message_id, seq, at, actor, kind, state, part, detail, rule)
        SELECT message_id, row_number() OVER (PARTITION BY message_id ORDER BY id),
            at, actor, kind, state, part, detail, rule
        FROM events ORDER BY message_id, id;
    DROP TABLE events;
    ALTER TABLE events_by_message RENAME TO events;
    CREATE TRIGGER events_append_only BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    "#,
];

/// The schema version this build creates.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// An in-memory database at the latest schema, for unit tests of queries and their plans.
#[cfg(test)]
pub(crate) fn in_memory() -> Connection {
    let mut conn = Connection::open_in_memory().expect("an in-memory database");
    migrate(&mut conn, LATEST).expect("the migrations");
    conn
}

/// The schema version recorded in the database (0 for an empty one).
pub fn version(conn: &Connection) -> Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sqlite("reading the schema version"))
}

/// Applies the migrations after the database's version up to `target`, each in its own transaction.
/// Public so tests can build databases at every earlier version.
pub fn migrate(conn: &mut Connection, target: u32) -> Result<()> {
    let found = version(conn)?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            found,
            latest: LATEST,
        });
    }
    super::keys::add_hash_function(conn).map_err(|source| StoreError::Migration {
        version: found + 1,
        source: Arc::new(source),
    })?;
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target.min(LATEST) as usize)
        .skip(found as usize)
    {
        let version = index as u32 + 1;
        let fail = |source| StoreError::Migration {
            version,
            source: Arc::new(source),
        };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(version, "database migrated");
    }
    Ok(())
}
