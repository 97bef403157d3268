//! The join-and-merge stage: per-connection summaries and per-worker edge sums in, one
//! deterministic topology document out. Everything here is order-independent (sums,
//! mergeable digests) and sorted at the end, so `--threads` never changes the output.

mod digest;
pub mod doc;
mod edge;
mod join;
pub mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use digest::{Digest, Summary};
pub use edge::{EdgeAgg, EdgeKey, L7Tally, NatAgg};

use crate::flow::{Endpoint, Flow, FlowKey, Side};
use crate::limits::LimitHits;
use crate::source::{linktype_name, Vantages};
use doc::*;

/// A finished connection, reduced to what the topology needs.
#[derive(Debug)]
pub struct ConnSummary {
    pub key: FlowKey,
    /// Known opener (SYN, SYN-ACK, first UDP datagram).
    pub client: Option<Side>,
    /// The side the L7 parser recognised as responding, when the start was not seen.
    pub l7_server: Option<Side>,
    pub udp: bool,
    pub protocol: &'static str,
    pub established: bool,
    pub failed: bool,
    pub reset: bool,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub retransmissions: u64,
    pub missed_bytes: u64,
    pub rtt_us: Option<u64>,
    pub l7: L7Tally,
}

impl ConnSummary {
    pub fn from_flow(
        f: &Flow,
        protocol: &'static str,
        l7_server: Option<Side>,
        l7: L7Tally,
    ) -> ConnSummary {
        ConnSummary {
            key: f.key,
            client: f.client,
            l7_server,
            udp: !f.tcp,
            protocol,
            established: f.established,
            failed: f.failed(),
            reset: f.rst_seen,
            packets: [f.dir[0].packets, f.dir[1].packets],
            bytes: [f.dir[0].bytes, f.dir[1].bytes],
            retransmissions: f.retransmissions,
            missed_bytes: f.missed_bytes(),
            rtt_us: f.rtt_ns.map(|ns| (ns.max(0) / 1000) as u64),
            l7,
        }
    }

    /// The key of the edge this connection belongs to, given which side is the client.
    pub fn edge_key(&self, client: Side) -> EdgeKey {
        EdgeKey {
            client: self.key.endpoint(client).ip,
            vip_port: None,
            server: self.key.endpoint(client.other()),
            udp: self.udp,
            protocol: self.protocol,
        }
    }

    /// Add this connection to `agg`, its edge's aggregate: the same sums as merging the
    /// aggregate [`ConnSummary::into_edge`] makes, without making it (an aggregate is
    /// hundreds of bytes to fill, move and drop, for every connection that ends).
    pub fn add_to(&self, agg: &mut EdgeAgg, client: Side) {
        let c = client.index();
        let s = client.other().index();
        agg.connections += u64::from(self.established);
        agg.failed_connections += u64::from(self.failed);
        agg.packets[0] += self.packets[c];
        agg.packets[1] += self.packets[s];
        agg.bytes[0] += self.bytes[c];
        agg.bytes[1] += self.bytes[s];
        agg.retransmissions += self.retransmissions;
        agg.resets += u64::from(self.reset);
        agg.missed_bytes += self.missed_bytes;
        if let Some(rtt) = self.rtt_us {
            agg.rtt_us.record(rtt);
        }
        agg.l7.merge(&self.l7);
    }

    /// The edge this connection belongs to, given which side is the client, with the
    /// connection as its only one (the tally moved, not copied).
    pub fn into_edge(mut self, client: Side) -> (EdgeKey, EdgeAgg) {
        let mut agg = EdgeAgg {
            l7: std::mem::take(&mut self.l7),
            ..EdgeAgg::default()
        };
        self.add_to(&mut agg, client);
        (self.edge_key(client), agg)
    }
}

/// What live interval snapshots already reported of a connection still open: the next
/// snapshot (or its end) reports only the growth, so intervals sum to the whole run.
#[derive(Clone, Debug, Default)]
pub struct Reported {
    packets: [u64; 2],
    bytes: [u64; 2],
    retransmissions: u64,
    missed_bytes: u64,
    established: bool,
    reset: bool,
}

