// Slot ids index a table this module owns (never wire data), so indexing them is allowed;
// every range derived from a packet is checked (`get`).
#![allow(clippy::indexing_slicing)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! IPv4 and IPv6 fragment reassembly within limits.
//!
//! Overlaps: for each 8-byte unit the first copy to arrive wins. (Hosts differ: Linux drops
//! a datagram with overlapping fragments, for IPv6 per RFC 5722 and for IPv4 since 2018; a
//! capture cannot tell what the receiver did, so wiremap keeps the first copy, and the
//! datagram stays bounded either way.) Two last fragments that disagree on the end, or data
//! past the end, drop the datagram (counted). A datagram is
//! at most 64 KiB; the table holds at most `max` datagrams and evicts the oldest when full
//! (the earliest started, found in O(1) amortised from a queue of slots by arrival).
//! Buffers of finished datagrams are kept for reuse: no allocation in steady state.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::IpHeader;

const MAX_DATAGRAM: usize = 65_535;
const UNITS: usize = MAX_DATAGRAM.div_ceil(8);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct Pending {
    key: Key,
    /// Bumped each time the slot starts a datagram: tells stale queue entries apart.
    generation: u32,
    first_ts: i64,
    buf: Vec<u8>,
    /// One bit per 8-byte unit received.
    have: Vec<u64>,
    /// Payload length, known once the last fragment arrived.
    total: Option<usize>,
    fragments: u32,
    ip_bytes: u32,
    /// Units received, and the furthest byte any fragment reached.
    units: usize,
    max_end: usize,
}

/// A completed datagram's upper-layer payload.
pub struct Done<'a> {
    pub payload: &'a [u8],
    pub ip_bytes: u32,
    pub fragments: u32,
}

pub struct FragTable {
    max: usize,
    timeout_ns: i64,
    index: HashMap<Key, usize>,
    slots: Vec<Pending>,
    /// The slot whose buffer the last `Done` borrowed; freed on the next call.
    finished: Option<usize>,
    free: Vec<usize>,
    /// (slot, generation) in the order datagrams started; entries whose slot has since
    /// completed, been dropped or been reused are stale and skipped.
    arrivals: VecDeque<(usize, u32)>,
    dropped: u64,
}

impl FragTable {
    pub fn new(max: usize, timeout_ns: i64) -> Self {
        FragTable {
            max: max.max(1),
            timeout_ns,
            index: HashMap::new(),
            slots: Vec::new(),
            finished: None,
            free: Vec::new(),
            arrivals: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Fragments dropped so far, counting those still waiting for a datagram that never
    /// completed (call at the end of input).
    pub fn dropped(&self) -> u64 {
        let waiting: u64 = self
            .index
            .values()
            .map(|&s| u64::from(self.slots[s].fragments))
            .sum();
        self.dropped + waiting
    }

    /// Add a fragment; returns the datagram's payload when it is complete.
    pub fn insert(&mut self, h: &IpHeader, part: &[u8], ts_ns: i64) -> Option<Done<'_>> {
        if let Some(slot) = self.finished.take() {
            self.free.push(slot);
        }
        let key = Key {
            src: h.src,
            dst: h.dst,
            id: h.frag_id,
            proto: h.proto,
        };
        let start = h.frag_offset as usize;
        let end = start + part.len();
        if end > MAX_DATAGRAM || (h.more_fragments && !part.len().is_multiple_of(8)) {
            self.dropped += 1;
            return None;
        }
        let slot = match self.index.get(&key) {
            Some(&s) if ts_ns.saturating_sub(self.slots[s].first_ts) <= self.timeout_ns => s,
            Some(&s) => {
                // Timed out: start over with this fragment.
                self.dropped += u64::from(self.slots[s].fragments);
                self.reset(s, key, ts_ns);
                s
            }
            None => {
                let s = self.allocate(ts_ns);
                self.reset(s, key, ts_ns);
                self.index.insert(key, s);
                s
            }
        };
        let p = &mut self.slots[slot];
        p.fragments += 1;
        p.ip_bytes = p.ip_bytes.saturating_add(h.ip_bytes);
        if !h.more_fragments {
            match p.total {
                Some(t) if t != end => {
                    // Two different ends: a malformed or hostile datagram.
                    self.dropped += u64::from(p.fragments);
                    self.release(slot);
                    return None;
                }
                _ => p.total = Some(end),
            }
        }
        if p.buf.len() < end {
            p.buf.resize(end, 0);
        }
        // Copy only units not yet received (first arrival wins on overlap).
        let mut unit = start / 8;
        while unit * 8 < end {
            let (w, b) = (unit / 64, unit % 64);
            if p.have[w] & (1 << b) == 0 {
                let from = unit * 8;
                let to = (from + 8).min(end);
                if let (Some(dst), Some(src)) =
                    (p.buf.get_mut(from..to), part.get(from - start..to - start))
                {
                    dst.copy_from_slice(src);
                }
                p.have[w] |= 1 << b;
                p.units += 1;
            }
            unit += 1;
        }
        p.max_end = p.max_end.max(end);
        let total = p.total?;
        if p.max_end > total {
            // Data past the datagram's end: malformed or hostile.
            self.dropped += u64::from(p.fragments);
            self.release(slot);
            return None;
        }
        if p.units != total.div_ceil(8) {
            return None;
        }
        self.index.remove(&key);
        self.finished = Some(slot);
        let p = &self.slots[slot];
        Some(Done {
            payload: p.buf.get(..total).unwrap_or(&[]),
            ip_bytes: p.ip_bytes,
            fragments: p.fragments,
        })
    }

    fn allocate(&mut self, ts_ns: i64) -> usize {
        if let Some(s) = self.free.pop() {
            return s;
        }
        if self.slots.len() < self.max {
            self.slots.push(Pending {
                generation: 0,
                key: Key {
                    src: IpAddr::from([0u8; 4]),
                    dst: IpAddr::from([0u8; 4]),
                    id: 0,
                    proto: 0,
                },
                first_ts: ts_ns,
                buf: Vec::new(),
                have: vec![0; UNITS.div_ceil(64)],
                total: None,
                fragments: 0,
                ip_bytes: 0,
                units: 0,
                max_end: 0,
            });
            return self.slots.len() - 1;
        }
        // Full: evict the datagram that started first. Every slot is pending here (none
        // free, the finished one was freed above), so a live entry is in the queue.
        let oldest = loop {
            match self.arrivals.pop_front() {
                Some((s, g)) if self.live(s, g) => break s,
                Some(_) => {}
                None => break 0,
            }
        };
        self.dropped += u64::from(self.slots[oldest].fragments);
        let k = self.slots[oldest].key;
        self.index.remove(&k);
        oldest
    }

    /// The queue entry (slot, generation) is the slot's pending datagram.
    fn live(&self, s: usize, generation: u32) -> bool {
        self.slots
            .get(s)
            .is_some_and(|p| p.generation == generation && self.index.get(&p.key) == Some(&s))
    }

    fn reset(&mut self, s: usize, key: Key, ts_ns: i64) {
        let p = &mut self.slots[s];
        p.generation = p.generation.wrapping_add(1);
        let generation = p.generation;
        p.key = key;
        p.first_ts = ts_ns;
        p.buf.clear();
        p.have.iter_mut().for_each(|w| *w = 0);
        p.total = None;
        p.fragments = 0;
        p.ip_bytes = 0;
        p.units = 0;
        p.max_end = 0;
        if self.arrivals.len() >= self.max.saturating_mul(2) {
            // Drop stale entries: at most `max` stay live, so this runs at most once per
            // `max` datagrams started (O(1) amortised) and the queue never grows past 2 × max.
            let mut q = std::mem::take(&mut self.arrivals);
            q.retain(|&(s, g)| self.live(s, g));
            self.arrivals = q;
        }
        self.arrivals.push_back((s, generation));
    }

    fn release(&mut self, s: usize) {
        let k = self.slots[s].key;
        self.index.remove(&k);
        self.free.push(s);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hdr(id: u32, offset: u32, more: bool) -> IpHeader {
        IpHeader {
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 0, 2]),
            proto: 17,
            payload_start: 0,
            payload_end: 0,
            ip_bytes: 28,
            truncated: false,
            l4_wire_len: 8,
            fragmented: true,
            frag_offset: offset,
            more_fragments: more,
            frag_id: id,
        }
    }

