//! Every bound wiremap enforces, in one place. Defaults are sized for a busy host on a
//! 2-core / few-GiB budget; the ones users tune have command-line flags. Every hit is
//! counted in the topology's `limits` object, never silent.

use serde::Serialize;

/// The bounds. Flags fill in the tunable ones; the rest keep their defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections tracked at once, across all workers (the oldest idle one is evicted).
    pub max_flows: usize,
    /// Out-of-order bytes buffered per direction of a TCP connection.
    pub max_reassembly_bytes_per_direction: usize,
    /// Out-of-order bytes buffered across all connections of one worker.
    pub max_reassembly_bytes_total: usize,
    /// Bytes of partial L7 messages (heads, frames, bytes held during detection) buffered
    /// across all connections of one worker; each connection is also bounded by
    /// `parser.max_buffered` per direction.
    pub max_message_bytes_total: usize,
    /// Requests waiting for a response per connection.
    pub max_pending_requests: usize,
    /// Bytes of pending requests (queue entries and their texts) across all connections of
    /// one worker; past it a connection may not queue more than it holds (a new request
    /// displaces its oldest, counted in `pending_requests_dropped`).
    pub max_pending_bytes_total: usize,
    /// Edges in the document; past it, edges with only failed attempts are folded into the
    /// service node's `failed_connections` (and past that many such services in a worker,
    /// into the port's "other services" node).
    pub max_edges: usize,
    /// Clients with an edge of their own per service, in each worker (and live interval);
    /// past it, a new client's connections are summed on the service's "other clients"
    /// edge (client `0.0.0.0`, or `::` for IPv6).
    pub max_clients_per_service: usize,
    /// Edges a worker holds (per live interval); past it, a new edge's connections are
    /// summed on its port's "other traffic" edge (`0.0.0.0` to `0.0.0.0:PORT`).
    pub max_edges_per_worker: usize,
    /// IP datagrams being reassembled from fragments at once.
    pub max_fragment_datagrams: usize,
    /// Largest capture record accepted (bytes); bigger ones mean a corrupt file.
    pub max_record_bytes: usize,
    /// Parser bounds (head sizes, DNS names, RESP nesting, MySQL packets).
    pub parser: protocols::Limits,
    /// Idle timeouts in packet time (nanoseconds).
    pub udp_timeout_ns: i64,
    pub tcp_idle_timeout_ns: i64,
    pub tcp_closed_linger_ns: i64,
    pub tcp_attempt_timeout_ns: i64,
    pub fragment_timeout_ns: i64,
    /// Load-balancer leg evidence (SYNs, first request bytes, TOA sightings) held by the
    /// reader at once, per kind; entries also expire after `lb_window_ns`.
    pub lb_max_entries: usize,
    /// How far apart in packet time the two legs of one load-balanced connection may be
    /// seen: the director's forwarding delay plus the clock skew between captures.
    pub lb_window_ns: i64,
    /// Distinct real clients listed per stitched edge (`nat.clients`).
    pub lb_max_clients: usize,
    /// Live fanout: bytes (payloads and packet records) a worker holds to put its own
    /// ring's packets and the ones forwarded to it back in packet-time order.
    pub max_reorder_bytes: usize,
}

const SEC: i64 = 1_000_000_000;

/// Resources counted per tally (a connection's, an edge's): past it the least requested
/// gives way to the new one (`report::TopResources`), counted in
/// `LimitHits::resources_displaced`. 64 holds an edge's top 10 with room to spare for
/// the skew real traffic has, at 4 KiB for a full list (plus resources over 30 bytes).
pub const RESOURCES_PER_TALLY: usize = 64;

/// Distinct response codes counted per tally: the smallest are kept, the rest are summed
/// under `"(other)"` and counted in `LimitHits::codes_folded`. Real services answer with a
/// few dozen codes at most; a Redis error's first word is whatever the server sends.
pub const CODES_PER_TALLY: usize = 64;

/// Connections without a seen opener a worker holds for the join stage, which orients them
/// with every worker's evidence (see the README's "Who is the server"). Past it, the worker
/// orients them itself with its own evidence (counted in `LimitHits::undetermined_oriented`):
/// a flood of spoofed mid-stream packets must not grow this list without bound.
pub const UNDETERMINED_PER_WORKER: usize = 16_384;

