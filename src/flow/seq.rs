#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! Per-direction TCP sequence tracking: what is new, what is a retransmission, what was
//! never seen. Works in wrap-around sequence space (RFC 1982 style comparisons).
//! Out-of-order ranges are remembered (a bounded few) so a late segment filling a hole is
//! not mistaken for a retransmission, and a duplicate of a buffered one is.

/// `a` before `b` in sequence space.
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

const MAX_RANGES: usize = 8;

/// What one segment turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// New bytes at the expected position (possibly also filling buffered ranges after it).
    InOrder,
    /// New bytes after a hole.
    OutOfOrder,
    /// Bytes all seen before (possibly partly new: the new part is accepted).
    Retransmission,
    /// A keep-alive (one byte or none below the expected position) or a window probe.
    KeepAlive,
}

#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    /// Next expected sequence number; None until the direction's start is known.
    next: Option<u32>,
    /// Out-of-order ranges [start, end) above `next`, unsorted, at most MAX_RANGES;
    /// allocated on the first hole only, as most connections never have one.
    ranges: Option<Box<[(u32, u32); MAX_RANGES]>>,
    nranges: u8,
    /// Bytes skipped as never seen.
    pub missed: u64,
    /// Highest sequence end seen.
    max_end: Option<u32>,
}

impl SeqTracker {
    /// The direction starts at `isn` (its SYN); data starts at isn+1.
    pub fn syn(&mut self, isn: u32) {
        if self.next.is_none() {
            self.next = Some(isn.wrapping_add(1));
            self.max_end = self.next;
        }
    }

    pub fn next(&self) -> Option<u32> {
        self.next
    }

    /// Account for a segment of `len` sequence numbers (payload, plus 1 for FIN).
    /// `peer_window_zero` tells a window probe from new data.
    pub fn segment(&mut self, seq: u32, len: u32, peer_window_zero: bool) -> SegmentKind {
        let next = match self.next {
            Some(n) => n,
            None => {
                // Mid-stream: the first segment seen defines the start.
                self.next = Some(seq);
                self.max_end = Some(seq);
                seq
            }
        };
        if len == 0 {
            return SegmentKind::InOrder;
        }
        let end = seq.wrapping_add(len);
        if len <= 1 && seq == next.wrapping_sub(1) {
            return SegmentKind::KeepAlive;
        }
        if len == 1 && seq == next && peer_window_zero {
            return SegmentKind::KeepAlive;
        }
        self.max_end = Some(match self.max_end {
            Some(m) if seq_lt(end, m) => m,
            _ => end,
        });
        if seq_lt(seq, next) {
            // Starts before the expected position: seen before, at least in part.
            if seq_lt(next, end) {
                self.next = Some(end);
                self.absorb();
            }
            return SegmentKind::Retransmission;
        }
        if seq == next {
            self.next = Some(end);
            self.absorb();
            return SegmentKind::InOrder;
        }
        // After a hole: a duplicate of a buffered range is a retransmission.
        let n = self.nranges as usize;
        let ranges = self
            .ranges
            .get_or_insert_with(|| Box::new([(0, 0); MAX_RANGES]));
        let covered = ranges
            .get(..n)
            .unwrap_or_default()
            .iter()
            .any(|&(s, e)| !seq_lt(seq, s) && !seq_lt(e, end));
        if covered {
            return SegmentKind::Retransmission;
        }
        if let Some(free) = ranges.get_mut(n) {
            *free = (seq, end);
            self.nranges += 1;
        } else {
            // Too many holes: give up on the earliest one, count it as missed.
            self.skip_to_first_range();
            return self.segment(seq, len, peer_window_zero);
        }
        SegmentKind::OutOfOrder
    }

