//! Where merged idempotency keys are: in runs, one per merge, compacted together as they accumulate (the
//! levels of a log-structured merge tree, in two tables).
//!
//! Idempotency keys are random and unique per send. Merged into one table ordered by hash, every run of
//! new keys dirtied pages all over it: as many as the table had leaves, so the log written per key grew
//! with the table, up to a page (4 KB) per key once it held ~5 M keys, and the writer slowed with the
//! age of the database. Here each merge writes its keys as a run of their own, `idempotency_keys (run,
//! hash)`, in hash order at the end of the table: its pages are written once. A look-up seeks the hash in
//! every run (the writer asks only when the filter of merged hashes says maybe, see `merged_hashes`).
//!
//! To keep the runs few, once [`FANOUT`] runs are of one size class (the same power of [`FANOUT`] keys)
//! they are compacted into a new run, a slice per batch as the merges are: rows move in hash order, each
//! deleted from its run in the transaction that writes it to the new one, so at every commit each key is
//! in one of the runs a look-up reads. A key moves once per size class it passes through, about
//! log16(keys / keys per run) times, each move an append and a delete of neighbouring rows. A compaction
//! a stop cuts short leaves its runs smaller than planned: they are runs like any other, compacted again
//! in their turn. `idempotency_runs` lists the runs and their rows (look-ups read it first).

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::many_rows::{self, Texts};

/// How many runs of a size class are compacted together, and the ratio between size classes. A key
/// moves once per class (each move an insert and a delete, ~1.7 µs of SQLite), and a look-up the filter
/// lets through seeks up to `FANOUT - 1` runs per class: 16 moves each key about once per 16-fold growth
/// (a run of 50,000 keys: at 800,000 and at 12.8 M keys), and leaves a look-up a few dozen seeks, which
/// only repeats and the filter's rare false positives pay.
const FANOUT: usize = 16;

/// The writer's side of the runs: which run a merge writes to, and the compaction under way.
pub(crate) struct Runs {
    /// The number the next run gets; runs are numbered in the order they are made.
    next: i64,
    /// The run a merge is writing, never a compaction's input while it grows.
    open: Option<i64>,
    compaction: Option<Compaction>,
    /// Whether the runs may have changed size classes since a compaction was last looked for.
    plan_due: bool,
}

/// Runs being moved into `output`; their rows below hash `from` are there already.
struct Compaction {
    output: i64,
    inputs: Vec<i64>,
    from: i64,
    /// [`move_rows`] for these inputs, made once: every slice runs it.
    move_rows: String,
}

/// How far a batch's compaction slice went: every input's rows up to `upto` moved (`None`: all of them,
/// the compaction is over). Taken in once the batch is committed.
#[must_use]
pub(crate) struct Moved {
    upto: Option<i64>,
}

/// The merged ids of idempotency hash `?1`, a row per run that has it (the runs' list drives the join:
/// one seek per run, never a scan of the keys).
const LOOK_UP: &str = "SELECT k.ids, k.run FROM idempotency_runs r CROSS JOIN idempotency_keys k \
                       ON k.run = r.run AND k.hash = ?1";

impl Runs {
    pub fn load(conn: &Connection) -> rusqlite::Result<Runs> {
        let newest: Option<i64> =
            conn.query_row("SELECT max(run) FROM idempotency_runs", [], |row| {
                row.get(0)
            })?;
        Ok(Runs {
            next: newest.unwrap_or(0) + 1,
            open: None,
            compaction: None,
            plan_due: true,
        })
    }

    /// A new run for a merge to write its keys to, until [`Runs::close`].
    pub fn open(&mut self) -> i64 {
        let run = self.take_number();
        self.open = Some(run);
        run
    }

    /// The merge writing the open run is over (or abandoned): the run may be compacted now.
    pub fn close(&mut self) {
        self.open = None;
        self.plan_due = true;
    }

    fn take_number(&mut self) -> i64 {
        let run = self.next;
        self.next += 1;
        run
    }

