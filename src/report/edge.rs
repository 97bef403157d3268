//! Per-edge aggregation: what the workers add up and the join stage merges.

mod counts;
mod top;

use std::collections::BTreeSet;
use std::net::IpAddr;

use protocols::event::{Code, Resource};

use super::digest::Digest;
use crate::flow::Endpoint;
pub use counts::Counts;
pub use top::TopResources;

/// An edge: (client address, service, transport, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    pub client: IpAddr,
    /// Set when the client is a load balancer's VIP (`VIP:vport → RS:rport`).
    pub vip_port: Option<u16>,
    pub server: Endpoint,
    pub udp: bool,
    pub protocol: &'static str,
}

/// L7 results of one connection (or many, once merged).
#[derive(Clone, Debug, Default)]
pub struct L7Tally {
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    pub codes: Counts<Code, u64>,
    /// Request-to-response latency, microseconds.
    pub latency_us: Digest,
    /// Per resource: requests and errors (bounded; see [`TopResources`]).
    pub resources: TopResources,
}

impl L7Tally {
    pub fn merge(&mut self, o: &L7Tally) {
        self.requests += o.requests;
        self.responses += o.responses;
        self.errors += o.errors;
        self.codes.merge(&o.codes);
        self.latency_us.merge(&o.latency_us);
        self.resources.merge(&o.resources);
    }

    /// Back to empty, keeping the vectors' capacity (a connection's tally after it went
    /// to its edge).
    pub fn clear(&mut self) {
        self.requests = 0;
        self.responses = 0;
        self.errors = 0;
        self.codes.clear();
        self.latency_us.clear();
        self.resources.clear();
    }

    pub fn add_resource(&mut self, r: &Resource, requests: u64, errors: u64) {
        self.resources.add(r, requests, errors);
    }
}

/// Everything summed for one edge.
#[derive(Clone, Debug, Default)]
pub struct EdgeAgg {
    pub connections: u64,
    pub failed_connections: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub retransmissions: u64,
    pub resets: u64,
    pub missed_bytes: u64,
    /// Handshake RTT per connection, microseconds.
    pub rtt_us: Digest,
    pub l7: L7Tally,
    /// Load-balancer stitching (edges created or re-attributed by it).
    pub nat: Option<Box<NatAgg>>,
}

/// What stitching says about an edge: modes, evidence, real clients, director addresses.
#[derive(Clone, Debug, Default)]
pub struct NatAgg {
    /// Bit 0: NAT, bit 1: FULLNAT.
    pub modes: u8,
    pub evidence: u8,
    pub clients: BTreeSet<IpAddr>,
    pub lb_local: BTreeSet<IpAddr>,
    /// Most addresses listed in each set.
    pub cap: usize,
    /// Addresses not listed because a set was full.
    pub dropped: u64,
}

impl NatAgg {
    pub fn add_client(&mut self, ip: IpAddr) {
        if self.clients.len() < self.cap || self.clients.contains(&ip) {
            self.clients.insert(ip);
        } else {
            self.dropped += 1;
        }
    }

    pub fn add_local(&mut self, ip: IpAddr) {
        if self.lb_local.len() < self.cap || self.lb_local.contains(&ip) {
            self.lb_local.insert(ip);
        } else {
            self.dropped += 1;
        }
    }

    pub fn merge(&mut self, o: &NatAgg) {
        self.modes |= o.modes;
        self.evidence |= o.evidence;
        self.cap = self.cap.max(o.cap);
        self.dropped += o.dropped;
        for c in &o.clients {
            self.add_client(*c);
        }
        for l in &o.lb_local {
            self.add_local(*l);
        }
    }
}

impl EdgeAgg {
    pub fn merge(&mut self, o: &EdgeAgg) {
        self.connections += o.connections;
        self.failed_connections += o.failed_connections;
        for i in 0..2 {
            self.packets[i] += o.packets[i];
            self.bytes[i] += o.bytes[i];
        }
        self.retransmissions += o.retransmissions;
        self.resets += o.resets;
        self.missed_bytes += o.missed_bytes;
        self.rtt_us.merge(&o.rtt_us);
        self.l7.merge(&o.l7);
        if let Some(n) = &o.nat {
            match &mut self.nat {
                Some(m) => m.merge(n),
                None => self.nat = Some(n.clone()),
            }
        }
    }

    /// The memory reading the whole aggregate touches beyond the aggregate itself: the
    /// tally's vectors and the digests' values, each up to its first KiB. For a prefetch:
    /// `f` gets each place and length; nothing is read.
    pub fn side_memory(&self, mut f: impl FnMut(*const u8, usize)) {
        self.l7_parts(1024, &mut f);
        first_bytes(self.rtt_us.memory(), 1024, &mut f);
    }

    /// The memory merging a connection's L7 tally in touches beyond the aggregate: the
    /// resource list, the codes and the latency values or buckets, each up to its first
    /// 2 KiB (a list of 32 resources, a sketch of 256 buckets: the merge's binary search
    /// may land anywhere in them). For a prefetch, as [`EdgeAgg::side_memory`].
    pub fn l7_memory(&self, mut f: impl FnMut(*const u8, usize)) {
        self.l7_parts(2048, &mut f);
    }

    fn l7_parts(&self, max: usize, f: &mut impl FnMut(*const u8, usize)) {
        let l7 = &self.l7;
        for part in [
            l7.resources.memory(),
            l7.codes.memory(),
            l7.latency_us.memory(),
        ] {
            first_bytes(part, max, f);
        }
    }

    /// True if the edge carries nothing but failed connection attempts.
    pub fn only_failed(&self) -> bool {
        self.connections == 0 && self.l7.requests == 0 && self.failed_connections > 0
    }
}

/// Up to `max` bytes of a `(place, length)` span, if it is not empty, to `f`.
fn first_bytes((p, len): (*const u8, usize), max: usize, f: &mut impl FnMut(*const u8, usize)) {
    if len > 0 {
        f(p, len.min(max));
    }
}
