//! What messages are looked up by besides their id: the number they are to or from (a conversation,
//! the list's `to`, reply menus, an opt-out's blocking of queued texts), the CMS's `reference` (the
//! list's `reference`) and a send's (API key, `Idempotency-Key`). Tables the writer merges new messages
//! into, a row per key per merge, not indexes on `messages`: `message_keys` for numbers and references,
//! `idempotency_keys` for idempotency keys, a row per hash of the key ([`idempotency_hash`]) in runs
//! (see `idempotency_runs`).
//!
//! An index on `messages (peer, id)` puts each new message on its recipient's leaf page, so a batch to
//! 1,000 debtors dirties 1,000 index pages per commit, and the commit writes each dirtied page whole to
//! the log: ~4 KB of WAL per message, which halved the writer's throughput (BENCHMARKS.md, "Store").
//! References and idempotency keys are as scattered as debtors' numbers, and their indexes cost the same.
//! Here the writer keeps new messages' keys in memory and, once [`MergePolicy::messages`] wait (or
//! [`MergePolicy::every`] has passed), starts a *run*: it takes them, sorted into key order (on a
//! thread of its own if many, see [`SORT_ASIDE`]), and writes one row per key with that key's ids packed
//! in order, a slice per batch, inside each batch's transaction. A key's page is then dirtied once per
//! run instead of once per commit, a number texted 50 times in a run costs one row instead of 50, and
//! no batch waits for a whole run.
//!
//! `message_keys_merged.upto` is the newest id whose keys, and every older one's, are in the table; it
//! moves when a run ends. A look-up ([`ids`]) reads the key's rows and the messages after `upto` with
//! it through the id order, in one statement (one snapshot), so it is exact whenever it runs and reads at
//! most two runs' worth of rows past the table. Ids only grow (the writer's clock context, continued
//! across restarts), so "after `upto`" holds every message not merged. A run cut short by a stop is done
//! again at the next start: its rows are replaced or duplicated, and a look-up drops duplicates.
//! Retention takes deleted messages' ids out of their rows ([`forget`]).
//!
//! An idempotency key must be checked when a send is accepted, not once it is merged, and the writer
//! cannot read two runs of rows per send: it also keeps the idempotency keys not merged yet in a map
//! ([`Merger::idempotent`]), beside those of the batch under way ([`NewKeys`]).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::{Arc, LazyLock, mpsc};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, ToSql, params};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{Result, StoreError};
use super::idempotency_runs::{self, Moved, Runs};
use super::many_rows::{self, Texts};
use super::merged_hashes::MergedHashes;

/// When the writer merges new messages into the look-ups.
#[derive(Clone, Copy, Debug)]
pub struct MergePolicy {
    /// Start a run once this many new messages wait: with the run, it bounds what a look-up reads past
    /// the table, and the keys the writer holds in memory (one to three per message).
    pub messages: usize,
    /// Start a run at the first batch this long after the last began, if any message waits.
    pub every: Duration,
    /// The fewest keys a batch inserts while a run is on; a batch inserts twice the keys it adds if
    /// that is more, so runs keep ahead of any accept rate.
    pub slice: usize,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            messages: 50_000,
            every: Duration::from_secs(5),
            slice: 2_000,
        }
    }
}

/// Merged keys by number and by reference, many to a statement; a key merged again replaces its row.
static INSERT_KEYS: LazyLock<Texts> = LazyLock::new(|| {
    many_rows::texts(
        "INSERT OR REPLACE INTO message_keys (kind, key, first, ids)",
        "(?, ?, ?, ?)",
        "",
    )
});

/// What a key is of; stored as its number in `message_keys.kind` (idempotency keys have a table of their
/// own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum KeyKind {
    /// The number a message is to or from (`messages.peer`).
    Peer = 0,
    /// The CMS's `reference`.
    Reference = 1,
    /// The API key and `Idempotency-Key` of a send, as [`idempotency`] joins them.
    Idempotency = 2,
}

impl KeyKind {
    /// The key as an expression on a `messages` row, for the messages past the watermark.
    fn column(self) -> &'static str {
        match self {
            KeyKind::Peer => "peer",
            KeyKind::Reference => "reference",
            KeyKind::Idempotency => "api_key || char(10) || idempotency_key",
        }
    }
}

impl ToSql for KeyKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(*self as i64))
    }
}

