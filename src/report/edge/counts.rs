//! [`Counts`]: per-key counters that are cheap for the few keys one connection has.
//!
//! A connection's tally sees a handful of distinct resources and codes but is updated on
//! every request and response, and there are many connections: a hash map there costs an
//! allocation, rehashes while growing and a hash of the key per update. A short vector
//! searched linearly costs none of that. Once a tally holds many keys (an edge's merged
//! counts) it moves to a hash map.
//!
//! Keys are bounded ([`CODES_PER_TALLY`]): a Redis error's first word is whatever the server
//! sent, so a hostile or broken server could otherwise grow an edge's codes without end.
//! Past the bound the tally keeps the smallest keys and sums the rest in `other`. Keeping
//! the smallest (not the first) makes the result independent of arrival and merge order: a
//! key folded anywhere had that many smaller keys beside it, so it is never among the
//! smallest of any union either, and the kept keys' counts stay exact.

use std::collections::HashMap;
use std::hash::Hash;

use crate::limits::CODES_PER_TALLY;

/// Keys kept in the vector before moving to a hash map.
const SMALL: usize = 16;

#[derive(Clone, Debug)]
pub struct Counts<K, V> {
    /// One key inline: most connections have one code, and a vector of their own was an
    /// allocation per connection (with its cache miss on every response).
    small: smallvec::SmallVec<[(K, V); 1]>,
    /// Holds every entry once the vector would exceed [`SMALL`] (the vector is then empty).
    /// Boxed: rarely made, and inline it was 64 bytes of every connection's and edge's
    /// tally.
    #[allow(clippy::box_collection)] // the point: 8 bytes inline instead of 64
    map: Option<Box<HashMap<K, V, ahash::RandomState>>>,
    /// Counts of keys folded past [`CODES_PER_TALLY`].
    pub other: u64,
}

impl<K, V> Default for Counts<K, V> {
    fn default() -> Self {
        Counts {
            small: smallvec::SmallVec::new(),
            map: None,
            other: 0,
        }
    }
}

impl<K: Eq + Hash + Copy + Ord> Counts<K, u64> {
    pub fn len(&self) -> usize {
        match &self.map {
            Some(m) => m.len(),
            None => self.small.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.other == 0
    }

    /// Add `n` to `k`'s count (or to `other`, when `k` is not among the smallest
    /// [`CODES_PER_TALLY`] keys seen).
    pub fn add(&mut self, k: &K, n: u64) {
        if let Some(v) = self.get_mut(k) {
            *v += n;
            return;
        }
        if self.len() >= CODES_PER_TALLY {
            let Some(largest) = self.iter().map(|(x, _)| *x).max() else {
                return;
            };
            if *k > largest {
                self.other += n;
                return;
            }
            self.other += self.remove(&largest);
        }
        self.insert(*k, n);
    }

    /// Back to empty; the vector keeps its capacity.
    pub fn clear(&mut self) {
        self.small.clear();
        self.map = None;
        self.other = 0;
    }

    /// Add every count of `o`.
    pub fn merge(&mut self, o: &Counts<K, u64>) {
        for (k, n) in o.iter() {
            self.add(k, *n);
        }
        self.other += o.other;
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut u64> {
        match &mut self.map {
            Some(m) => m.get_mut(k),
            None => self.small.iter_mut().find(|(x, _)| x == k).map(|(_, v)| v),
        }
    }

    fn remove(&mut self, k: &K) -> u64 {
        match &mut self.map {
            Some(m) => m.remove(k).unwrap_or(0),
            None => match self.small.iter().position(|(x, _)| x == k) {
                Some(i) => self.small.swap_remove(i).1,
                None => 0,
            },
        }
    }

    fn insert(&mut self, k: K, n: u64) {
        if let Some(m) = &mut self.map {
            m.insert(k, n);
            return;
        }
        if self.small.len() < SMALL {
            self.small.push((k, n));
            return;
        }
        let mut m = HashMap::with_capacity_and_hasher(SMALL * 2, ahash::RandomState::new());
        m.extend(self.small.drain(..));
        m.insert(k, n);
        self.small = smallvec::SmallVec::new();
        self.map = Some(Box::new(m));
    }

    /// Where the short vector's entries are (for a prefetch; nothing is read).
    pub fn memory(&self) -> (*const u8, usize) {
        (
            self.small.as_ptr().cast(),
            std::mem::size_of_val(self.small.as_slice()),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &u64)> {
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
            c.add(&k, 1);
            *want.entry(k).or_default() += 1;
            assert_eq!(c.len(), want.len());
            c.add(&k, 2);
            *want.get_mut(&k).unwrap() += 2;
        }
        let mut got: Vec<(u32, u64)> = c.iter().map(|(k, v)| (*k, *v)).collect();
        got.sort();
        let mut exp: Vec<(u32, u64)> = want.into_iter().collect();
        exp.sort();
        assert_eq!(got, exp);
        assert_eq!(c.other, 0);
    }

    /// Distinct keys past the bound, in different orders and split across merges: the
    /// smallest keys keep exact counts, the rest sum in `other`, and every order agrees.
    #[test]
    fn past_the_bound_the_smallest_keys_stay_whatever_the_order() {
        let n = CODES_PER_TALLY as u32 * 3;
        // Key k is seen k % 5 + 1 times.
        let expected_kept: Vec<(u32, u64)> = (0..CODES_PER_TALLY as u32)
            .map(|k| (k, u64::from(k % 5 + 1)))
            .collect();
        let total: u64 = (0..n).map(|k| u64::from(k % 5 + 1)).sum();
        let orders: [Box<dyn Fn(u32) -> u32>; 3] = [
            Box::new(|i| i),
            Box::new(move |i| n - 1 - i),
            Box::new(move |i| (i * 37) % n),
        ];
        for order in &orders {
            // Two parts (two connections), each fed in this order, then merged.
            let mut parts = [Counts::<u32, u64>::default(), Counts::default()];
            for i in 0..n {
                let k = order(i);
                for _ in 0..k % 5 + 1 {
                    parts[(i % 2) as usize].add(&k, 1);
                }
            }
            let mut edge = Counts::<u32, u64>::default();
            for p in &parts {
                assert!(p.len() <= CODES_PER_TALLY);
                edge.merge(p);
            }
            let mut got: Vec<(u32, u64)> = edge.iter().map(|(k, v)| (*k, *v)).collect();
            got.sort();
            assert_eq!(got, expected_kept);
            let kept: u64 = got.iter().map(|(_, v)| v).sum();
            assert_eq!(edge.other, total - kept);
        }
    }
}