impl Reported {
    /// Turn `s` (the connection's totals so far) into its growth since the last call, and
    /// remember the totals. A connection counts in `connections` (and its RTT) once: in the
    /// first report after it was established.
    pub fn take_delta(&mut self, s: &mut ConnSummary) {
        for i in 0..2 {
            let (p, b) = (s.packets[i], s.bytes[i]);
            s.packets[i] = p.saturating_sub(self.packets[i]);
            s.bytes[i] = b.saturating_sub(self.bytes[i]);
            self.packets[i] = p;
            self.bytes[i] = b;
        }
        let (r, m) = (s.retransmissions, s.missed_bytes);
        s.retransmissions = r.saturating_sub(self.retransmissions);
        s.missed_bytes = m.saturating_sub(self.missed_bytes);
        self.retransmissions = r;
        self.missed_bytes = m;
        if self.established {
            s.established = false;
            s.rtt_us = None;
        } else if s.established {
            self.established = true;
        } else {
            s.rtt_us = None;
        }
        if self.reset {
            s.reset = false;
        } else {
            self.reset = s.reset;
        }
    }
}

impl ConnSummary {
    /// Nothing to report: no packet, no L7 event, no state change since the last report.
    pub fn is_empty(&self) -> bool {
        self.packets == [0, 0]
            && !self.established
            && !self.failed
            && !self.reset
            && self.l7.requests == 0
            && self.l7.responses == 0
            && self.l7.codes.is_empty()
    }
}

/// Maps a worker updates per connection (edges) or per SYN-ACK (servers): keyed with aHash
/// rather than SipHash, which showed in profiles; iteration order never reaches the output.
pub type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
pub type FastSet<K> = HashSet<K, ahash::RandomState>;

/// What one worker hands to the join stage.
#[derive(Debug, Default)]
pub struct WorkerResult {
    /// Boxed: an aggregate is hundreds of bytes, and inline ones made the map's buckets
    /// that large (every growth moved them all, and a lookup's key compare touched a line
    /// of its own per bucket); the join stage moves them as boxes too.
    pub edges: FastMap<EdgeKey, Box<EdgeAgg>>,
    /// Connections whose opener was not seen: oriented in the join stage.
    pub undetermined: Vec<ConnSummary>,
    /// Endpoints seen answering a SYN.
    pub syn_servers: FastSet<Endpoint>,
    /// Failed attempts folded into their service when the edge limit was reached.
    pub folded_failed: FastMap<Endpoint, u64>,
    /// Per service: clients with an edge of their own in `edges` (see
    /// `Limits::max_clients_per_service`).
    pub clients_per_service: FastMap<Endpoint, u32>,
    pub flows: u64,
    pub failed_connections: u64,
    pub other_vantage_packets: u64,
    pub limits: LimitHits,
    /// Requests of real-server legs whose client leg was seen too (counted there).
    pub lb_duplicate_requests: u64,
}

/// Counts made by the reader (before dispatch).
#[derive(Debug, Default, Clone)]
pub struct ReaderStats {
    pub packets: u64,
    pub bytes: u64,
    pub other: u64,
    pub undecodable: u64,
    pub truncated: u64,
    pub duplicates: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub fragments_dropped: u64,
    pub lb_index_full: u64,
}

/// Pick the server of a connection whose opener was not seen (the contract's rules):
/// an endpoint seen answering a SYN elsewhere; else what L7 recognised; else the port
/// below 1024; else the lower port.
pub(crate) fn server_side(c: &ConnSummary, syn_servers: &FastSet<Endpoint>) -> Side {
    let a = syn_servers.contains(&c.key.a);
    let b = syn_servers.contains(&c.key.b);
    if a != b {
        return if a { Side::A } else { Side::B };
    }
    if let Some(s) = c.l7_server {
        return s;
    }
    let (pa, pb) = (c.key.a.port, c.key.b.port);
    if (pa < 1024) != (pb < 1024) {
        return if pa < 1024 { Side::A } else { Side::B };
    }
    if pa != pb {
        return if pa < pb { Side::A } else { Side::B };
    }
    Side::A
}

pub struct DocumentInput<'a> {
    pub results: Vec<WorkerResult>,
    pub reader: ReaderStats,
    pub vantages: &'a Vantages,
    pub filter: Option<&'a str>,
    pub max_edges: usize,
    pub kind: &'static str,
    /// `--lvs-config`: names the backends of VIPs seen in edges.
    pub lb_config: Option<&'a crate::lvs::LvsConfig>,
}

fn client_id(k: &EdgeKey) -> String {
    match k.vip_port {
        Some(port) => Endpoint { ip: k.client, port }.id(),
        None => crate::flow::ip_text(k.client),
    }
}

fn doc_key(k: &EdgeKey) -> join::DocKey {
    (
        client_id(k),
        k.server.id(),
        if k.udp { "udp" } else { "tcp" },
        k.protocol,
    )
}

