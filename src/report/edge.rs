//! Per-edge aggregation: what the workers add up and the join stage merges.

use std::collections::HashMap;
use std::net::IpAddr;

use protocols::event::{Code, Resource};

use super::digest::Digest;
use crate::flow::Endpoint;

/// An edge: (client address, service, transport, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    pub client: IpAddr,
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
    pub codes: HashMap<Code, u64, ahash::RandomState>,
    /// Request-to-response latency, microseconds.
    pub latency_us: Digest,
    /// Per resource: requests and errors.
    pub resources: HashMap<Resource, (u64, u64), ahash::RandomState>,
    /// Resources not tracked because the per-edge resource limit was reached.
    pub resources_dropped: u64,
}

/// Most distinct resources tracked per edge (top-10 is taken from these).
pub const MAX_RESOURCES: usize = 4096;

impl L7Tally {
    pub fn merge(&mut self, o: &L7Tally) {
        self.requests += o.requests;
        self.responses += o.responses;
        self.errors += o.errors;
        for (c, n) in &o.codes {
            *self.codes.entry(*c).or_default() += n;
        }
        self.latency_us.merge(&o.latency_us);
        for (r, (n, e)) in &o.resources {
            self.add_resource(r, *n, *e);
        }
        self.resources_dropped += o.resources_dropped;
    }

    pub fn add_resource(&mut self, r: &Resource, requests: u64, errors: u64) {
        if let Some(v) = self.resources.get_mut(r) {
            v.0 += requests;
            v.1 += errors;
        } else if self.resources.len() < MAX_RESOURCES {
            self.resources.insert(*r, (requests, errors));
        } else {
            self.resources_dropped += requests;
        }
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
    }

    /// True if the edge carries nothing but failed connection attempts.
    pub fn only_failed(&self) -> bool {
        self.connections == 0 && self.l7.requests == 0 && self.failed_connections > 0
    }
}
