//! Packets of one file in time order, within a bounded window.
//!
//! Captures are not always written in time order: dumpcap writes each interface of a
//! pcapng in blocks (seen here: frames up to 190 ms behind the previous one), and
//! multi-queue NICs reorder slightly. A small window puts them back in order, so "the
//! vantage point that saw a connection first" means first in time. The window is bounded in
//! packets, bytes and packet time; a packet displaced further than that is processed late,
//! never dropped. Buffers are recycled; classic pcap packets are not copied at all, they
//! stay in the file's chunk until released.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::{CaptureFile, InputError, OwnedPacket, ReadOutcome, Span, Vantages};
use crate::pipeline::PacketRef;

/// Most packets held to reorder one file.
pub const WINDOW_PACKETS: usize = 4_096;
/// Most bytes held to reorder one file.
pub const WINDOW_BYTES: usize = 8 << 20;
/// How far (packet time) reading runs ahead of the oldest held packet.
pub const WINDOW_NS: i64 = 1_000_000_000;

/// How many packets ahead of the one released the window starts loading into the cache.
const PREFETCH_AHEAD: usize = 4;
/// Most bytes of one packet loaded ahead: its headers and a typical payload (measured: more
/// prefetches cost more than they save; the hardware prefetcher follows a long copy).
const PREFETCH_BYTES: usize = 512;

/// Ask the CPU to load `data`'s first bytes into the cache (a hint: no effect on results).
#[inline]
fn prefetch(data: &[u8]) {
    crate::prefetch::span(data.as_ptr(), data.len().min(PREFETCH_BYTES));
}

/// A held packet: its bytes in `packet.data`, or in the file's chunk at `span`.
#[derive(Default)]
struct Slot {
    packet: OwnedPacket,
    span: Option<Span>,
}

impl Slot {
    fn len(&self) -> usize {
        match self.span {
            Some(s) => s.len as usize,
            None => self.packet.data.len(),
        }
    }
}

pub struct OrderedFile {
    pub file: CaptureFile,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Packets that arrived in time order (the common case): a FIFO, no heap work.
    in_order: VecDeque<(i64, u64, usize)>,
    /// Packets older than one already read: a heap.
    late: BinaryHeap<Reverse<(i64, u64, usize)>>,
    seq: u64,
    newest: i64,
    held_bytes: usize,
    done: bool,
}

impl OrderedFile {
    pub fn new(file: CaptureFile) -> Self {
        OrderedFile {
            file,
            slots: Vec::new(),
            free: Vec::new(),
            in_order: VecDeque::new(),
            late: BinaryHeap::new(),
            seq: 0,
            newest: i64::MIN,
            held_bytes: 0,
            done: false,
        }
    }

    fn held(&self) -> usize {
        self.in_order.len() + self.late.len()
    }

    /// The oldest held packet: (ts, arrival, slot).
    fn oldest(&self) -> Option<(i64, u64, usize)> {
        match (self.in_order.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if b < a { *b } else { *a }),
            (Some(a), None) => Some(*a),
            (None, Some(Reverse(b))) => Some(*b),
            (None, None) => None,
        }
    }

    fn ready(&self) -> bool {
        let Some((oldest, _, _)) = self.oldest() else {
            return self.done;
        };
        self.done
            || self.held() >= WINDOW_PACKETS
            || self.held_bytes >= WINDOW_BYTES
            || self.newest.saturating_sub(oldest) >= WINDOW_NS
    }

    /// Read until the oldest held packet can be released. Returns a cut-file warning
    /// offset when the file ends mid-record.
    pub fn fill(&mut self, vantages: &mut Vantages) -> Result<Option<u64>, InputError> {
        let mut cut = None;
        while !self.ready() {
            let slot = match self.free.pop() {
                Some(s) if s < self.slots.len() => s,
                _ => {
                    self.slots.push(Slot::default());
                    self.slots.len().saturating_sub(1)
                }
            };
            let Some(buf) = self.slots.get_mut(slot) else {
                break; // cannot happen: the slot was just checked or pushed
            };
            match self
                .file
                .next_packet(vantages, &mut buf.packet, &mut buf.span)
            {
                Ok(ReadOutcome::Packet) => {
                    let p = &buf.packet;
                    let entry = (p.ts_ns, self.seq, slot);
                    if p.ts_ns >= self.newest {
                        self.in_order.push_back(entry);
                    } else {
                        self.late.push(Reverse(entry));
                    }
                    self.newest = self.newest.max(p.ts_ns);
                    self.held_bytes += buf.len();
                    self.seq += 1;
                }
                Ok(ReadOutcome::End) => {
                    self.free.push(slot);
                    self.done = true;
                }
                Ok(ReadOutcome::Cut { offset }) => {
                    self.free.push(slot);
                    self.done = true;
                    cut = Some(offset);
                }
                Err(e) => {
                    self.free.push(slot);
                    self.done = true;
                    return Err(e);
                }
            }
        }
        Ok(cut)
    }

    /// The time of the next packet to release.
    pub fn peek_ts(&self) -> Option<i64> {
        self.oldest().map(|(ts, _, _)| ts)
    }

    /// Take the oldest packet; give its slot back with [`OrderedFile::release`].
    pub fn pop(&mut self) -> Option<usize> {
        let from_late = match (self.in_order.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => b < a,
            (None, Some(_)) => true,
            _ => false,
        };
        let slot = if from_late {
            self.late.pop()?.0 .2
        } else {
            self.in_order.pop_front()?.2
        };
        // The packet released PREFETCH_AHEAD pops from now was written a window ago and has
        // left the cache: start loading it now, so its decode and payload copy do not stall.
        if let Some(p) = self
            .in_order
            .get(PREFETCH_AHEAD - 1)
            .and_then(|&(_, _, s)| self.slots.get(s))
        {
            prefetch(self.bytes(p));
        }
        let len = self.slots.get(slot).map_or(0, Slot::len);
        self.held_bytes = self.held_bytes.saturating_sub(len);
        Some(slot)
    }

    fn bytes<'a>(&'a self, s: &'a Slot) -> &'a [u8] {
        match s.span {
            Some(span) => self.file.bytes(span),
            None => &s.packet.data,
        }
    }

    /// The packet in `slot` (a slot from [`OrderedFile::pop`]).
    pub fn packet(&self, slot: usize) -> Option<PacketRef<'_>> {
        let s = self.slots.get(slot)?;
        let p = &s.packet;
        Some(PacketRef {
            ts_ns: p.ts_ns,
            linktype: p.linktype,
            wire_len: p.wire_len,
            vantage: p.vantage,
            data: self.bytes(s),
        })
    }

    pub fn release(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if let Some(span) = s.span.take() {
            self.file.release(span);
        }
        // Keep buffers of ordinary size; let an occasional huge record's memory go.
        if s.packet.data.capacity() > 1 << 20 {
            s.packet.data = Vec::new();
        }
        self.free.push(slot);
    }
}