    /// First fragment of datagram `id` (8 bytes, more to come).
    fn start(t: &mut FragTable, id: u32, ts: i64) {
        assert!(t.insert(&hdr(id, 0, true), &[id as u8; 8], ts).is_none());
    }

    /// Last fragment of datagram `id`: true if it completed the datagram.
    fn end(t: &mut FragTable, id: u32, ts: i64) -> bool {
        t.insert(&hdr(id, 8, false), &[0xee; 4], ts).is_some()
    }

    #[test]
    fn a_full_table_evicts_the_datagram_that_started_first_skipping_finished_ones() {
        let mut t = FragTable::new(4, 1_000_000_000);
        for id in 0..4 {
            start(&mut t, id, i64::from(id));
        }
        assert!(
            end(&mut t, 1, 4),
            "datagram 1 completes (its queue entry goes stale)"
        );
        start(&mut t, 4, 5); // reuses datagram 1's slot: nothing evicted
        assert_eq!(t.dropped(), 4, "0, 2, 3, 4 waiting");
        start(&mut t, 5, 6); // full: evicts 0
        start(&mut t, 6, 7); // full: evicts 2 (the stale entry of 1 is skipped)
        assert!(
            !end(&mut t, 0, 8),
            "0 was evicted: its end starts a new datagram"
        );
        // That evicted 3; 4, 5 and 6 are still whole.
        assert!(end(&mut t, 4, 9));
        assert!(end(&mut t, 5, 10));
        assert!(end(&mut t, 6, 11));
        assert!(!end(&mut t, 3, 12), "3 was evicted");
        // Evicted: 0, 2, 3 (one fragment each); waiting: the lone ends of 0 and 3.
        assert_eq!(t.dropped(), 5);
    }

    #[test]
    fn the_arrival_queue_stays_bounded() {
        let max = 64;
        let mut t = FragTable::new(max, i64::MAX);
        // 100,000 datagrams, most completing, every third one left waiting (so the table
        // keeps filling and evicting).
        for id in 0..100_000u32 {
            start(&mut t, id, i64::from(id));
            if id % 3 != 0 {
                assert!(end(&mut t, id, i64::from(id)));
            }
            assert!(t.arrivals.len() <= 2 * max + 1, "{}", t.arrivals.len());
            assert!(t.index.len() <= max);
        }
        assert!(t.arrivals.capacity() <= 4 * max + 8);
    }
}
