//! [`InlineQueue`]: a FIFO of pending requests whose first `N` entries live in the session.
//!
//! Nearly every connection has one request in flight, so a session's queue is pushed and
//! popped once per exchange. In a `VecDeque` that was an allocation per connection and, at
//! every response, a cache miss on a heap block of its own; inline, the entry is on the
//! session's lines. Deeper pipelines spill into a `VecDeque`, in order, and refill the ring
//! as it drains.

use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq)]
pub struct InlineQueue<T, const N: usize> {
    ring: [Option<T>; N],
    /// Index in `ring` of the oldest entry.
    head: usize,
    /// Entries in `ring`; `spill` is only used while all `N` are taken.
    held: usize,
    spill: VecDeque<T>,
}

impl<T, const N: usize> Default for InlineQueue<T, N> {
    fn default() -> Self {
        InlineQueue {
            ring: std::array::from_fn(|_| None),
            head: 0,
            held: 0,
            spill: VecDeque::new(),
        }
    }
}

impl<T, const N: usize> InlineQueue<T, N> {
    const _NOT_EMPTY: () = assert!(N > 0, "an inline queue holds at least one entry");

    pub fn len(&self) -> usize {
        self.held.saturating_add(self.spill.len())
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    fn slot(&self, i: usize) -> usize {
        self.head.wrapping_add(i).checked_rem(N).unwrap_or(0)
    }

    pub fn push_back(&mut self, item: T) {
        let () = Self::_NOT_EMPTY;
        if self.held < N {
            let at = self.slot(self.held);
            if let Some(s) = self.ring.get_mut(at) {
                *s = Some(item);
                self.held = self.held.saturating_add(1);
            }
        } else {
            self.spill.push_back(item);
        }
    }

    pub fn pop_front(&mut self) -> Option<T> {
        if self.held == 0 {
            return None;
        }
        let item = self.ring.get_mut(self.head).and_then(Option::take);
        self.head = self.slot(1);
        self.held = self.held.saturating_sub(1);
        if let Some(next) = self.spill.pop_front() {
            let at = self.slot(self.held);
            if let Some(s) = self.ring.get_mut(at) {
                *s = Some(next);
                self.held = self.held.saturating_add(1);
            }
        }
        item
    }

    pub fn front(&self) -> Option<&T> {
        if self.held == 0 {
            return None;
        }
        self.ring.get(self.head).and_then(Option::as_ref)
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        if self.held == 0 {
            return None;
        }
        self.ring.get_mut(self.head).and_then(Option::as_mut)
    }

    pub fn back_mut(&mut self) -> Option<&mut T> {
        if !self.spill.is_empty() {
            return self.spill.back_mut();
        }
        if self.held == 0 {
            return None;
        }
        let at = self.slot(self.held.saturating_sub(1));
        self.ring.get_mut(at).and_then(Option::as_mut)
    }

    /// Entries from the oldest.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.held)
            .filter_map(|i| self.ring.get(self.slot(i)).and_then(Option::as_ref))
            .chain(self.spill.iter())
    }

    /// Drop the `n` oldest entries.
    pub fn drop_front(&mut self, n: usize) {
        for _ in 0..n.min(self.len()) {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.ring.iter_mut().for_each(|s| *s = None);
        self.head = 0;
        self.held = 0;
        self.spill.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a `VecDeque` model, over a long random mix of pushes, pops, edits at both
    /// ends, partial drops and clears, with depths past the inline part.
    #[test]
    fn behaves_as_a_vecdeque() {
        let mut q: InlineQueue<u32, 2> = InlineQueue::default();
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..50_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 16 {
                0..=6 => {
                    q.push_back(i);
                    model.push_back(i);
                }
                7..=11 => assert_eq!(q.pop_front(), model.pop_front()),
                12 => {
                    if let (Some(a), Some(b)) = (q.front_mut(), model.front_mut()) {
                        *a += 1;
                        *b += 1;
                    }
                }
                13 => {
                    if let (Some(a), Some(b)) = (q.back_mut(), model.back_mut()) {
                        *a += 7;
                        *b += 7;
                    }
                }
                14 => {
                    let n = (x >> 8) as usize % 4;
                    q.drop_front(n);
                    model.drain(..n.min(model.len()));
                }
                _ => {
                    if (x >> 8).is_multiple_of(64) {
                        q.clear();
                        model.clear();
                    }
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.is_empty(), model.is_empty());
            assert_eq!(q.front(), model.front());
            if i % 97 == 0 {
                assert!(q.iter().eq(model.iter()), "at {i}");
            }
        }
    }

    #[test]
    fn one_entry_inline_never_allocates_for_one_in_flight() {
        let mut q: InlineQueue<u8, 1> = InlineQueue::default();
        for i in 0..100 {
            q.push_back(i);
            assert_eq!(q.pop_front(), Some(i));
        }
        assert_eq!(q.spill.capacity(), 0);
        assert_eq!(q.pop_front(), None);
    }
}
