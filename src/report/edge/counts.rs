//! [`Counts`]: per-key counters that are cheap for the few keys one connection has.
//!
//! A connection's tally sees a handful of distinct resources and codes but is updated on
//! every request and response, and there are many connections: a hash map there costs an
//! allocation, rehashes while growing and a hash of the key per update. A short vector
//! searched linearly costs none of that. Once a tally holds many keys (an edge's merged
//! counts) it moves to a hash map.

use std::collections::HashMap;
use std::hash::Hash;

/// Keys kept in the vector before moving to a hash map.
const SMALL: usize = 16;

#[derive(Clone, Debug)]
pub struct Counts<K, V> {
    small: Vec<(K, V)>,
    /// Holds every entry once the vector would exceed [`SMALL`] (the vector is then empty).
    map: Option<HashMap<K, V, ahash::RandomState>>,
}

impl<K, V> Default for Counts<K, V> {
    fn default() -> Self {
        Counts {
            small: Vec::new(),
            map: None,
        }
    }
}

impl<K: Eq + Hash + Copy, V: Default> Counts<K, V> {
    pub fn len(&self) -> usize {
        match &self.map {
            Some(m) => m.len(),
            None => self.small.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counter of `k`, created (default) if missing.
    pub fn entry(&mut self, k: &K) -> &mut V {
        if self.map.is_none() {
            let pos = match self.small.iter().position(|(x, _)| x == k) {
                Some(i) => Some(i),
                None if self.small.len() < SMALL => {
                    // Most connections have one key: the first push would otherwise
                    // reserve four (~460 bytes for resources). Later ones double as usual.
                    if self.small.capacity() == 0 {
                        self.small.reserve_exact(1);
                    }
                    self.small.push((*k, V::default()));
                    Some(self.small.len() - 1)
                }
                None => None,
            };
            if let Some(i) = pos {
                // `i` was just found or pushed.
                return &mut self.small[i].1;
            }
            let mut m = HashMap::with_capacity_and_hasher(SMALL * 2, ahash::RandomState::new());
            m.extend(self.small.drain(..));
            self.small = Vec::new();
            self.map = Some(m);
        }
        self.map
            .get_or_insert_with(HashMap::default)
            .entry(*k)
            .or_default()
    }

    /// Where the short vector's entries are (for a prefetch; nothing is read).
    pub fn memory(&self) -> (*const u8, usize) {
        (
            self.small.as_ptr().cast(),
            std::mem::size_of_val(self.small.as_slice()),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let small = self.small.iter().map(|(k, v)| (k, v));
        small.chain(self.map.iter().flat_map(|m| m.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_a_hash_map_across_the_move() {
        let mut c = Counts::<u32, u64>::default();
        let mut want = HashMap::<u32, u64>::new();
        // Keys 0..40 in a scrambled, repeating order: crosses SMALL and revisits keys on
        // both sides of the move.
        for i in 0..400u32 {
            let k = (i * 7 + i / 13) % 40;
            *c.entry(&k) += 1;
            *want.entry(k).or_default() += 1;
            assert_eq!(c.len(), want.len());
            *c.entry(&k) += 2;
            *want.get_mut(&k).unwrap() += 2;
        }
        let mut got: Vec<(u32, u64)> = c.iter().map(|(k, v)| (*k, *v)).collect();
        got.sort();
        let mut exp: Vec<(u32, u64)> = want.into_iter().collect();
        exp.sort();
        assert_eq!(got, exp);
    }
}