/// The key an idempotent send is found by: its API key and `Idempotency-Key`, one line each (an
/// idempotency key is visible ASCII). Look-ups compare both columns as well, so no join can mistake one
/// send for another.
pub(crate) fn idempotency(api_key: &str, key: &str) -> String {
    format!("{api_key}\n{key}")
}

/// Where an idempotency key's row is: the first 8 bytes of its SHA-256. Idempotency keys are the one
/// kind that is random and unique per message, so their rows are the most of the table and each run
/// rewrites pages all over it; an integer of 8 bytes (a rowid) instead of the key's text (the API key,
/// the key and the first id) makes the rows a fraction of the size, so a run dirties fewer pages, and a
/// look-up compares integers.
/// Two keys with one hash share the row: look-ups check the message's own columns. Stored, so it must
/// never change; migration 22 computes it in SQL as `modemgate_key_hash`.
pub(crate) fn idempotency_hash(value: &str) -> i64 {
    let digest = Sha256::digest(value.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Makes [`idempotency_hash`] callable from SQL as `modemgate_key_hash(text)`, for migration 22.
pub(crate) fn add_hash_function(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "modemgate_key_hash",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(idempotency_hash(ctx.get_raw(0).as_str()?)),
    )
}

/// One of a message's keys: kind, its idempotency hash (0 for other kinds), the first 16 bytes of its
/// value, the value, the message's id; ordered as the tables are. The first bytes are there for the
/// ordering of a run: as one integer, most comparisons never read the string. The value is shared with
/// the writer's map of unmerged idempotency keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    kind: KeyKind,
    hash: i64,
    prefix: u128,
    value: Arc<str>,
    id: Uuid,
}

/// The first 16 bytes of `value` as a big-endian integer, zeros after a shorter one: ordered as the
/// strings are, up to ties between strings that begin with the same 16 bytes.
fn prefix(value: &str) -> u128 {
    let mut first = [0; 16];
    let bytes = &value.as_bytes()[..value.len().min(16)];
    first[..bytes.len()].copy_from_slice(bytes);
    u128::from_be_bytes(first)
}

/// What a `messages` row is looked up by, made ready (joined, hashed, allocated) before the writer
/// needs it: an accept's caller builds it on its own thread, and the writer adds the id.
#[derive(Clone)]
pub(crate) struct MessageKeys {
    peer: Arc<str>,
    reference: Option<Arc<str>>,
    /// The (API key, idempotency key) as [`idempotency`] joins them, and its [`idempotency_hash`].
    idempotency: Option<(Arc<str>, i64)>,
}

impl MessageKeys {
    pub fn new(
        peer: &str,
        reference: Option<&str>,
        api_key: &str,
        idempotency_key: Option<&str>,
    ) -> Self {
        MessageKeys {
            peer: peer.into(),
            reference: reference.map(Arc::from),
            idempotency: idempotency_key.map(|key| {
                let value = idempotency(api_key, key);
                let hash = idempotency_hash(&value);
                (value.into(), hash)
            }),
        }
    }

    /// A message known by its number alone (a received one).
    pub fn number(peer: &str) -> Self {
        MessageKeys::new(peer, None, "", None)
    }

    /// The joined idempotency key and its hash, if the message has one.
    pub fn idempotency(&self) -> Option<(&str, i64)> {
        self.idempotency
            .as_ref()
            .map(|(value, hash)| (&**value, *hash))
    }

    /// Message `id`'s keys.
    pub fn keys(self, id: Uuid) -> impl Iterator<Item = Key> {
        let key = |kind, value: Arc<str>, hash| Key {
            kind,
            hash,
            prefix: if kind == KeyKind::Idempotency {
                0
            } else {
                prefix(&value)
            },
            value,
            id,
        };
        [
            Some(key(KeyKind::Peer, self.peer, 0)),
            self.reference
                .map(|reference| key(KeyKind::Reference, reference, 0)),
            self.idempotency
                .map(|(value, hash)| key(KeyKind::Idempotency, value, hash)),
        ]
        .into_iter()
        .flatten()
    }
}

/// The keys of the messages a batch created: merged once it is committed, dropped with it if not.
#[derive(Default)]
pub(crate) struct NewKeys {
    keys: Vec<Key>,
    idempotent: IdempotentIds,
    messages: usize,
}

impl NewKeys {
    /// Adds one message's keys.
    pub fn extend(&mut self, keys: impl Iterator<Item = Key>) {
        self.messages += 1;
        for key in keys {
            if key.kind == KeyKind::Idempotency {
                self.idempotent.insert(&key);
            }
            self.keys.push(key);
        }
    }

