//! INSERT statements of many rows: a table's new rows written in as few statements as a few fixed sizes
//! allow, each size's statement prepared once per connection.
//!
//! One statement per row opens a cursor on every B-tree the row goes into and searches each from its
//! root, and pays for a statement's start and end. One statement for many rows keeps its cursors open,
//! and SQLite skips the search when the cursor is already on the tree's last page and the new key goes
//! after it, as each new message's id does.

use rusqlite::{Connection, Statement, ToSql};

/// Rows per statement, largest first (77 rows: four of 16, three of 4, one). 64 measured no better:
/// SQLite's copies of that many bound values no longer fit the connection's own small allocations (its
/// lookaside) and went to `malloc` (BENCHMARKS.md, "Store", session 26).
const ROWS_PER_STATEMENT: [usize; 3] = [16, 4, 1];

/// One statement text per size in [`ROWS_PER_STATEMENT`].
pub(crate) type Texts = [String; ROWS_PER_STATEMENT.len()];

/// The statements `{head} VALUES {row}, {row}... {tail}` for each size.
pub(crate) fn texts(head: &str, row: &str, tail: &str) -> Texts {
    ROWS_PER_STATEMENT.map(|rows| {
        format!("{head} VALUES {} {tail}", vec![row; rows].join(", "))
            .trim_end()
            .to_owned()
    })
}

/// `rows` cut into runs of the sizes, each with the text of its statement.
pub(crate) fn chunks<'r, T>(
    texts: &'static Texts,
    rows: &'r [T],
) -> impl Iterator<Item = (&'static str, &'r [T])> {
    let mut rest = rows;
    ROWS_PER_STATEMENT
        .into_iter()
        .zip(texts.iter())
        .flat_map(move |(size, text)| {
            let whole = rest.len() / size;
            let (these, after) = rest.split_at(whole * size);
            rest = after;
            these.chunks(size).map(move |chunk| (text.as_str(), chunk))
        })
}

/// Inserts `rows` through `texts`' statements, taken from the connection's cache; `bind` gives each
/// row's values in order.
pub(crate) fn insert<T>(
    conn: &Connection,
    texts: &'static Texts,
    rows: &[T],
    bind: impl Fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    for (text, chunk) in chunks(texts, rows) {
        let mut statement = conn.prepare_cached(text)?;
        fill(&mut statement, chunk, &bind)?;
    }
    Ok(())
}

/// Binds `rows`' values to `statement`, one of [`chunks`]' for as many rows, and runs it. Refuses to run
/// it unless every parameter was bound: the statement keeps its last run's values, which a `bind`
/// giving too few would silently reuse.
pub(crate) fn fill<T>(
    statement: &mut Statement<'_>,
    rows: &[T],
    bind: impl Fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut binder = Binder { statement, next: 1 };
    for row in rows {
        bind(&mut binder, row)?;
    }
    let (bound, expected) = (binder.next - 1, binder.statement.parameter_count());
    if bound != expected {
        return Err(rusqlite::Error::InvalidParameterCount(bound, expected));
    }
    binder.statement.raw_execute().map(drop)
}

/// Binds a statement's parameters one after another.
pub(crate) struct Binder<'s, 'c> {
    statement: &'s mut Statement<'c>,
    /// The next parameter's number (from 1).
    next: usize,
}

impl Binder<'_, '_> {
    pub fn value(&mut self, value: impl ToSql) -> rusqlite::Result<()> {
        self.statement.raw_bind_parameter(self.next, value)?;
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_the_largest_statements_first_and_each_once() {
        static TEXTS: std::sync::LazyLock<Texts> =
            std::sync::LazyLock::new(|| texts("INSERT INTO t (a)", "(?)", ""));
        let rows: Vec<usize> = (0..41).collect();
        let chunks: Vec<_> = chunks(&TEXTS, &rows).collect();
        let sizes: Vec<usize> = chunks.iter().map(|(_, chunk)| chunk.len()).collect();
        assert_eq!(sizes, [16, 16, 4, 4, 1]);
        let written: Vec<usize> = chunks
            .iter()
            .flat_map(|(_, chunk)| chunk.to_vec())
            .collect();
        assert_eq!(written, rows);
        for (text, chunk) in &chunks {
            assert_eq!(text.matches("(?)").count(), chunk.len(), "{text}");
        }
        assert_eq!(TEXTS[2], "INSERT INTO t (a) VALUES (?)");
    }

    /// Every row goes in once; a `bind` that gives a row too few values is refused, not run with the
    /// values the statement kept from its last run.
    #[test]
    fn rows_are_inserted_and_a_short_bind_is_refused() {
        static TEXTS: std::sync::LazyLock<Texts> =
            std::sync::LazyLock::new(|| texts("INSERT INTO t (a, b)", "(?, ?)", ""));
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .unwrap();
        let rows: Vec<i64> = (1..=21).collect();
        insert(&conn, &TEXTS, &rows, |bind, n| {
            bind.value(n)?;
            bind.value(format!("row {n}"))
        })
        .unwrap();
        let stored: Vec<(i64, String)> = conn
            .prepare("SELECT a, b FROM t ORDER BY a")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected: Vec<(i64, String)> = rows.iter().map(|&n| (n, format!("row {n}"))).collect();
        assert_eq!(stored, expected);
        let short = insert(&conn, &TEXTS, &[100_i64], |bind, n| bind.value(n));
        assert!(
            matches!(short, Err(rusqlite::Error::InvalidParameterCount(1, 2))),
            "{short:?}"
        );
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 21);
    }
}
