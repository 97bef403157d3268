//! Batches: packets cross threads hundreds at a time, and the buffers come back to be
//! reused, so the steady state allocates nothing.

use crate::decode::Transport;

/// A decoded packet inside a batch; its payload lives in the batch's byte buffer.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta {
    pub t: Transport,
    pub ts_ns: i64,
    pub vantage: u16,
    /// Position of the packet in the merged input (for error reports).
    pub order: u64,
    pub payload_start: u32,
    pub payload_len: u32,
}

#[derive(Default)]
pub struct Batch {
    pub packets: Vec<PacketMeta>,
    pub bytes: Vec<u8>,
    /// Live: packet time has reached this (interval ends up to it can be closed).
    pub mark: Option<i64>,
    /// Load-balancer stitches, each applied before the packet at its index (so after every
    /// packet the reader dispatched before it).
    pub tags: Vec<(u32, crate::lvs::Tag)>,
}

pub const BATCH_PACKETS: usize = 512;
pub const BATCH_BYTES: usize = 512 * 1024;

impl Batch {
    pub fn with_capacity() -> Batch {
        Batch {
            packets: Vec::with_capacity(BATCH_PACKETS),
            bytes: Vec::with_capacity(BATCH_BYTES),
            mark: None,
            tags: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes.clear();
        self.mark = None;
        // One huge payload (an IPv6 jumbogram, up to the 16 MiB record bound) must not keep
        // every batch in circulation that large: a run of them would pin hundreds of MiB.
        if self.bytes.capacity() > 2 * BATCH_BYTES {
            self.bytes = Vec::with_capacity(BATCH_BYTES);
        }
        self.tags.clear();
    }

    pub fn is_full(&self) -> bool {
        self.packets.len() >= BATCH_PACKETS || self.bytes.len() >= BATCH_BYTES
    }

    pub fn push(&mut self, t: Transport, ts_ns: i64, vantage: u16, order: u64, payload: &[u8]) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(payload);
        self.packets.push(PacketMeta {
            t,
            ts_ns,
            vantage,
            order,
            payload_start: start,
            payload_len: payload.len() as u32,
        });
    }

    pub fn push_tag(&mut self, tag: crate::lvs::Tag) {
        self.tags.push((self.packets.len() as u32, tag));
    }

    pub fn payload(&self, m: &PacketMeta) -> &[u8] {
        let s = m.payload_start as usize;
        self.bytes.get(s..s + m.payload_len as usize).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_payload_does_not_keep_its_batch_huge() {
        let mut b = Batch::with_capacity();
        let t = Transport {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            sport: 1,
            dport: 2,
            proto: 17,
            vlan: 0,
            ip_bytes: 0,
            fragments: 1,
            truncated: false,
            tcp: Default::default(),
            payload_wire_len: 4 << 20,
        };
        b.push(t, 0, 0, 0, &vec![0u8; 4 << 20]);
        assert!(b.is_full());
        b.clear();
        assert!(b.bytes.capacity() <= 2 * BATCH_BYTES);
        assert_eq!(b.packets.len(), 0);
    }
}