    /// The message of this batch that has idempotency key `value` (whose hash is `hash`), if one has.
    pub fn idempotent(&self, value: &str, hash: i64) -> Option<Uuid> {
        self.idempotent.get(value, hash)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Idempotency keys held in the writer's memory (a batch's, and those committed but not in a run yet),
/// each to its message. They are found by the hash [`MessageKeys`] computed off the writer thread, not
/// by SipHash over the key's text again: with a look-up, an insert and a removal per key, that hashing
/// was ~4 % of the writer's time per message. The text is still compared, so two keys with one hash
/// stay apart. The hash is mixed with a random seed per map, so a client that grinds keys whose SHA-256
/// share bits cannot tell which of them will share a bucket.
pub(crate) struct IdempotentIds {
    seed: u64,
    table: HashTable<(Arc<str>, i64, Uuid)>,
}

impl Default for IdempotentIds {
    fn default() -> Self {
        IdempotentIds {
            seed: RandomState::new().hash_one(0_u64),
            table: HashTable::new(),
        }
    }
}

impl IdempotentIds {
    fn get(&self, value: &str, hash: i64) -> Option<Uuid> {
        self.table
            .find(bucket(self.seed, hash), |(v, h, _)| {
                *h == hash && &**v == value
            })
            .map(|(_, _, id)| *id)
    }

    /// Records idempotency key `key` as its message's, in place of any other message it named.
    fn insert(&mut self, key: &Key) {
        self.set(&key.value, key.hash, key.id);
    }

    fn set(&mut self, value: &Arc<str>, hash: i64, id: Uuid) {
        let seed = self.seed;
        match self.table.entry(
            bucket(seed, hash),
            |(v, h, _)| *h == hash && v == value,
            |(_, h, _)| bucket(seed, *h),
        ) {
            Entry::Occupied(mut entry) => entry.get_mut().2 = id,
            Entry::Vacant(entry) => {
                entry.insert((value.clone(), hash, id));
            }
        }
    }

    /// Forgets idempotency key `key` if it still names `key`'s message.
    fn remove(&mut self, key: &Key) {
        let found = self
            .table
            .find_entry(bucket(self.seed, key.hash), |(v, h, id)| {
                *h == key.hash && *id == key.id && *v == key.value
            });
        if let Ok(entry) = found {
            entry.remove();
        }
    }

    /// Adds `later`'s keys: a later batch's, whose messages replace any others the keys named.
    fn extend(&mut self, later: IdempotentIds) {
        for (value, hash, id) in later.table {
            self.set(&value, hash, id);
        }
    }

