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

/// Binds `rows`' values to `statement`, one of [`chunks`]' for as many rows, and runs it.
pub(crate) fn fill<T>(
    statement: &mut Statement<'_>,
    rows: &[T],
    bind: impl Fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut binder = Binder { statement, next: 1 };
    for row in rows {
        bind(&mut binder, row)?;
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
}
