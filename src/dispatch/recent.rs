//! A bounded map that forgets what was least recently written: the dispatcher's memory of things learnt
//! since it started (which modem last texted a recipient, which modem to avoid for a message) must not
//! grow with the traffic.
//!
//! Two generations: writes go to the current one; when it is full it becomes the previous one and the
//! older entries are dropped. Cheaper than a true LRU and bounded the same way.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub(crate) struct Recent<K, V> {
    /// Entries per generation.
    generation: usize,
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Copy> Recent<K, V> {
    /// Holds at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        Recent {
            generation: (capacity / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .copied()
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.previous.remove(&key);
        self.current.insert(key, value);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
    }

    pub fn remove<Q: Eq + Hash + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let current = self.current.remove(key);
        let previous = self.previous.remove(key);
        current.or(previous)
    }

    /// Every entry, the older generation first, so inserting them in order into another map keeps
    /// which are the most recent.
    pub fn into_entries(self) -> impl Iterator<Item = (K, V)> {
        self.previous.into_iter().chain(self.current)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_writes_and_never_more_than_its_capacity() {
        let mut recent = Recent::new(4);
        for i in 0..100 {
            recent.insert(i, i * 10);
            assert!(recent.len() <= 4);
        }
        assert_eq!(recent.get(&99), Some(990));
        assert_eq!(recent.get(&0), None);
        recent.insert(7, 1);
        recent.insert(7, 2);
        assert_eq!(recent.get(&7), Some(2));
        assert_eq!(recent.remove(&7), Some(2));
        assert_eq!(recent.get(&7), None);
    }

    #[test]
    fn a_rewritten_key_survives_a_generation_change() {
        let mut recent = Recent::new(4);
        recent.insert("a", 1);
        recent.insert("b", 2); // generation full: a, b become previous
        recent.insert("a", 3); // a moves to current
        recent.insert("c", 4); // current full again: b is forgotten
        assert_eq!(recent.get(&"a"), Some(3));
        assert_eq!(recent.get(&"c"), Some(4));
        assert_eq!(recent.get(&"b"), None);
    }
}