/// Load-balancer nodes named by edges: VIP node id -> (VIP, real-server ids), and a
/// director's local address -> real-server ids.
#[derive(Default)]
struct LbNodes {
    vips: BTreeMap<String, (Endpoint, BTreeSet<String>)>,
    locals: BTreeMap<String, BTreeSet<String>>,
}

impl LbNodes {
    /// What an edge says (merged or not: a merge only unites evidence).
    fn note(&mut self, k: &EdgeKey, a: &EdgeAgg) {
        if let Some(port) = k.vip_port {
            let vip = Endpoint { ip: k.client, port };
            self.vips
                .entry(vip.id())
                .or_insert_with(|| (vip, BTreeSet::new()))
                .1
                .insert(k.server.id());
        } else if a
            .nat
            .as_ref()
            .is_some_and(|n| n.evidence & crate::lvs::evidence::LB_LOCAL != 0)
        {
            self.locals
                .entry(k.client.to_string())
                .or_default()
                .insert(k.server.id());
        }
    }
}

/// The code under which responses past [`crate::limits::CODES_PER_TALLY`] distinct codes
/// are counted.
pub const OTHER_CODES: &str = "(other)";

/// Merge worker results into the document.
pub fn build_document(input: DocumentInput<'_>) -> Document {
    let DocumentInput {
        results,
        reader,
        vantages,
        filter,
        max_edges,
        kind,
        lb_config,
    } = input;
    let mut syn_servers = FastSet::default();
    for r in &results {
        syn_servers.extend(r.syn_servers.iter().copied());
    }
    let mut limits = LimitHits::default();
    let mut totals = Totals {
        packets: reader.packets,
        bytes: reader.bytes,
        other: reader.other,
        undecodable: reader.undecodable,
        truncated: reader.truncated,
        duplicates: reader.duplicates,
        ..Totals::default()
    };
    limits.fragments_dropped += reader.fragments_dropped;
    limits.lb_index_full += reader.lb_index_full;
    let mut lb_duplicates = 0u64;
    let mut folded: BTreeMap<Endpoint, u64> = BTreeMap::new();
    let mut per_worker = Vec::with_capacity(results.len());
    for r in results {
        totals.flows += r.flows;
        totals.failed_connections += r.failed_connections;
        totals.other_vantage_packets += r.other_vantage_packets;
        lb_duplicates += r.lb_duplicate_requests;
        limits.add(&r.limits);
        for (ep, n) in r.folded_failed {
            *folded.entry(ep).or_default() += n;
        }
        per_worker.push((r.edges, r.undetermined));
    }
    let parts = join::parts_for(per_worker.iter().map(|(e, _)| e.len()).sum());

    // Each worker's edges keyed by their ids and sorted, one thread per worker; connections
    // whose opener was not seen are oriented now that every worker's SYN answers are known.
    let lists = join::par_map(per_worker, parts, |(edges, undetermined)| {
        let undetermined = undetermined.into_iter().map(|c| {
            let client = c
                .client
                .unwrap_or_else(|| server_side(&c, &syn_servers).other());
            let (k, a) = c.into_edge(client);
            (k, Box::new(a))
        });
        // A worker's connections without an opener merge after its edges.
        join::sorted_by_key(edges.into_iter().chain(undetermined), doc_key)
    });
    let mut spent = join::Spent::default();
    let mut edges = join::merge_sorted(lists, &mut spent);

    // One walk over the merged aggregates, the ones ahead prefetched, for what the edge
    // limit needs and for the load balancers' nodes (VIP node id -> VIP and backends; a
    // director's local addresses likewise), noted before the limit folds any edge away.
    let mut lb = LbNodes::default();
    let mut only_failed = Vec::with_capacity(edges.len());
    join::walk_ahead(&edges, |e| {
        lb.note(&e.edge, &e.agg);
        only_failed.push(e.agg.only_failed());
    });
    let LbNodes { mut vips, locals } = lb;

    // The edge limit: edges with real traffic first; failed-only edges while room remains.
    let working = only_failed.iter().filter(|f| !**f).count();
    let mut room = max_edges.saturating_sub(working);
    let mut only_failed = only_failed.into_iter();
    edges.retain(|e| {
        if !only_failed.next().unwrap_or(false) {
            return true;
        }
        if room > 0 {
            room -= 1;
            return true;
        }
        *folded.entry(e.edge.server).or_default() += e.agg.failed_connections;
        limits.edges_folded += 1;
        false
    });

    // Nodes: every endpoint in an edge, once, sorted by id.
    let mut clients: BTreeSet<String> = BTreeSet::new();
    let mut services: BTreeMap<String, (Endpoint, BTreeSet<&'static str>, u64)> = BTreeMap::new();
    // Configured backends of every VIP that is a node (a client leg seen without the other).
    if let Some(cfg) = lb_config {
        for e in &edges {
            let ep = &e.edge.server;
            let backends = cfg.backends(ep);
            if !backends.is_empty() {
                let v = vips
                    .entry(e.key.1.clone())
                    .or_insert_with(|| (*ep, BTreeSet::new()));
                v.1.extend(backends.iter().map(Endpoint::id));
            }
        }
        for (ep, backends) in vips.values_mut() {
            backends.extend(cfg.backends(ep).iter().map(Endpoint::id));
        }
    }
    join::walk_ahead(&edges, |e| {
        totals.l7_requests += e.agg.l7.requests;
        limits.resources_displaced += e.agg.l7.resources.displaced;
        limits.codes_folded += e.agg.l7.codes.other;
        if let Some(n) = &e.agg.nat {
            limits.lb_clients_dropped += n.dropped;
        }
        let (client, server, _, proto) = &e.key;
        if let Some((ep, _)) = vips.get(client) {
            // A VIP as the client of its real servers: the node is the load balancer.
            let v = services
                .entry(client.clone())
                .or_insert((*ep, BTreeSet::new(), 0));
            v.1.insert(proto);
        } else if !clients.contains(client) {
            clients.insert(client.clone());
        }
        let v = match services.get_mut(server) {
            Some(v) => v,
            None => services
                .entry(server.clone())
                .or_insert((e.edge.server, BTreeSet::new(), 0)),
        };
        v.1.insert(proto);
        v.2 += e.agg.failed_connections;
    });
    for (ep, n) in &folded {
        let e = services.entry(ep.id()).or_insert((*ep, BTreeSet::new(), 0));
        e.2 += n;
    }
    let mut nodes: Vec<NodeDoc> = Vec::new();
    for c in clients {
        // A director's local address (`--lb-local`) is a load balancer, not a client.
        let backends = locals
            .get(&c)
            .map(|b| b.iter().cloned().collect::<Vec<_>>());
        nodes.push(NodeDoc {
            ip: c.clone(),
            id: c,
            port: None,
            role: if backends.is_some() {
                "load_balancer"
            } else {
                "client"
            },
            protocols: None,
            backends,
            failed_connections: None,
        });
    }
    for (id, (ep, protos, failed)) in services {
        // "unknown" is listed only when nothing better is known.
        let mut p: Vec<&'static str> = protos.iter().copied().filter(|p| *p != "unknown").collect();
        if p.is_empty() && protos.contains("unknown") {
            p.push("unknown");
        }
        let backends = vips
            .get(&id)
            .map(|(_, b)| b.iter().cloned().collect::<Vec<_>>());
        nodes.push(NodeDoc {
            id,
            ip: crate::flow::ip_text(ep.ip),
            port: Some(ep.port),
            role: if backends.is_some() {
                "load_balancer"
            } else {
                "service"
            },
            protocols: Some(p),
            backends,
            failed_connections: Some(failed),
        });
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));

    let docs = join::par_map_ahead(edges, parts, join::prefetch_ahead, |e| {
        let (client, server, transport, protocol) = e.key;
        (edge_doc(client, server, transport, protocol, &e.agg), e.agg)
    });
    let mut edge_docs = Vec::with_capacity(docs.len());
    spent.0.reserve(docs.len());
    for (d, agg) in docs {
        edge_docs.push(d);
        spent.0.push(agg);
    }
    // An exchange seen on both legs of a load balancer counts once.
    totals.l7_requests = totals.l7_requests.saturating_sub(lb_duplicates);

    let sources = vantages
        .list
        .iter()
        .map(|v| SourceDoc {
            kind,
            name: v.files.first().cloned().unwrap_or_default(),
            interface: v.interface.as_ref().map(|(i, _)| *i),
            interface_name: v.interface.as_ref().and_then(|(_, n)| n.clone()),
            files: (v.files.len() > 1).then(|| v.files.clone()),
            format: v.format,
            linktype: linktype_name(v.linktype),
            packets: v.packets,
            bytes: v.bytes,
            filter: filter.map(str::to_string),
            tpacket_version: None,
            kernel_drops: None,
            sockets: None,
            forwarded: None,
        })
        .collect();

    Document {
        schema: SCHEMA,
        generator: Generator {
            name: "wiremap",
            version: env!("CARGO_PKG_VERSION"),
        },
        sources,
        window: Window {
            start: time::rfc3339_micros(reader.first_ts.unwrap_or(0)),
            end: time::rfc3339_micros(reader.last_ts.unwrap_or(0)),
        },
        totals,
        limits,
        nodes,
        edges: edge_docs,
        spent,
    }
}

