#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! TCP reassembly for one direction: bytes come out in sequence order, once.
//!
//! Retransmitted and overlapping bytes are trimmed (first copy wins); segments after a hole
//! wait in a bounded arena; when the arena is full, or the connection ends with a hole, the
//! hole is reported as a [`Chunk::Gap`] and delivery resumes after it, so a lost segment
//! never stalls the parser. Sequence numbers wrap around 2^32.

use crate::limits::Limits;

/// What reassembly hands to the parser, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes, with the packet time of the segment that carried them.
    Data(&'a [u8], i64),
    /// Bytes that will never be seen (capture loss, snaplen cut, buffer limit).
    Gap,
    /// The direction ended (FIN), after all its data.
    Fin,
}

/// At most this many buffered out-of-order segments per direction.
const MAX_SEGMENTS: usize = 64;
/// Arena capacity kept after it empties; larger ones are released.
const KEEP_CAPACITY: usize = 16 * 1024;

#[derive(Clone, Copy, Debug)]
struct Held {
    seq: u32,
    ts: i64,
    /// Sequence length on the wire (captured bytes may be fewer).
    wire_len: u32,
    at: usize,
    len: usize,
}

/// Segments waiting behind a hole. Boxed: most directions never hold one, and every open
/// connection would otherwise carry both vectors inline, twice.
#[derive(Debug, Default)]
struct OutOfOrder {
    held: Vec<Held>,
    arena: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Reassembly {
    expected: Option<u32>,
    mid_stream: bool,
    /// Made on the first segment after a hole, then kept (as the arena's capacity is).
    ooo: Option<Box<OutOfOrder>>,
    fin_seq: Option<u32>,
    closed: bool,
    pub last_ts: i64,
}

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Reassembly {
    /// The direction's SYN: data starts at isn + 1.
    pub fn syn(&mut self, isn: u32) {
        if self.expected.is_none() {
            self.expected = Some(isn.wrapping_add(1));
        }
    }

    /// Bytes held out of order.
    pub fn held_bytes(&self) -> usize {
        self.ooo.as_ref().map_or(0, |o| o.arena.len())
    }

    fn held(&self) -> &[Held] {
        self.ooo.as_deref().map_or(&[], |o| &o.held)
    }

    /// True if this direction's first byte was not seen from its start (no SYN).
    pub fn started_mid_stream(&self) -> bool {
        self.mid_stream
    }

    /// Take one segment; `out` receives what is now deliverable, in order.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        wire_len: u32,
        fin: bool,
        ts: i64,
        limits: &Limits,
        dropped: &mut u64,
        mut out: impl FnMut(Chunk<'_>),
    ) {
        self.last_ts = ts;
        if self.closed {
            return;
        }
        let exp = match self.expected {
            Some(e) => e,
            None => {
                self.mid_stream = true;
                self.expected = Some(seq);
                seq
            }
        };
        if fin {
            self.fin_seq = Some(seq.wrapping_add(wire_len));
        }
        if wire_len > 0 {
            if before(exp, seq) {
                self.hold(seq, payload, wire_len, ts, limits, dropped, &mut out);
            } else {
                self.take(seq, payload, wire_len, ts, &mut out);
                self.drain(&mut out);
            }
        }
        self.check_fin(&mut out);
    }

    /// Deliver the part of a segment at or after `expected` (the segment starts at or
    /// before it).
    fn take(
        &mut self,
        seq: u32,
        payload: &[u8],
        wire_len: u32,
        ts: i64,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        let Some(exp) = self.expected else { return };
        let skip = exp.wrapping_sub(seq);
        if skip >= wire_len {
            return; // all seen before
        }
        match payload.get(skip as usize..) {
            Some(rest) if !rest.is_empty() => out(Chunk::Data(rest, ts)),
            _ => {}
        }
        if payload.len() < wire_len as usize {
            // The capture holds less than the segment carried.
            out(Chunk::Gap);
        }
        self.expected = Some(seq.wrapping_add(wire_len));
    }

    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        seq: u32,
        payload: &[u8],
        wire_len: u32,
        ts: i64,
        limits: &Limits,
        dropped: &mut u64,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        if self
            .held()
            .iter()
            .any(|h| h.seq == seq && h.wire_len >= wire_len)
        {
            return; // a copy of a held segment
        }
        let full = self.held().len() >= MAX_SEGMENTS
            || self.held_bytes() + payload.len() > limits.max_reassembly_bytes_per_direction;
        if full {
            // Give up on the hole: resume at the earliest segment we have (held or this).
            *dropped += 1;
            let earliest =
                self.held()
                    .iter()
                    .map(|h| h.seq)
                    .fold(seq, |m, s| if before(s, m) { s } else { m });
            out(Chunk::Gap);
            self.expected = Some(earliest);
            self.drain(out);
            let Some(exp) = self.expected else { return };
            if before(exp, seq) {
                // Still after a hole: skip to this segment too.
                out(Chunk::Gap);
                self.expected = Some(seq);
            }
            self.take(seq, payload, wire_len, ts, out);
            self.drain(out);
            return;
        }
        let o = self.ooo.get_or_insert_with(Box::default);
        let at = o.arena.len();
        o.arena.extend_from_slice(payload);
        o.held.push(Held {
            seq,
            ts,
            wire_len,
            at,
            len: payload.len(),
        });
    }