    /// Merge buffered ranges that now touch `next`.
    fn absorb(&mut self) {
        let Some(mut next) = self.next else { return };
        let Some(ranges) = self.ranges.as_mut() else {
            return;
        };
        loop {
            let live = ranges.get_mut(..self.nranges as usize).unwrap_or_default();
            // A range starting at or before `next` is now contiguous (or already covered).
            let Some(i) = live.iter().position(|r| !seq_lt(next, r.0)) else {
                break;
            };
            let (Some(&last), Some(&(_, e))) = (live.last(), live.get(i)) else {
                break;
            };
            if seq_lt(next, e) {
                next = e;
            }
            // Remove range i: the last one takes its place.
            if let Some(r) = live.get_mut(i) {
                *r = last;
            }
            self.nranges -= 1;
        }
        self.next = Some(next);
    }

    /// Jump over the hole before the earliest buffered range.
    fn skip_to_first_range(&mut self) {
        let Some(next) = self.next else { return };
        let Some(ranges) = self.ranges.as_ref() else {
            return;
        };
        let Some(start) = ranges
            .get(..self.nranges as usize)
            .unwrap_or_default()
            .iter()
            .map(|r| r.0)
            .reduce(|first, s| if seq_lt(s, first) { s } else { first })
        else {
            self.nranges = 0; // nothing buffered after all: `finish` must end
            return;
        };
        self.missed += u64::from(start.wrapping_sub(next));
        self.next = Some(start);
        self.absorb();
    }

    /// At the end of the connection: holes still open, and data the peer acknowledged
    /// that never appeared (`peer_ack`), count as missed.
    pub fn finish(&mut self, peer_ack: Option<u32>) {
        while self.nranges > 0 {
            self.skip_to_first_range();
        }
        if let (Some(next), Some(ack)) = (self.next, peer_ack) {
            let gap = ack.wrapping_sub(next);
            // Only a plausible forward gap (not an old or garbage ack).
            if gap > 0 && gap < (1 << 30) {
                self.missed += u64::from(gap);
                self.next = Some(ack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn in_order_then_retransmission() {
        let mut t = SeqTracker::default();
        t.syn(1000);
        assert_eq!(t.segment(1001, 100, false), SegmentKind::InOrder);
        assert_eq!(t.segment(1001, 100, false), SegmentKind::Retransmission);
        assert_eq!(t.segment(1101, 50, false), SegmentKind::InOrder);
        t.finish(Some(1151));
        assert_eq!(t.missed, 0);
    }

    #[test]
    fn late_segment_filling_a_hole_is_not_a_retransmission() {
        let mut t = SeqTracker::default();
        t.syn(0);
        assert_eq!(t.segment(1, 100, false), SegmentKind::InOrder);
        assert_eq!(t.segment(201, 100, false), SegmentKind::OutOfOrder);
        assert_eq!(t.segment(201, 100, false), SegmentKind::Retransmission);
        assert_eq!(t.segment(101, 100, false), SegmentKind::InOrder);
        assert_eq!(t.next(), Some(301));
        t.finish(None);
        assert_eq!(t.missed, 0);
    }

    #[test]
    fn keepalive_and_window_probe_are_not_retransmissions() {
        let mut t = SeqTracker::default();
        t.syn(0);
        t.segment(1, 10, false);
        assert_eq!(t.segment(10, 1, false), SegmentKind::KeepAlive);
        assert_eq!(t.segment(10, 0, false), SegmentKind::InOrder);
        assert_eq!(t.segment(11, 1, true), SegmentKind::KeepAlive);
    }

    #[test]
    fn wraps_around_2_pow_32() {
        let mut t = SeqTracker::default();
        t.syn(u32::MAX - 10);
        assert_eq!(t.segment(u32::MAX - 9, 100, false), SegmentKind::InOrder);
        assert_eq!(t.segment(90, 10, false), SegmentKind::InOrder);
        assert_eq!(t.segment(50, 10, false), SegmentKind::Retransmission);
    }

    #[test]
    fn holes_never_filled_are_missed_bytes() {
        let mut t = SeqTracker::default();
        t.syn(0);
        t.segment(1, 100, false);
        t.segment(301, 100, false);
        t.finish(Some(501));
        // 200 bytes of hole, and 100 acknowledged but never seen at the end.
        assert_eq!(t.missed, 300);
    }
}
