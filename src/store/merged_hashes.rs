//! Which idempotency hashes `idempotency_keys` may hold: a Bloom filter the writer asks before it
//! looks a send's key up in the table.
//!
//! Keys are unique per send, so nearly every check is of a key never seen, and each was a search of a
//! table that grows with the log: about a fifteenth of the writer's time per message in the store bench.
//! The filter answers "not there" from memory for all but a fraction of a percent of them. It may say
//! "maybe" for a hash the table lacks (a false positive, a row retention deleted, a slice whose batch
//! was rolled back): the table is searched then, as before, so it is never wrong, only slower.
//!
//! The hashes are already uniform 64-bit values (the first 8 bytes of a SHA-256), so the probes are
//! taken from them directly. Filled from the table at start; sized for twice what it holds, at 16 bits
//! a key (about 0.2 % false positives when full); filled again, twice as large, from the table once
//! that many have been added.

use rusqlite::Connection;

/// Probes per hash.
const PROBES: u64 = 4;

/// Bits per key at the capacity the filter is sized for.
const BITS_PER_KEY: usize = 16;

/// The smallest filter: 128 KB, room for 65,536 keys.
const MIN_KEYS: usize = 65_536;

pub(crate) struct MergedHashes {
    bits: Vec<u64>,
    /// Number of bits - 1 (a power of two).
    mask: u64,
    /// Hashes added, and how many the size is for.
    count: usize,
    capacity: usize,
}

impl MergedHashes {
    /// A filter of every hash in the table, with room for as many again.
    pub fn load(conn: &Connection) -> rusqlite::Result<MergedHashes> {
        let rows: i64 = conn.query_row("SELECT count(*) FROM idempotency_keys", [], |row| {
            row.get(0)
        })?;
        let mut filter = MergedHashes::with_capacity(2 * usize::try_from(rows).unwrap_or(0));
        let mut st = conn.prepare("SELECT hash FROM idempotency_keys")?;
        let mut hashes = st.query([])?;
        while let Some(row) = hashes.next()? {
            filter.set(row.get(0)?);
        }
        Ok(filter)
    }

    fn with_capacity(keys: usize) -> MergedHashes {
        let capacity = keys.max(MIN_KEYS).next_power_of_two();
        let bits = capacity * BITS_PER_KEY;
        MergedHashes {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            count: 0,
            capacity,
        }
    }

    /// Notes a hash merged into the table (inside the batch's transaction, so a reload sees it); past
    /// the capacity, the filter is loaded again from the table, larger.
    pub fn add(&mut self, conn: &Connection, hash: i64) -> rusqlite::Result<()> {
        if self.count >= self.capacity {
            *self = MergedHashes::load(conn)?;
        }
        self.set(hash);
        Ok(())
    }

    fn set(&mut self, hash: i64) {
        self.count += 1;
        for bit in self.probes(hash) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False if the table surely has no row for `hash`.
    pub fn may_contain(&self, hash: i64) -> bool {
        self.probes(hash)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Double hashing: the two halves of the hash, the step made odd so every probe differs.
    fn probes(&self, hash: i64) -> impl Iterator<Item = u64> + use<> {
        let hash = hash as u64;
        let (start, step) = (hash, hash.rotate_left(32) | 1);
        let mask = self.mask;
        (0..PROBES).map(move |i| start.wrapping_add(i.wrapping_mul(step)) & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::idempotency_hash;
    use crate::store::migrations;

    fn hash(n: usize) -> i64 {
        idempotency_hash(&format!("cms\nkey-{n}"))
    }

    /// Every hash added or loaded is found (a miss would accept a repeat as a new send), and few that
    /// were not are.
    #[test]
    fn every_hash_merged_is_found_and_few_others_are() {
        let conn = migrations::in_memory();
        let mut insert = conn
            .prepare("INSERT INTO idempotency_keys (run, hash, ids) VALUES (1, ?1, x'00')")
            .unwrap();
        for n in 0..10_000 {
            insert.execute([hash(n)]).unwrap();
        }
        let mut filter = MergedHashes::load(&conn).unwrap();
        // Past its capacity, so it is loaded again, larger, on the way.
        let added = 3 * MIN_KEYS;
        for n in 10_000..10_000 + added {
            insert.execute([hash(n)]).unwrap();
            filter.add(&conn, hash(n)).unwrap();
        }
        assert!(filter.capacity > MIN_KEYS);
        assert!((0..10_000 + added).all(|n| filter.may_contain(hash(n))));
        let others = 100_000;
        let false_positives = (1_000_000..1_000_000 + others)
            .filter(|&n| filter.may_contain(hash(n)))
            .count();
        assert!(false_positives < others / 100, "{false_positives}");
    }
}