    /// Deliver held segments that now touch `expected`.
    fn drain(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(exp) = self.expected {
            let Some(o) = self.ooo.as_deref_mut() else {
                break;
            };
            let Some(i) = o.held.iter().position(|h| !before(exp, h.seq)) else {
                break;
            };
            let h = o.held.swap_remove(i);
            let arena = std::mem::take(&mut o.arena);
            let bytes =
                h.at.checked_add(h.len)
                    .and_then(|end| arena.get(h.at..end))
                    .unwrap_or_default();
            self.take(h.seq, bytes, h.wire_len, h.ts, out);
            if let Some(o) = self.ooo.as_deref_mut() {
                o.arena = arena;
            }
        }
        if let Some(o) = self.ooo.as_deref_mut() {
            if o.held.is_empty() {
                o.arena.clear();
                if o.arena.capacity() > KEEP_CAPACITY {
                    o.arena = Vec::new();
                }
            }
        }
    }

    fn check_fin(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        if let (Some(f), Some(e)) = (self.fin_seq, self.expected) {
            if !before(e, f) && self.held().is_empty() && !self.closed {
                self.closed = true;
                out(Chunk::Fin);
            }
        }
    }

    /// The peer acknowledged up to `ack`: a hole below it will never be filled (the peer
    /// got those bytes; the capture did not), so report it now and deliver what follows,
    /// instead of waiting for the end of the connection.
    pub fn peer_ack(&mut self, ack: u32, mut out: impl FnMut(Chunk<'_>)) {
        if self.held().is_empty() {
            // Bytes at the tail that the peer has and the capture never showed.
            if self.tail_missing(ack) {
                out(Chunk::Gap);
                self.expected = Some(ack);
            }
            return;
        }
        while !self.held().is_empty() {
            let Some(exp) = self.expected else { return };
            let earliest =
                self.held()
                    .iter()
                    .map(|h| h.seq)
                    .fold(ack, |m, s| if before(s, m) { s } else { m });
            // Only a hole that lies wholly below the acknowledgment is known lost.
            if !before(exp, earliest)
                || before(ack, earliest)
                || earliest == ack && !self.held().iter().any(|h| h.seq == ack)
            {
                return;
            }
            out(Chunk::Gap);
            self.expected = Some(earliest);
            self.drain(&mut out);
        }
        self.check_fin(&mut out);
    }

    /// Whether [`Reassembly::peer_ack`] would do anything for `ack` (checked per segment
    /// before the stream is taken out of its connection).
    pub fn ack_matters(&self, ack: u32) -> bool {
        !self.held().is_empty() || self.tail_missing(ack)
    }

    fn tail_missing(&self, ack: u32) -> bool {
        match self.expected {
            Some(exp) => before(exp, ack) && ack.wrapping_sub(exp) < (1 << 30) && !self.closed,
            None => false,
        }
    }

    /// End of the connection: deliver everything held, reporting holes as gaps.
    pub fn flush(&mut self, mut out: impl FnMut(Chunk<'_>)) {
        while !self.held().is_empty() {
            let earliest =
                self.held()
                    .iter()
                    .map(|h| h.seq)
                    .reduce(|m, s| if before(s, m) { s } else { m });
            out(Chunk::Gap);
            self.expected = earliest;
            self.drain(&mut out);
        }
        if let Some(f) = self.fin_seq {
            if !self.closed {
                self.expected = Some(f);
                self.check_fin(&mut out);
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

    fn run(segs: &[(u32, &[u8])]) -> String {
        let mut r = Reassembly::default();
        r.syn(0);
        let mut s = String::new();
        let mut dropped = 0;
        let limits = Limits::default();
        for (seq, p) in segs {
            r.segment(
                *seq,
                p,
                p.len() as u32,
                false,
                0,
                &limits,
                &mut dropped,
                |c| match c {
                    Chunk::Data(d, _) => s.push_str(std::str::from_utf8(d).unwrap()),
                    Chunk::Gap => s.push('|'),
                    Chunk::Fin => s.push('$'),
                },
            );
        }
        r.flush(|c| match c {
            Chunk::Data(d, _) => s.push_str(std::str::from_utf8(d).unwrap()),
            Chunk::Gap => s.push('|'),
            Chunk::Fin => s.push('$'),
        });
        s
    }

    #[test]
    fn out_of_order_retransmitted_and_overlapping_bytes_come_out_once_in_order() {
        assert_eq!(
            run(&[
                (1, b"abc"),
                (7, b"ghi"),
                (4, b"def"),
                (1, b"abc"),
                (5, b"efgh"),
                (10, b"j")
            ]),
            "abcdefghij"
        );
    }

    #[test]
    fn a_hole_never_filled_becomes_a_gap() {
        assert_eq!(run(&[(1, b"abc"), (7, b"ghi")]), "abc|ghi");
    }

    #[test]
    fn a_hole_the_peer_acknowledged_is_a_gap_at_once() {
        let mut r = Reassembly::default();
        r.syn(0);
        let l = Limits::default();
        let mut d = 0;
        let mut s = String::new();
        let mut push = |c: Chunk<'_>| match c {
            Chunk::Data(x, _) => s.push_str(std::str::from_utf8(x).unwrap()),
            Chunk::Gap => s.push('|'),
            Chunk::Fin => s.push('$'),
        };
        r.segment(1, b"abc", 3, false, 0, &l, &mut d, &mut push);
        r.segment(7, b"ghi", 3, false, 0, &l, &mut d, &mut push);
        r.peer_ack(4, &mut push); // acknowledges only what we have: nothing to do
        r.peer_ack(10, &mut push);
        assert_eq!(s, "abc|ghi");
    }

    #[test]
    fn wraps_past_2_pow_32() {
        let mut r = Reassembly::default();
        r.syn(u32::MAX - 1);
        let mut got = Vec::new();
        let mut d = 0;
        let l = Limits::default();
        r.segment(u32::MAX, b"ab", 2, false, 0, &l, &mut d, |c| {
            if let Chunk::Data(x, _) = c {
                got.extend_from_slice(x)
            }
        });
        r.segment(1, b"cd", 2, false, 0, &l, &mut d, |c| {
            if let Chunk::Data(x, _) = c {
                got.extend_from_slice(x)
            }
        });
        assert_eq!(got, b"abcd");
    }
}
