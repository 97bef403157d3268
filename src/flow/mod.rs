//! Connections: identity, TCP state (handshake, retransmissions, resets, gaps) and the
//! worker-owned flow table. Everything here runs in packet time.

mod key;
mod seq;
mod table;

pub use key::{ip_text, Endpoint, FlowKey, Side};
pub use seq::{SegmentKind, SeqTracker};
pub use table::FlowTable;

use crate::decode::tcp_flags::{ACK, FIN, RST, SYN};
use crate::decode::Transport;

/// Per-direction counters, indexed by [`Side`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// One connection (TCP) or flow (UDP) as a worker tracks it.
#[derive(Debug)]
pub struct Flow {
    pub key: FlowKey,
    pub vantage: u16,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The side that opened the connection, once known (SYN, SYN-ACK, first UDP datagram).
    pub client: Option<Side>,
    pub tcp: bool,
    pub syn_seen: bool,
    pub synack_seen: bool,
    pub established: bool,
    pub rst_seen: bool,
    pub fin: [bool; 2],
    pub isn: Option<u32>,
    pub last_syn_ts: i64,
    pub rtt_ns: Option<i64>,
    pub dir: [DirCounters; 2],
    pub seq: [SeqTracker; 2],
    pub max_ack: [Option<u32>; 2],
    pub window_zero: [bool; 2],
    pub data_seen: [bool; 2],
    pub retransmissions: u64,
    /// L7 state, created with the first payload (None when L7 is off or no payload yet).
    pub l7: Option<Box<crate::l7::L7Conn>>,
    /// Set when the L7 state was finished early (the connection closed): its protocol and
    /// L7-decided server side; its tallies are already in the edge sums.
    pub l7_done: Option<(&'static str, Option<Side>)>,
    /// Live intervals: what earlier snapshots already reported (None offline).
    pub reported: Option<Box<crate::report::Reported>>,
    /// Load-balancer stitching of this (real-server) leg, when there is any.
    pub lb: Option<Box<crate::lvs::Stitch>>,
    /// Where the aggregate of this connection's edge was when its L7 state was settled: a
    /// hint to prefetch it before the connection's counters go there too, never read
    /// through (0: none).
    pub edge_hint: usize,
}

impl Flow {
    pub fn new(key: FlowKey, vantage: u16, ts: i64, tcp: bool) -> Flow {
        Flow {
            key,
            vantage,
            first_ts: ts,
            last_ts: ts,
            client: None,
            tcp,
            syn_seen: false,
            synack_seen: false,
            established: false,
            rst_seen: false,
            fin: [false; 2],
            isn: None,
            last_syn_ts: 0,
            rtt_ns: None,
            dir: [DirCounters::default(); 2],
            seq: [SeqTracker::default(), SeqTracker::default()],
            max_ack: [None; 2],
            window_zero: [false; 2],
            data_seen: [false; 2],
            retransmissions: 0,
            l7: None,
            l7_done: None,
            reported: None,
            lb: None,
            edge_hint: 0,
        }
    }

    pub fn closed(&self) -> bool {
        self.rst_seen || (self.fin[0] && self.fin[1])
    }

    /// The [`Flow::timeout_class`] of a TCP connection whose close is complete
    /// ([`Flow::close_complete`]): the first a full flow table evicts.
    pub const CLOSE_COMPLETE_CLASS: u8 = 4;
    /// The [`Flow::timeout_class`] of a UDP flow whose L7 state was settled while it was
    /// idle (its tally is in its edge; see the worker's `release_idle_udp`): the next a full
    /// flow table evicts.
    pub const UDP_SETTLED_CLASS: u8 = 5;

    /// Both sides sent a FIN and each FIN was acknowledged: the close is complete and only
    /// a retransmission can still come (TCP's TIME_WAIT).
    pub fn close_complete(&self) -> bool {
        self.fin[0]
            && self.fin[1]
            && [(0, 1), (1, 0)]
                .iter()
                .all(|&(s, o)| match (self.seq[s].next(), self.max_ack[o]) {
                    (Some(end), Some(ack)) => !seq::seq_lt(ack, end),
                    _ => false,
                })
    }

    /// Which idle timeout applies now: 0 UDP, 1 closed, 2 attempt, 3 established, 4 closed
    /// with both FINs acknowledged (the closed linger too), 5 UDP with its L7 state settled
    /// (the UDP timeout too). The flow table keeps one expiry list per class, so every list
    /// expires in the order it is linked (see `table`), and eviction finds a completed close
    /// or a settled UDP flow at the old end of its own list.
    pub fn timeout_class(&self) -> u8 {
        if !self.tcp {
            if self.l7.is_none() && self.l7_done.is_some() {
                Self::UDP_SETTLED_CLASS
            } else {
                0
            }
        } else if self.closed() {
            if self.close_complete() {
                Self::CLOSE_COMPLETE_CLASS
            } else {
                1
            }
        } else if !self.established {
            2
        } else {
            3
        }
    }