/// Endpoints seen answering a SYN, kept per worker to orient connections whose opener was
/// not seen. A host scanning the network collects one per open port it finds; past this,
/// new ones are not kept (counted in `LimitHits::syn_answers_dropped`).
pub const SYN_SERVERS_PER_WORKER: usize = 262_144;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 1_000_000,
            max_reassembly_bytes_per_direction: 256 * 1024,
            max_reassembly_bytes_total: 64 * 1024 * 1024,
            max_message_bytes_total: 64 * 1024 * 1024,
            max_pending_requests: 1024,
            max_pending_bytes_total: 64 * 1024 * 1024,
            max_edges: 10_000,
            max_clients_per_service: 10_000,
            max_edges_per_worker: 100_000,
            max_fragment_datagrams: 4096,
            max_record_bytes: 16 * 1024 * 1024,
            parser: protocols::Limits::default(),
            udp_timeout_ns: 60 * SEC,
            tcp_idle_timeout_ns: 300 * SEC,
            tcp_closed_linger_ns: 10 * SEC,
            tcp_attempt_timeout_ns: 120 * SEC,
            fragment_timeout_ns: 30 * SEC,
            lb_max_entries: 32_768,
            lb_window_ns: 2 * SEC,
            lb_max_clients: 256,
            max_reorder_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How often each limit was hit. Summed across workers; written as the document's `limits`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LimitHits {
    /// Connections evicted because the flow table was full.
    pub flows_evicted: u64,
    /// Out-of-order segments dropped because a reassembly buffer was full.
    pub reassembly_dropped_segments: u64,
    /// Responses that found no pending request slot, or requests dropped from a full queue.
    pub pending_requests_dropped: u64,
    /// Edges with only failed attempts folded into their service node.
    pub edges_folded: u64,
    /// Fragments dropped: table full, datagram too big, or timed out incomplete.
    pub fragments_dropped: u64,
    /// Parser bounds hit (over-long heads, names, nesting, packets); the stream resynchronised.
    pub parser_limits: u64,
    /// Partial messages given up because the worker's total for them was reached; the
    /// connection resynchronised.
    pub message_buffers_dropped: u64,
    /// Load-balancer leg evidence not kept because the index was full.
    pub lb_index_full: u64,
    /// Load-balancer stitches that came too late: the real-server leg had already finished
    /// (or settled its requests), so it stayed on its natural edge.
    pub lb_stitch_late: u64,
    /// Real clients not listed on a stitched edge (past `lb_max_clients`).
    pub lb_clients_dropped: u64,
    /// Live fanout: packets processed before every ring had read past their time, because
    /// the worker's reorder buffer was full (they may be out of order).
    pub reorder_forced: u64,
    /// Resources that gave their place in a full per-connection or per-edge list to another
    /// one ([`RESOURCES_PER_TALLY`]); from then on that edge's `top_resources` counts are
    /// lower bounds (requests seen since each entry came in).
    pub resources_displaced: u64,
    /// Responses counted under the code `"(other)"`: their edge had already seen
    /// [`CODES_PER_TALLY`] smaller codes.
    pub codes_folded: u64,
    /// Connections (and UDP flows) summed on their service's "other clients" edge: the
    /// service already had `max_clients_per_service` clients with edges of their own.
    pub clients_folded: u64,
    /// Connections without a seen opener oriented by their worker alone, because its list
    /// for the join stage was full ([`UNDETERMINED_PER_WORKER`]).
    pub undetermined_oriented: u64,
    /// Connections (and UDP flows) summed on their port's "other traffic" edge: their
    /// worker already held `max_edges_per_worker` edges.
    pub traffic_folded: u64,
    /// Failed attempts counted on a port's "other services" node (`0.0.0.0:PORT`, or
    /// `[::]:PORT`): the worker already held `max_edges` services with folded attempts.
    pub services_folded: u64,
    /// Endpoints seen answering a SYN that were not kept ([`SYN_SERVERS_PER_WORKER`]).
    pub syn_answers_dropped: u64,
}

impl LimitHits {
    pub fn add(&mut self, o: &LimitHits) {
        self.flows_evicted += o.flows_evicted;
        self.reassembly_dropped_segments += o.reassembly_dropped_segments;
        self.pending_requests_dropped += o.pending_requests_dropped;
        self.edges_folded += o.edges_folded;
        self.fragments_dropped += o.fragments_dropped;
        self.parser_limits += o.parser_limits;
        self.message_buffers_dropped += o.message_buffers_dropped;
        self.lb_index_full += o.lb_index_full;
        self.lb_stitch_late += o.lb_stitch_late;
        self.lb_clients_dropped += o.lb_clients_dropped;
        self.reorder_forced += o.reorder_forced;
        self.resources_displaced += o.resources_displaced;
        self.codes_folded += o.codes_folded;
        self.clients_folded += o.clients_folded;
        self.undetermined_oriented += o.undetermined_oriented;
        self.traffic_folded += o.traffic_folded;
        self.services_folded += o.services_folded;
        self.syn_answers_dropped += o.syn_answers_dropped;
    }
}