    fn clear(&mut self) {
        self.table.clear();
    }
}

/// Where idempotency hash `hash` goes in a table seeded with `seed`: a folded multiply, as foldhash
/// does, so every bit of the hash and the seed reaches the bits that pick a bucket.
fn bucket(seed: u64, hash: i64) -> u64 {
    let product = u128::from(hash as u64 ^ seed) * 0x9E37_79B9_7F4A_7C15;
    (product as u64) ^ ((product >> 64) as u64)
}

/// Runs of at least this many keys are sorted on the sorter thread, and start once it is done: the
/// writer sorting a run's 150,000 keys itself stalled the batch under way for 16-33 ms, and keeping
/// them in order as they came (a `BTreeSet`) cost it a tenth of its time per message. Smaller runs
/// (a quiet box, tests) sort in well under a millisecond, and in place.
const SORT_ASIDE: usize = 4_096;

/// The writer's side of the look-ups: keys committed but not in the table yet.
pub(crate) struct Merger {
    policy: MergePolicy,
    /// Committed keys not in a run, as they came.
    waiting: Vec<Key>,
    /// How many messages they are of, and the newest one's id (ids only grow).
    waiting_messages: usize,
    newest: Uuid,
    /// The idempotency keys among `waiting` and the run's, until their slice is committed.
    idempotent: IdempotentIds,
    run: Run,
    started: Instant,
    sorter: Sorter,
    /// The idempotency hashes in the table, as far as a filter knows.
    merged: MergedHashes,
    /// The runs idempotency keys are merged into, and their compaction.
    runs: Runs,
}

/// Where the merge is.
enum Run {
    Idle,
    /// A run's keys are on the sorter thread; `target` is the newest id they cover.
    Sorting {
        target: Uuid,
    },
    /// A merge under way: the keys not in the table yet, in key order, the newest id it covers (the
    /// watermark once it ends), and the run its idempotency keys go to.
    Merging {
        keys: VecDeque<Key>,
        target: Uuid,
        run: i64,
    },
}

/// A thread that sorts runs for the writer; it ends when the merger is dropped.
struct Sorter {
    runs: mpsc::Sender<Vec<Key>>,
    sorted: mpsc::Receiver<Vec<Key>>,
}

impl Sorter {
    fn spawn() -> std::io::Result<Sorter> {
        let (runs, to_sort) = mpsc::channel::<Vec<Key>>();
        let (done, sorted) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-key-sort".into())
            .spawn(move || {
                for mut keys in to_sort {
                    keys.sort_unstable();
                    if done.send(keys).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Sorter { runs, sorted })
    }
}

/// How far a batch's slice took the run (keys from its front) and the compaction of idempotency key
/// runs; the writer hands it back once the batch is committed.
#[must_use]
pub(crate) struct Slice {
    keys: usize,
    moved: Option<Moved>,
}

#[cfg(test)]
impl Slice {
    /// A slice that did nothing.
    pub const NONE: Slice = Slice {
        keys: 0,
        moved: None,
    };
}

impl Merger {
    /// Reads the keys not merged yet (those of a run the last stop cut short among them).
    pub fn start(conn: &Connection, policy: MergePolicy) -> Result<Merger> {
        let sorter = Sorter::spawn().map_err(|source| StoreError::Io {
            path: "store-key-sort thread".into(),
            source: Arc::new(source),
        })?;
        let mut merger = Merger {
            policy,
            waiting: Vec::new(),
            waiting_messages: 0,
            newest: Uuid::nil(),
            idempotent: IdempotentIds::default(),
            run: Run::Idle,
            started: Instant::now(),
            sorter,
            merged: MergedHashes::load(conn).map_err(StoreError::sqlite(
                "reading the idempotency keys merged into the look-ups",
            ))?,
            runs: Runs::load(conn)
                .map_err(StoreError::sqlite("reading the runs of idempotency keys"))?,
        };
        merger.reload(conn).map_err(StoreError::sqlite(
            "reading the messages not merged into the look-ups by key",
        ))?;
        Ok(merger)
    }

    /// The committed message with idempotency key `value` (whose hash is `hash`) that is not in the
    /// table yet, if one is.
    pub fn idempotent(&self, value: &str, hash: i64) -> Option<Uuid> {
        self.idempotent.get(value, hash)
    }

    /// False if the table surely has no row for idempotency hash `hash`.
    pub fn may_be_merged(&self, hash: i64) -> bool {
        self.merged.may_contain(hash)
    }

    /// Inserts the next slice of the run (starting one if it is due), and moves the next of the
    /// compaction's, inside the batch's open transaction; `added` is how many keys the batch created.
    pub fn slice(&mut self, conn: &Connection, added: usize) -> rusqlite::Result<Slice> {
        let budget = self.policy.slice.max(2 * added).max(1);
        let keys = self.merge(conn, budget)?;
        let moved = self.runs.compact(conn, budget)?;
        Ok(Slice { keys, moved })
    }

    /// Inserts up to `budget` keys of the run; returns how many.
    fn merge(&mut self, conn: &Connection, budget: usize) -> rusqlite::Result<usize> {
        if matches!(self.run, Run::Idle) && self.due() {
            self.start_run();
        }
        if let Run::Sorting { target } = self.run {
            match self.sorter.sorted.try_recv() {
                Ok(keys) => {
                    self.run = Run::Merging {
                        keys: keys.into(),
                        target,
                        run: self.runs.open(),
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(0),
                // The sorter is gone with the run's keys (it cannot panic on keys it only sorts, but
                // if it ever did): every unmerged key is read again, as at a start. Runs are sorted
                // in place from now on (the sorter takes no more).
                Err(mpsc::TryRecvError::Disconnected) => {
                    tracing::error!("the store's key sorter stopped; its run is read again");
                    self.reload(conn)?;
                    return Ok(0);
                }
            }
        }
        let Run::Merging {
            keys: run,
            target,
            run: idempotency_run,
        } = &mut self.run
        else {
            return Ok(0);
        };
        let count = run.len().min(budget);
        let slice = &run.make_contiguous()[..count];
        let mut key_rows = Vec::new();
        let mut idempotency_rows = Vec::new();
        for keys in slice.chunk_by(|a, b| (a.kind, &a.value) == (b.kind, &b.value)) {
            let packed: Vec<u8> = keys.iter().flat_map(|key| *key.id.as_bytes()).collect();
            let first = &keys[0];
            match first.kind {
                KeyKind::Peer | KeyKind::Reference => key_rows.push((first, packed)),
                KeyKind::Idempotency => idempotency_rows.push((first.hash, packed)),
            }
        }
        // Many rows to a statement (see `many_rows`): a statement per key cost more than its insert.
        many_rows::insert(conn, &INSERT_KEYS, &key_rows, |bind, (key, packed)| {
            bind.value(key.kind)?;
            bind.value(&*key.value)?;
            bind.value(key.id.as_bytes())?;
            bind.value(packed)
        })?;
        Runs::insert(conn, *idempotency_run, &idempotency_rows)?;
        // After the rows are in: a filter outgrown is loaded again from the table.
        for &(hash, _) in &idempotency_rows {
            self.merged.add(conn, hash)?;
        }
        let idempotency_rows = idempotency_rows.len() as i64;
        if idempotency_rows > 0 {
            Runs::grew(conn, *idempotency_run, idempotency_rows)?;
        }
        if count == run.len() {
            conn.prepare_cached("UPDATE message_keys_merged SET upto = ?1")?
                .execute([target.to_string()])?;
        }
        Ok(count)
    }

    /// Takes in what a committed batch did: its slice, and the keys of the messages it created.
    pub fn committed(&mut self, slice: Slice, created: NewKeys) {
        if let Some(moved) = slice.moved {
            self.runs.committed(moved);
        }
        if let Run::Merging { keys, .. } = &mut self.run {
            for key in keys.drain(..slice.keys.min(keys.len())) {
                // In the table now, so the writer finds it there. Only this message's entry: the key
                // may be a newer send's since (its message deleted).
                if key.kind == KeyKind::Idempotency {
                    self.idempotent.remove(&key);
                }
            }
            if keys.is_empty() {
                self.run = Run::Idle;
                self.runs.close();
            }
        }
        self.take_in(created);
    }

    /// Adds committed keys (a batch's, or those read at start) to those waiting for a run.
    fn take_in(&mut self, created: NewKeys) {
        self.idempotent.extend(created.idempotent);
        if let Some(newest) = created.keys.iter().map(|key| key.id).max() {
            self.newest = self.newest.max(newest);
        }
        self.waiting.extend(created.keys);
        self.waiting_messages += created.messages;
    }

    fn due(&self) -> bool {
        !self.waiting.is_empty()
            && (self.waiting_messages >= self.policy.messages
                || self.started.elapsed() >= self.policy.every)
    }

    /// Drops the keys held (a run among them) and reads every key not merged yet, as at a start.
    fn reload(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.waiting.clear();
        self.idempotent.clear();
        self.waiting_messages = 0;
        if !matches!(self.run, Run::Idle) {
            self.run = Run::Idle;
            self.runs.close();
        }
        self.take_in(unmerged(conn)?);
        Ok(())
    }

    /// Takes the waiting keys as a run: sorted in place if few, else handed to the sorter.
    fn start_run(&mut self) {
        let mut keys = std::mem::take(&mut self.waiting);
        let target = self.newest;
        self.waiting_messages = 0;
        self.started = Instant::now();
        if keys.len() >= SORT_ASIDE {
            match self.sorter.runs.send(keys) {
                Ok(()) => {
                    self.run = Run::Sorting { target };
                    return;
                }
                // The sorter is gone: the keys come back, to be sorted here.
                Err(mpsc::SendError(back)) => keys = back,
            }
        }
        keys.sort_unstable();
        self.run = Run::Merging {
            keys: keys.into(),
            target,
            run: self.runs.open(),
        };
    }

    /// Waits for the run on the sorter thread, if one is there.
    #[cfg(test)]
    fn wait_sorted(&mut self) {
        if let Run::Sorting { target } = self.run {
            let keys = self.sorter.sorted.recv().expect("the sorter stopped");
            self.run = Run::Merging {
                keys: keys.into(),
                target,
                run: self.runs.open(),
            };
        }
    }
}

/// The keys of every message past the watermark (a run a stop cut short among them).
fn unmerged(conn: &Connection) -> rusqlite::Result<NewKeys> {
    let mut keys = NewKeys::default();
    let mut st = conn.prepare(
        "SELECT id, peer, reference, api_key, idempotency_key FROM messages \
         WHERE id > (SELECT upto FROM message_keys_merged) ORDER BY id",
    )?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let Ok(id) = Uuid::parse_str(row.get_ref(0)?.as_str()?) else {
            continue;
        };
        let message = MessageKeys::new(
            row.get_ref(1)?.as_str()?,
            row.get_ref(2)?.as_str_or_null()?,
            row.get_ref(3)?.as_str()?,
            row.get_ref(4)?.as_str_or_null()?,
        );
        keys.extend(message.keys(id));
    }
    Ok(keys)
}

/// Every message id with key `value` of `kind`, oldest first, as text for `id IN rarray(?)`. For an
/// idempotency key, also those of any key with the same hash: the caller checks the columns.
pub(crate) fn ids(
    conn: &Connection,
    kind: KeyKind,
    value: &str,
) -> rusqlite::Result<Rc<Vec<Value>>> {
    let mut st = conn.prepare_cached(&look_up(kind))?;
    let mut rows = match kind {
        KeyKind::Peer | KeyKind::Reference => st.query(params![kind, value])?,
        KeyKind::Idempotency => st.query(params![idempotency_hash(value), value])?,
    };
    let mut ids = Vec::new();
    while let Some(row) = rows.next()? {
        match row.get_ref(0)?.as_blob_or_null()? {
            Some(packed) => ids.extend(unpack(packed)),
            None => ids.extend(Uuid::parse_str(row.get_ref(1)?.as_str()?).ok()),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Rc::new(
        ids.into_iter()
            .map(|id| Value::Text(id.to_string()))
            .collect(),
    ))
}

/// The statement of [`ids`]: the merged rows (by ?1 kind and ?2 key, or by ?1 hash), then the messages
/// after the watermark with key ?2, by id.
fn look_up(kind: KeyKind) -> String {
    let merged = match kind {
        KeyKind::Peer | KeyKind::Reference => {
            "SELECT ids, NULL FROM message_keys WHERE kind = ?1 AND key = ?2"
        }
        KeyKind::Idempotency => &idempotency_runs::look_up(),
    };
    format!(
        "{merged} UNION ALL SELECT NULL, id FROM messages WHERE {} = ?2 \
         AND id > (SELECT upto FROM message_keys_merged)",
        kind.column()
    )
}

/// The ids a row packs, 16 bytes each.
pub(crate) fn unpack(packed: &[u8]) -> impl Iterator<Item = Uuid> + '_ {
    packed
        .chunks_exact(16)
        .filter_map(|bytes| Uuid::from_slice(bytes).ok())
}

/// The ids of `packed` but those in `deleted` (sorted), packed.
pub(crate) fn without(packed: &[u8], deleted: &[Uuid]) -> Vec<u8> {
    unpack(packed)
        .filter(|id| deleted.binary_search(id).is_err())
        .flat_map(|id| *id.as_bytes())
        .collect()
}

/// Takes the keys of messages retention deleted out of their rows.
pub(crate) fn forget(conn: &Connection, mut deleted: Vec<Key>) -> rusqlite::Result<()> {
    deleted.sort_unstable();
    for keys in deleted.chunk_by(|a, b| (a.kind, &a.value) == (b.kind, &b.value)) {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.id).collect();
        match keys[0].kind {
            KeyKind::Peer | KeyKind::Reference => forget_ids(conn, &keys[0], &ids)?,
            KeyKind::Idempotency => idempotency_runs::forget(conn, keys[0].hash, &ids)?,
        }
    }
    Ok(())
}

/// Takes `deleted` (sorted) out of the `message_keys` rows of `key`'s kind and value; a row left empty
/// is deleted.
fn forget_ids(conn: &Connection, key: &Key, deleted: &[Uuid]) -> rusqlite::Result<()> {
    let Some(newest) = deleted.last() else {
        return Ok(());
    };
    let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT first, ids FROM message_keys WHERE kind = ?1 AND key = ?2 AND first <= ?3",
        )?
        .query_map(params![key.kind, key.value, newest.as_bytes()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (first, packed) in rows {
        let kept = without(&packed, deleted);
        if kept.len() == packed.len() {
            continue;
        }
        if kept.is_empty() {
            conn.prepare_cached(
                "DELETE FROM message_keys WHERE kind = ?1 AND key = ?2 AND first = ?3",
            )?
            .execute(params![key.kind, key.value, first])?;
        } else {
            conn.prepare_cached(
                "UPDATE message_keys SET ids = ?4 WHERE kind = ?1 AND key = ?2 AND first = ?3",
            )?
            .execute(params![key.kind, key.value, first, kept])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations;

    /// The plan of `sql`, its parameters NULL.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, st.parameter_count());
        st.query_map(rusqlite::params_from_iter(nulls), |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A run of `SORT_ASIDE` messages' keys for the sorter: message `n` (id `n + 1`) is to one of 100
    /// numbers, [`number`]`(n)`, with idempotency key `k-n`; merged in one slice (a number split across
    /// slices would have a row in each).
    fn run_for_the_sorter(conn: &Connection) -> (Merger, Vec<Uuid>) {
        let policy = MergePolicy {
            messages: 1,
            every: Duration::MAX,
            slice: 4 * SORT_ASIDE,
        };
        let mut merger = Merger::start(conn, policy).unwrap();
        let ids: Vec<Uuid> = (1..=SORT_ASIDE as u128).map(Uuid::from_u128).collect();
        let mut created = NewKeys::default();
        for (n, id) in ids.iter().enumerate() {
            let key = format!("k-{n}");
            created.extend(MessageKeys::new(&number(n), None, "cms", Some(&key)).keys(*id));
        }
        merger.committed(Slice::NONE, created);
        // Started here, not through `slice`, which would race the sorter for whether this batch
        // already finds it sorted.
        assert!(merger.due());
        merger.start_run();
        assert!(matches!(merger.run, Run::Sorting { .. }));
        (merger, ids)
    }

    fn number(n: usize) -> String {
        format!("+1555{:07}", 100 - n % 100)
    }

    /// Runs slices (a few at most) until nothing is left to merge; returns how many keys they merged.
    fn merge_all(merger: &mut Merger, conn: &Connection) -> usize {
        let mut merged = 0;
        for _ in 0..8 {
            let slice = merger.slice(conn, 0).unwrap();
            merged += slice.keys;
            merger.committed(slice, NewKeys::default());
            if matches!(merger.run, Run::Idle) && merger.waiting.is_empty() {
                break;
            }
        }
        merged
    }

    /// Every key of [`run_for_the_sorter`]'s messages is in the tables, one row per number, and the
    /// look-ups find them there.
    fn assert_merged(conn: &Connection, ids: &[Uuid]) {
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM message_keys WHERE kind = 0"),
            100
        );
        assert_eq!(
            count("SELECT count(*) FROM idempotency_keys"),
            SORT_ASIDE as i64
        );
        let upto: String = conn
            .query_row("SELECT upto FROM message_keys_merged", [], |row| row.get(0))
            .unwrap();
        assert_eq!(upto, ids[SORT_ASIDE - 1].to_string());
        let hash = idempotency_hash("cms\nk-7");
        assert_eq!(idempotency_runs::ids(conn, hash).unwrap(), vec![ids[7]]);
        let texted: Vec<Value> = (0..SORT_ASIDE)
            .filter(|n| n % 100 == 7)
            .map(|n| Value::Text(ids[n].to_string()))
            .collect();
        assert_eq!(
            *super::ids(conn, KeyKind::Peer, &number(7)).unwrap(),
            texted
        );
    }

    /// A run too big to sort in place goes to the sorter thread while batches go on; once sorted it
    /// is merged in key order (one row per number), and the watermark ends at its newest id.
    #[test]
    fn a_large_run_is_sorted_aside_then_merged_in_key_order() {
        let conn = migrations::in_memory();
        let (mut merger, ids) = run_for_the_sorter(&conn);
        // Its keys are still answered while it is sorted.
        let hash = idempotency_hash("cms\nk-7");
        assert_eq!(merger.idempotent("cms\nk-7", hash), Some(ids[7]));

        merger.wait_sorted();
        assert_eq!(merge_all(&mut merger, &conn), 2 * SORT_ASIDE);
        assert_merged(&conn, &ids);
        // Answered from the table now, not the writer's memory.
        assert_eq!(merger.idempotent("cms\nk-7", hash), None);
    }

    /// The sorter thread gone with a run's keys (it cannot panic on keys it only sorts, but if it ever
    /// did): the writer reads every unmerged key back from `messages` and sorts runs in place from then
    /// on, so no look-up loses a message.
    #[test]
    fn a_run_lost_with_the_sorter_is_read_again_and_merged_in_place() {
        let conn = migrations::in_memory();
        let (mut merger, ids) = run_for_the_sorter(&conn);
        let mut insert = conn
            .prepare(
                "INSERT INTO messages (id, direction, state, peer, text, encoding, part_count, \
                 created_at, updated_at, api_key, idempotency_key) \
                 VALUES (?1, 'outbound', 'queued', ?2, 'x', 'gsm7', 1, 0, 0, 'cms', ?3)",
            )
            .unwrap();
        for (n, id) in ids.iter().enumerate() {
            insert
                .execute(params![id.to_string(), number(n), format!("k-{n}")])
                .unwrap();
        }

        // The sorter stops: the far ends of both its channels are gone.
        merger.sorter = Sorter {
            runs: mpsc::channel().0,
            sorted: mpsc::channel().1,
        };
        assert_eq!(merge_all(&mut merger, &conn), 2 * SORT_ASIDE);
        assert_merged(&conn, &ids);
    }

    /// Keys are found by their hash, but told apart by their text: two keys made to share a hash name
    /// their own messages. A later message takes a key over; a removal takes out only the message named.
    #[test]
    fn idempotent_ids_tell_keys_with_one_hash_apart() {
        let key = |value: &str, hash: i64, n: u128| Key {
            kind: KeyKind::Idempotency,
            hash,
            prefix: 0,
            value: value.into(),
            id: Uuid::from_u128(n),
        };
        let mut ids = IdempotentIds::default();
        ids.insert(&key("cms\na", 42, 1));
        ids.insert(&key("cms\nb", 42, 2));
        assert_eq!(ids.get("cms\na", 42), Some(Uuid::from_u128(1)));
        assert_eq!(ids.get("cms\nb", 42), Some(Uuid::from_u128(2)));
        assert_eq!(ids.get("cms\nc", 42), None);
        assert_eq!(ids.get("cms\na", 43), None, "the hash is part of the key");

        let mut later = IdempotentIds::default();
        later.insert(&key("cms\na", 42, 3));
        ids.extend(later);
        assert_eq!(ids.get("cms\na", 42), Some(Uuid::from_u128(3)));
        ids.remove(&key("cms\na", 42, 1));
        assert_eq!(
            ids.get("cms\na", 42),
            Some(Uuid::from_u128(3)),
            "not its message"
        );
        ids.remove(&key("cms\na", 42, 3));
        assert_eq!(ids.get("cms\na", 42), None);
        assert_eq!(ids.get("cms\nb", 42), Some(Uuid::from_u128(2)));
    }

    /// The hash is stored: it must stay what it was when the rows were written.
    #[test]
    fn the_idempotency_hash_is_the_first_8_bytes_of_sha_256() {
        // `printf 'cms\nk-1' | sha256sum` begins 92f1802c637ee809.
        let expected = [0x92, 0xf1, 0x80, 0x2c, 0x63, 0x7e, 0xe8, 0x09];
        assert_eq!(idempotency_hash("cms\nk-1"), i64::from_be_bytes(expected));
    }

    /// A look-up must read the key's rows by key, only the newest messages by id, and then each
    /// message it found by id: a plan that scanned `messages` would read the whole log for every
    /// conversation, every STOP and every list by reference.
    #[test]
    fn a_look_up_reads_by_key_and_by_id_never_the_whole_log() {
        let conn = migrations::in_memory();
        rusqlite::vtab::array::load_module(&conn).unwrap();
        for (kind, merged) in [
            (
                KeyKind::Peer,
                "SEARCH message_keys USING PRIMARY KEY (kind=? AND key=?)",
            ),
            (
                KeyKind::Reference,
                "SEARCH message_keys USING PRIMARY KEY (kind=? AND key=?)",
            ),
            (
                KeyKind::Idempotency,
                "SEARCH k USING PRIMARY KEY (run=? AND hash=?)",
            ),
        ] {
            let found = plan(&conn, &look_up(kind));
            assert!(found.contains(&merged.to_owned()), "{kind:?}: {found:?}");
            assert!(
                found.contains(
                    &"SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id>?)".to_owned()
                ),
                "{kind:?}: {found:?}"
            );
        }
        let by_id = plan(
            &conn,
            "SELECT id FROM messages WHERE id IN rarray(NULL) AND direction = 'outbound' ORDER BY id",
        );
        assert!(
            by_id.iter().all(|step| !step.starts_with("SCAN messages")),
            "{by_id:?}"
        );
        assert!(
            by_id.contains(
                &"SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)".to_owned()
            ),
            "{by_id:?}"
        );
    }
}