    /// Writes each key's ids, by hash, to `run`: appended to the row if the run has the hash (two keys
    /// with one hash, or the same key merged again after a stop). Many rows to a statement (see
    /// `many_rows`); ids are appended through hex, as `||` on two blobs makes text.
    pub fn insert(conn: &Connection, run: i64, rows: &[(i64, Vec<u8>)]) -> rusqlite::Result<()> {
        static INSERT: LazyLock<Texts> = LazyLock::new(|| {
            many_rows::texts(
                "INSERT INTO idempotency_keys (run, hash, ids)",
                "(?, ?, ?)",
                "ON CONFLICT (run, hash) DO UPDATE SET ids = unhex(hex(ids) || hex(excluded.ids))",
            )
        });
        many_rows::insert(conn, &INSERT, rows, |bind, (hash, packed)| {
            bind.value(run)?;
            bind.value(hash)?;
            bind.value(packed)
        })
    }

    /// Adds `rows` to the rows `run` is listed with (listing it if it is new).
    pub fn grew(conn: &Connection, run: i64, rows: i64) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO idempotency_runs (run, keys) VALUES (?1, ?2) \
             ON CONFLICT (run) DO UPDATE SET keys = keys + excluded.keys",
        )?
        .execute(params![run, rows])?;
        Ok(())
    }

    /// Moves up to about `budget` rows of the compaction under way (starting one if runs are due for
    /// it), inside the batch's open transaction. `None` if there is nothing to compact.
    pub fn compact(&mut self, conn: &Connection, budget: usize) -> rusqlite::Result<Option<Moved>> {
        if self.compaction.is_none()
            && std::mem::take(&mut self.plan_due)
            && let Some(inputs) = plan(conn, self.open)?
        {
            let output = self.take_number();
            tracing::debug!(?inputs, output, "compacting idempotency key runs");
            // The runs' numbers are the writer's own integers, not input.
            let listed = inputs.iter().map(i64::to_string).collect::<Vec<_>>();
            self.compaction = Some(Compaction {
                output,
                move_rows: move_rows(&listed.join(", ")),
                inputs,
                from: i64::MIN,
            });
        }
        let Some(compaction) = &self.compaction else {
            return Ok(None);
        };
        compaction.slice(conn, budget).map(Some)
    }

    /// Takes in a committed batch's compaction slice.
    pub fn committed(&mut self, moved: Moved) {
        let Some(compaction) = &mut self.compaction else {
            return;
        };
        match moved.upto {
            Some(upto) => compaction.from = upto.saturating_add(1),
            None => {
                self.compaction = None;
                self.plan_due = true;
            }
        }
    }
}

/// The oldest [`FANOUT`] runs of the smallest size class that has as many, if any has (the open run
/// left out).
fn plan(conn: &Connection, open: Option<i64>) -> rusqlite::Result<Option<Vec<i64>>> {
    let mut classes: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
    let mut st = conn.prepare_cached("SELECT run, keys FROM idempotency_runs ORDER BY run")?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let (run, keys): (i64, i64) = (row.get(0)?, row.get(1)?);
        if Some(run) != open {
            let class = u64::try_from(keys).unwrap_or(0).max(1).ilog(FANOUT as u64);
            classes.entry(class).or_default().push(run);
        }
    }
    Ok(classes
        .into_values()
        .find(|runs| runs.len() >= FANOUT)
        .map(|runs| runs[..FANOUT].to_vec()))
}