    /// True if a packet at `ts` can no longer belong to this flow (idle too long for its
    /// state). Checked on arrival, so results do not depend on when tables are swept.
    pub fn expired(&self, ts: i64, limits: &crate::limits::Limits) -> bool {
        let idle = ts.saturating_sub(self.last_ts);
        let timeout = match self.timeout_class() {
            0 | Self::UDP_SETTLED_CLASS => limits.udp_timeout_ns,
            1 | Self::CLOSE_COMPLETE_CLASS => limits.tcp_closed_linger_ns,
            2 => limits.tcp_attempt_timeout_ns,
            _ => limits.tcp_idle_timeout_ns,
        };
        idle > timeout
    }

    /// True if this TCP packet opens a new connection on the same 5-tuple: a SYN with
    /// another initial sequence number (source-port reuse, or a fresh attempt), or a SYN
    /// after a connection that was already open when the capture began. A SYN arriving
    /// after its own SYN-ACK (reordered capture) joins the flow.
    pub fn is_new_connection(&self, t: &Transport) -> bool {
        if !self.tcp || t.tcp.flags & (SYN | ACK) != SYN {
            return false;
        }
        match self.isn {
            Some(isn) => isn != t.tcp.seq,
            None => self.established || self.closed() || self.data_seen[0] || self.data_seen[1],
        }
    }

    /// Update TCP state with one packet from `side`. Returns what the payload was.
    pub fn update_tcp(
        &mut self,
        side: Side,
        t: &Transport,
        captured_payload: usize,
        ts: i64,
    ) -> SegmentKind {
        let s = side.index();
        let o = side.other().index();
        let flags = t.tcp.flags;
        let seq = t.tcp.seq;
        self.last_ts = ts;
        self.dir[s].packets += u64::from(t.fragments);
        self.dir[s].bytes += u64::from(t.ip_bytes);
        if flags & RST != 0 {
            self.rst_seen = true;
            return SegmentKind::InOrder;
        }
        if flags & SYN != 0 {
            if flags & ACK == 0 {
                if self.isn.is_none() {
                    self.isn = Some(seq);
                    self.client = Some(side);
                    self.seq[s].syn(seq);
                } else {
                    self.retransmissions += 1;
                }
                self.syn_seen = true;
                self.last_syn_ts = ts;
            } else {
                if self.client.is_none() {
                    self.client = Some(side.other());
                }
                if self.synack_seen {
                    self.retransmissions += 1;
                } else {
                    self.synack_seen = true;
                    self.seq[s].syn(seq);
                }
            }
            return SegmentKind::InOrder;
        }
        if flags & ACK != 0 {
            let ack = t.tcp.ack;
            self.max_ack[s] = Some(match self.max_ack[s] {
                Some(m) if seq::seq_lt(ack, m) => m,
                _ => ack,
            });
            if !self.established && self.synack_seen && self.client == Some(side) {
                self.established = true;
                if self.syn_seen {
                    self.rtt_ns = Some(ts.saturating_sub(self.last_syn_ts));
                }
            }
        }
        let fin = u32::from(flags & FIN != 0);
        let len = t.payload_wire_len;
        let kind = self.seq[s].segment(seq, len.saturating_add(fin), self.window_zero[o]);
        self.window_zero[s] = t.tcp.window == 0;
        if kind == SegmentKind::Retransmission {
            self.retransmissions += 1;
        }
        if len > 0 {
            self.data_seen[s] = true;
            let cut = (len as usize).saturating_sub(captured_payload);
            if cut > 0 && kind != SegmentKind::Retransmission {
                // Bytes the snaplen cut off were never seen either.
                self.seq[s].missed += cut as u64;
            }
        }
        if fin == 1 {
            self.fin[s] = true;
        }
        if !self.established && self.data_seen[0] && self.data_seen[1] {
            // Already open when the capture began (or the handshake's ACK was lost).
            self.established = true;
        }
        kind
    }

    pub fn update_udp(&mut self, side: Side, t: &Transport, ts: i64) {
        let s = side.index();
        self.last_ts = ts;
        if self.client.is_none() {
            self.client = Some(side);
        }
        self.established = true;
        self.dir[s].packets += u64::from(t.fragments);
        self.dir[s].bytes += u64::from(t.ip_bytes);
        if t.payload_wire_len > 0 {
            self.data_seen[s] = true;
        }
    }

    /// Close the books: open holes and acknowledged-but-unseen data become missed bytes.
    pub fn finish(&mut self) {
        if self.tcp {
            let (a, b) = (self.max_ack[1], self.max_ack[0]);
            self.seq[0].finish(a);
            self.seq[1].finish(b);
        }
    }

    pub fn missed_bytes(&self) -> u64 {
        self.seq[0].missed + self.seq[1].missed
    }

    /// Attempts whose handshake never completed (no SYN-ACK, or answered by RST).
    pub fn failed(&self) -> bool {
        self.tcp && self.syn_seen && !self.established
    }
}