fn edge_doc(
    client: String,
    server: String,
    transport: &'static str,
    protocol: &'static str,
    a: &EdgeAgg,
) -> EdgeDoc {
    let tcp = transport == "tcp";
    let mut resources: Vec<(&str, u64, u64)> = a.l7.resources.iter().collect();
    // Most requests first; ties by name so the order is stable.
    resources.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(y.0)));
    resources.truncate(10);
    let latency = if a.l7.responses > 0 {
        a.l7.latency_us.summary().map(|s| Latency {
            count: s.count,
            min: s.min,
            p50: s.p50,
            p90: s.p90,
            p99: s.p99,
            max: s.max,
            mean: s.mean,
        })
    } else {
        None
    };
    EdgeDoc {
        client,
        server,
        transport,
        protocol,
        connections: a.connections,
        failed_connections: tcp.then_some(a.failed_connections),
        packets: Directional {
            to_server: a.packets[0],
            to_client: a.packets[1],
        },
        bytes: Directional {
            to_server: a.bytes[0],
            to_client: a.bytes[1],
        },
        requests: a.l7.requests,
        responses: a.l7.responses,
        errors: a.l7.errors,
        latency_us: latency,
        codes: a
            .l7
            .codes
            .iter()
            .map(|(c, n)| (c.as_str().to_string(), *n))
            .chain((a.l7.codes.other > 0).then(|| (OTHER_CODES.to_string(), a.l7.codes.other)))
            .collect(),
        top_resources: (a.l7.requests > 0).then(|| {
            resources
                .into_iter()
                .map(|(resource, requests, errors)| ResourceDoc {
                    resource: resource.to_string(),
                    requests,
                    errors,
                })
                .collect()
        }),
        nat: a.nat.as_ref().map(|n| NatDoc {
            mode: if n.modes & 2 != 0 { "fullnat" } else { "nat" },
            evidence: crate::lvs::evidence::NAMES
                .iter()
                .filter(|(bit, _)| n.evidence & bit != 0)
                .map(|(_, name)| *name)
                .collect(),
            clients: n.clients.iter().map(|c| c.to_string()).collect(),
            lb_local: (!n.lb_local.is_empty())
                .then(|| n.lb_local.iter().map(|c| c.to_string()).collect()),
        }),
        tcp: tcp.then(|| TcpDoc {
            rtt_us: if a.rtt_us.is_empty() {
                None
            } else {
                Some(a.rtt_us.quantile(0.5))
            },
            retransmissions: a.retransmissions,
            resets: a.resets,
            missed_bytes: a.missed_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::event::{Code, Resource};

    fn summary(i: u64) -> ConnSummary {
        let a = Endpoint {
            ip: [10, 0, 0, 1].into(),
            port: 40000,
        };
        let b = Endpoint {
            ip: [10, 0, 0, 2].into(),
            port: 80,
        };
        let (key, _) = FlowKey::new(a, b, 6, 0);
        let mut l7 = L7Tally {
            requests: i,
            responses: i,
            errors: i % 2,
            ..L7Tally::default()
        };
        l7.codes.add(
            &Code::from_str_lossy(if i.is_multiple_of(2) { "200" } else { "500" }),
            1,
        );
        l7.latency_us.record(100 * i);
        l7.add_resource(
            &Resource::from_str_lossy(&format!("GET /{}", i % 3)),
            1,
            i % 2,
        );
        ConnSummary {
            key,
            client: Some(Side::A),
            l7_server: None,
            udp: false,
            protocol: "http",
            established: !i.is_multiple_of(3),
            failed: i.is_multiple_of(3),
            reset: i.is_multiple_of(4),
            packets: [i, 2 * i],
            bytes: [10 * i, 20 * i],
            retransmissions: i % 5,
            missed_bytes: i % 7,
            rtt_us: i.is_multiple_of(2).then_some(50 * i),
            l7,
        }
    }

    #[test]
    fn adding_a_connection_sums_as_merging_its_aggregate() {
        // Past the digests' exact values, so their sketches are compared too.
        let (mut merged, mut added) = (EdgeAgg::default(), EdgeAgg::default());
        for i in 0..150 {
            for client in [Side::A, Side::B] {
                let s = summary(i);
                s.add_to(&mut added, client);
                let (k, agg) = s.into_edge(client);
                assert_eq!(k, summary(i).edge_key(client));
                merged.merge(&agg);
            }
        }
        assert_eq!(format!("{merged:?}"), format!("{added:?}"));
        assert_eq!(added.connections, 200);
    }
}