impl Compaction {
    /// Moves about `budget` rows, in SQL (row by row through Rust it cost the writer several times as
    /// much): from each input the next `budget / inputs` rows, or rather every row up to the lowest hash
    /// at which one of those reads would stop short of its input's end, so that the new run gets each
    /// hash once, with the ids of every input that has it.
    fn slice(&self, conn: &Connection, budget: usize) -> rusqlite::Result<Moved> {
        let per_input = (budget / self.inputs.len()).max(1);
        let mut upto: Option<i64> = None;
        let mut last = conn.prepare_cached(
            "SELECT hash FROM idempotency_keys WHERE run = ?1 AND hash >= ?2 \
             ORDER BY hash LIMIT 1 OFFSET ?3",
        )?;
        for &run in &self.inputs {
            let found: Option<i64> = last
                .query_row(params![run, self.from, per_input as i64 - 1], |row| {
                    row.get(0)
                })
                .optional()?;
            if let Some(found) = found {
                upto = Some(upto.map_or(found, |upto| upto.min(found)));
            }
        }
        // No row is past the largest hash: to there, every input is moved to its end.
        let upto = upto.filter(|&upto| upto < i64::MAX);
        let to = upto.unwrap_or(i64::MAX);
        let written =
            conn.prepare_cached(&self.move_rows)?
                .execute(params![self.output, self.from, to])?;
        Runs::grew(conn, self.output, written as i64)?;
        let mut delete = conn.prepare_cached(
            "DELETE FROM idempotency_keys WHERE run = ?1 AND hash >= ?2 AND hash <= ?3",
        )?;
        for &run in &self.inputs {
            let deleted = delete.execute(params![run, self.from, to])?;
            Runs::grew(conn, run, -(deleted as i64))?;
        }
        if upto.is_none() {
            let mut drop = conn.prepare_cached("DELETE FROM idempotency_runs WHERE run = ?1")?;
            for &run in &self.inputs {
                drop.execute([run])?;
            }
        }
        Ok(Moved { upto })
    }
}

/// The statement that copies the rows of runs `inputs` (a list of numbers) with hashes ?2 to ?3 into run
/// ?1, a row per hash. Each slice writes a hash range of its own into a run nothing else writes to, so a
/// row is never there already; were one ever, its ids are appended, as a merge's are, rather than the
/// insert failing: that would roll back every batch after it, each retrying the same slice.
fn move_rows(inputs: &str) -> String {
    format!(
        "INSERT INTO idempotency_keys (run, hash, ids) \
         SELECT ?1, hash, unhex(group_concat(hex(ids), '')) FROM idempotency_keys \
         WHERE run IN ({inputs}) AND hash >= ?2 AND hash <= ?3 GROUP BY hash ORDER BY hash \
         ON CONFLICT (run, hash) DO UPDATE SET ids = unhex(hex(ids) || hex(excluded.ids))"
    )
}

/// The merged ids of idempotency hash `hash`, from every run that has it (one, but for a collision or a
/// merge a stop cut short), oldest first.
pub(crate) fn ids(conn: &Connection, hash: i64) -> rusqlite::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    let mut st = conn.prepare_cached(LOOK_UP)?;
    let mut rows = st.query([hash])?;
    while let Some(row) = rows.next()? {
        ids.extend(super::keys::unpack(row.get_ref(0)?.as_blob()?));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The statement of a look-up by idempotency hash `?1`, as `(ids, NULL)` rows, for `keys::ids`.
pub(crate) fn look_up() -> String {
    format!("SELECT ids, NULL FROM ({LOOK_UP})")
}

/// Takes `deleted` (sorted) out of the rows of `hash` in every run; a row left empty is deleted.
pub(crate) fn forget(conn: &Connection, hash: i64, deleted: &[Uuid]) -> rusqlite::Result<()> {
    let rows: Vec<(Vec<u8>, i64)> = conn
        .prepare_cached(LOOK_UP)?
        .query_map([hash], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (packed, run) in rows {
        let kept = super::keys::without(&packed, deleted);
        if kept.len() == packed.len() {
            continue;
        }
        if kept.is_empty() {
            conn.prepare_cached("DELETE FROM idempotency_keys WHERE run = ?1 AND hash = ?2")?
                .execute(params![run, hash])?;
            Runs::grew(conn, run, -1)?;
        } else {
            conn.prepare_cached(
                "UPDATE idempotency_keys SET ids = ?3 WHERE run = ?1 AND hash = ?2",
            )?
            .execute(params![run, hash, kept])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::idempotency_hash;
    use crate::store::migrations;

    /// Key `n`: its hash and the id of the message that used it.
    fn key(n: u128) -> (i64, Uuid) {
        (
            idempotency_hash(&format!("cms\nk-{n}")),
            Uuid::from_u128(n + 1),
        )
    }

    /// Merges `keys` as one run, as the merger does: opened, written in hash order, closed.
    fn merge(conn: &Connection, runs: &mut Runs, keys: impl Iterator<Item = u128>) {
        let run = runs.open();
        let mut keys: Vec<_> = keys.map(key).collect();
        keys.sort_unstable();
        let rows: Vec<_> = keys
            .iter()
            .map(|(hash, id)| (*hash, id.as_bytes().to_vec()))
            .collect();
        Runs::insert(conn, run, &rows).unwrap();
        Runs::grew(conn, run, keys.len() as i64).unwrap();
        runs.close();
    }

    /// Every key is found with its ids, whatever run it is in.
    fn assert_all_found(
        conn: &Connection,
        keys: impl Iterator<Item = u128>,
        extra: &[(u128, Uuid)],
    ) {
        for n in keys {
            let (hash, id) = key(n);
            let mut expected = vec![id];
            expected.extend(extra.iter().filter(|(k, _)| *k == n).map(|(_, id)| *id));
            expected.sort_unstable();
            assert_eq!(ids(conn, hash).unwrap(), expected, "key {n}");
        }
    }

    fn listed(conn: &Connection) -> Vec<(i64, i64)> {
        conn.prepare("SELECT run, keys FROM idempotency_runs ORDER BY run")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// One batch's compaction slice in a transaction: committed (taken in) or rolled back (not).
    fn batch(conn: &Connection, runs: &mut Runs, budget: usize, commit: bool) -> bool {
        conn.execute_batch("BEGIN").unwrap();
        let moved = runs.compact(conn, budget).unwrap();
        let any = moved.is_some();
        if commit {
            conn.execute_batch("COMMIT").unwrap();
            if let Some(moved) = moved {
                runs.committed(moved);
            }
        } else {
            conn.execute_batch("ROLLBACK").unwrap();
        }
        any
    }

    /// Eight runs of a size class become one, a slice per batch, once the last is no longer being
    /// written; after every commit, and after a rolled-back slice, each key is found with all its ids
    /// (one key is in two of the runs, as after a merge a stop cut short: the new run has both ids).
    #[test]
    fn runs_of_a_size_are_compacted_slice_by_slice_and_no_key_is_lost() {
        let conn = migrations::in_memory();
        let mut runs = Runs::load(&conn).unwrap();
        for run in 0..FANOUT as u128 - 1 {
            merge(&conn, &mut runs, run * 50..run * 50 + 50);
        }
        let again = Uuid::from_u128(1_000_000);
        let extra = [(7, again)];
        let total = FANOUT as u128 * 50;
        // The last run, still open: no compaction takes it.
        let open = runs.open();
        let mut last: Vec<_> = (total - 50..total).map(key).collect();
        last.push((key(7).0, again));
        last.sort_unstable();
        let rows: Vec<_> = last
            .iter()
            .map(|(hash, id)| (*hash, id.as_bytes().to_vec()))
            .collect();
        Runs::insert(&conn, open, &rows).unwrap();
        Runs::grew(&conn, open, last.len() as i64).unwrap();
        assert!(
            !batch(&conn, &mut runs, 32, true),
            "the open run was compacted"
        );
        runs.close();

        // The first slice rolled back: the compaction starts over from its first hash.
        assert!(batch(&conn, &mut runs, 32, false));
        assert_all_found(&conn, 0..total, &extra);
        let mut slices = 0;
        while batch(&conn, &mut runs, 32, true) {
            slices += 1;
            assert_all_found(&conn, 0..total, &extra);
            if slices == 3 {
                assert!(batch(&conn, &mut runs, 32, false));
                assert_all_found(&conn, 0..total, &extra);
            }
        }
        assert!(slices > 10, "{slices} slices");
        let left = listed(&conn);
        assert_eq!(left.len(), 1, "{left:?}");
        let (output, rows) = left[0];
        assert_eq!(rows, total as i64);
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM idempotency_keys WHERE run = ?1",
                [output],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored, total as i64);
        assert_all_found(&conn, 0..total, &extra);
    }

    /// A row already in the new run (none should be) takes the moved ids in, instead of failing the
    /// slice, which would fail every batch after it.
    #[test]
    fn a_row_already_in_the_new_run_takes_the_moved_ids_in() {
        let conn = migrations::in_memory();
        let mut runs = Runs::load(&conn).unwrap();
        for run in 0..FANOUT as u128 {
            merge(&conn, &mut runs, run * 4..run * 4 + 4);
        }
        let stray = Uuid::from_u128(1_000_000);
        Runs::insert(&conn, runs.next, &[(key(5).0, stray.as_bytes().to_vec())]).unwrap();
        while batch(&conn, &mut runs, 8, true) {}
        assert_all_found(&conn, 0..FANOUT as u128 * 4, &[(5, stray)]);
    }

    /// A slice reads its hash range of each input, never a whole run.
    #[test]
    fn a_slice_reads_ranges_of_its_runs() {
        let conn = migrations::in_memory();
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", move_rows("3, 4")))
            .unwrap();
        let plan: Vec<String> = st
            .query_map(params![1, 2, 3], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step
                == "SEARCH idempotency_keys USING PRIMARY KEY (run=? AND hash>? AND hash<?)"),
            "{plan:?}"
        );
    }

    /// A compaction a stop cuts short leaves every key where a look-up finds it, and the runs it left
    /// are compacted again after the start.
    #[test]
    fn a_compaction_cut_short_loses_nothing_and_is_taken_up_again() {
        let conn = migrations::in_memory();
        let mut runs = Runs::load(&conn).unwrap();
        let total = FANOUT as u128 * 64;
        for run in 0..FANOUT as u128 {
            merge(&conn, &mut runs, run * 64..run * 64 + 64);
        }
        for _ in 0..4 {
            assert!(batch(&conn, &mut runs, 64, true));
        }
        drop(runs);
        assert!(
            listed(&conn).len() > FANOUT,
            "inputs left and a part-filled run"
        );
        assert_all_found(&conn, 0..total, &[]);

        let mut runs = Runs::load(&conn).unwrap();
        // The part-filled inputs are of one class again: compacted after the start, and a new run's
        // number follows every run there is.
        while batch(&conn, &mut runs, 64, true) {}
        let left = listed(&conn);
        assert!(left.len() < FANOUT, "{left:?}");
        assert_eq!(left.iter().map(|(_, keys)| keys).sum::<i64>(), total as i64);
        assert_all_found(&conn, 0..total, &[]);
        let newest = left.iter().map(|(run, _)| *run).max().unwrap();
        assert!(runs.open() > newest);
    }

    /// Retention takes deleted ids out of whichever run has them; a row left empty goes, and its run's
    /// count with it.
    #[test]
    fn forgetting_takes_ids_out_of_every_run() {
        let conn = migrations::in_memory();
        let mut runs = Runs::load(&conn).unwrap();
        merge(&conn, &mut runs, 0..10);
        let again = Uuid::from_u128(1_000_000);
        let run = runs.open();
        Runs::insert(&conn, run, &[(key(3).0, again.as_bytes().to_vec())]).unwrap();
        Runs::grew(&conn, run, 1).unwrap();
        runs.close();

        forget(&conn, key(3).0, &[key(3).1]).unwrap();
        assert_eq!(ids(&conn, key(3).0).unwrap(), vec![again]);
        forget(&conn, key(3).0, &[again]).unwrap();
        assert!(ids(&conn, key(3).0).unwrap().is_empty());
        assert_eq!(listed(&conn), vec![(1, 9), (2, 0)]);
        assert_all_found(&conn, (0..10).filter(|&n| n != 3), &[]);
    }
}
