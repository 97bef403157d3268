//! The topology document (contract `wiremap.topology/v1`), as serialised. Field order is
//! the struct order; maps are BTreeMaps, so output is byte-stable.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::limits::LimitHits;

pub const SCHEMA: &str = "wiremap.topology/v1";

#[derive(Serialize, Debug)]
pub struct Document {
    pub schema: &'static str,
    pub generator: Generator,
    pub sources: Vec<SourceDoc>,
    pub window: Window,
    pub totals: Totals,
    /// How often each limit was hit (all zero when nothing was cut).
    pub limits: LimitHits,
    pub nodes: Vec<NodeDoc>,
    pub edges: Vec<EdgeDoc>,
    /// What the join no longer needs, freed with the document.
    #[serde(skip)]
    pub spent: super::join::Spent,
}

#[derive(Serialize, Debug)]
pub struct Generator {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, Debug)]
pub struct SourceDoc {
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// Every file of this vantage point, when `--one-vantage` joined several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    pub format: &'static str,
    pub linktype: String,
    pub packets: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Live: the PACKET_MMAP ring version in use (2 or 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpacket_version: Option<u8>,
    /// Live: packets the kernel dropped because the ring was full (PACKET_STATISTICS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<u64>,
    /// Live: capture sockets (more than one when the kernel accepted PACKET_FANOUT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<usize>,
    /// Live with fanout: packets a worker read but another owns (its symmetric hash),
    /// forwarded to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Window {
    pub start: String,
    pub end: String,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub l7_requests: u64,
    pub failed_connections: u64,
    pub other: u64,
    pub undecodable: u64,
    pub truncated: u64,
    /// Outgoing copies of loopback packets in cooked captures, skipped.
    pub duplicates: u64,
    /// Packets of a connection seen again at a vantage point other than its first.
    pub other_vantage_packets: u64,
}

#[derive(Serialize, Debug)]
pub struct NodeDoc {
    pub id: String,
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_connections: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Directional {
    pub to_server: u64,
    pub to_client: u64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

#[derive(Serialize, Debug)]
pub struct ResourceDoc {
    pub resource: String,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Serialize, Debug)]
pub struct TcpDoc {
    pub rtt_us: Option<u64>,
    pub retransmissions: u64,
    pub resets: u64,
    pub missed_bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct EdgeDoc {
    pub client: String,
    pub server: String,
    pub transport: &'static str,
    pub protocol: &'static str,
    pub connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_connections: Option<u64>,
    pub packets: Directional,
    pub bytes: Directional,
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    pub codes: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_resources: Option<Vec<ResourceDoc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpDoc>,
    /// Load-balancer stitching (contract: edges created or re-attributed by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatDoc>,
}

#[derive(Serialize, Debug)]
pub struct NatDoc {
    pub mode: &'static str,
    pub evidence: Vec<&'static str>,
    /// Real client ids (may be empty when only the director's address is known).
    pub clients: Vec<String>,
    /// The director's local addresses (FULLNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_local: Option<Vec<String>>,
}

/// Edges serialised per piece: small enough that pieces in flight cost little memory,
/// large enough that handing them over costs nothing.
const EDGES_PER_PIECE: usize = 512;

/// Write the document as pretty JSON: byte for byte what `serde_json::to_vec_pretty` gives,
/// with the edges serialised on several threads. On a capture with tens of thousands of
/// edges the document is tens of MB, and serialising it on one thread took a twentieth of a
/// run. Pieces are written in order as they are ready, a few at a time, so the whole text
/// is never held.
pub fn write_json_pretty(doc: &mut Document, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let whole = |doc: &Document, out: &mut dyn std::io::Write| {
        let text = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        out.write_all(&text)
    };
    let parts = super::join::parts_for(doc.edges.len());
    if parts == 1 {
        return whole(doc, out);
    }
    let edges = std::mem::take(&mut doc.edges);
    let head = serde_json::to_vec_pretty(&*doc);
    doc.edges = edges;
    let mut head = head.map_err(std::io::Error::other)?;
    // With no edges the text ends `"edges": []` and the closing brace of the document
    // (`edges` is the last field; anything else would be a change to `Document`).
    const EMPTY_TAIL: &[u8] = b"[]\n}";
    if !head.ends_with(EMPTY_TAIL) {
        return whole(doc, out);
    }
    head.truncate(head.len() - EMPTY_TAIL.len() + 1);
    out.write_all(&head)?;
    let pieces: Vec<&[EdgeDoc]> = doc.edges.chunks(EDGES_PER_PIECE).collect();
    std::thread::scope(|s| -> std::io::Result<()> {
        // Helper h serialises pieces h, h + parts, ...; each hands them over in order.
        let mut inboxes = Vec::with_capacity(parts);
        for h in 0..parts {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            inboxes.push(rx);
            let mine: Vec<&[EdgeDoc]> = pieces.iter().skip(h).step_by(parts).copied().collect();
            s.spawn(move || {
                for piece in mine {
                    if tx.send(edges_text(piece)).is_err() {
                        return; // the writer stopped (a write error)
                    }
                }
            });
        }
        for i in 0..pieces.len() {
            let text = inboxes
                .get(i % parts)
                .and_then(|rx| rx.recv().ok())
                .ok_or_else(|| std::io::Error::other("a serialising thread stopped"))?;
            // The first element opens with a newline, not a comma.
            let text = if i == 0 {
                text.get(1..).unwrap_or_default()
            } else {
                &text[..]
            };
            out.write_all(text)?;
        }
        Ok(())
    })?;
    out.write_all(b"\n  ]\n}")
}

/// Edges as elements of the document's `edges` array, each preceded by its separator.
fn edges_text(edges: &[EdgeDoc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(edges.len() * 1536);
    for e in edges {
        // Each edge is an element of the top-level object's array: two levels deep.
        out.extend_from_slice(b",\n    ");
        edge_json(&mut out, e);
    }
    out
}

/// One edge as serde_json's pretty writer lays it out two levels deep, written directly:
/// through serde every key went through the string escaper and every separator and indent
/// was a write call of its own, 6 % of a run's instructions on a capture with 22 k edges
/// (callgrind). The test below holds the two byte for byte.
fn edge_json(out: &mut Vec<u8>, e: &EdgeDoc) {
    let mut o = Nest::object(out, 2);
    o.field_str(b"client", &e.client);
    o.field_str(b"server", &e.server);
    o.field_str(b"transport", e.transport);
    o.field_str(b"protocol", e.protocol);
    o.field_u64(b"connections", e.connections);
    if let Some(n) = e.failed_connections {
        o.field_u64(b"failed_connections", n);
    }
    for (name, d) in [(&b"packets"[..], &e.packets), (b"bytes", &e.bytes)] {
        o.key(name);
        let mut i = Nest::object(o.out, 3);
        i.field_u64(b"to_server", d.to_server);
        i.field_u64(b"to_client", d.to_client);
        i.close();
    }
    o.field_u64(b"requests", e.requests);
    o.field_u64(b"responses", e.responses);
    o.field_u64(b"errors", e.errors);
    if let Some(l) = &e.latency_us {
        o.key(b"latency_us");
        let mut i = Nest::object(o.out, 3);
        for (name, v) in [
            (&b"count"[..], l.count),
            (b"min", l.min),
            (b"p50", l.p50),
            (b"p90", l.p90),
            (b"p99", l.p99),
            (b"max", l.max),
            (b"mean", l.mean),
        ] {
            i.field_u64(name, v);
        }
        i.close();
    }
    o.key(b"codes");
    let mut i = Nest::object(o.out, 3);
    for (code, n) in &e.codes {
        i.key_str(code);
        json_u64(i.out, *n);
    }
    i.close();
    if let Some(list) = &e.top_resources {
        o.key(b"top_resources");
        let mut a = Nest::array(o.out, 3);
        for r in list {
            a.element();
            let mut i = Nest::object(a.out, 4);
            i.field_str(b"resource", &r.resource);
            i.field_u64(b"requests", r.requests);
            i.field_u64(b"errors", r.errors);
            i.close();
        }
        a.close();
    }
    if let Some(t) = &e.tcp {
        o.key(b"tcp");
        let mut i = Nest::object(o.out, 3);
        i.key(b"rtt_us");
        match t.rtt_us {
            Some(v) => json_u64(i.out, v),
            None => i.out.extend_from_slice(b"null"),
        }
        i.field_u64(b"retransmissions", t.retransmissions);
        i.field_u64(b"resets", t.resets);
        i.field_u64(b"missed_bytes", t.missed_bytes);
        i.close();
    }
    if let Some(n) = &e.nat {
        o.key(b"nat");
        let mut i = Nest::object(o.out, 3);
        i.field_str(b"mode", n.mode);
        i.key(b"evidence");
        str_array(i.out, 4, n.evidence.iter().copied());
        i.key(b"clients");
        str_array(i.out, 4, n.clients.iter().map(String::as_str));
        if let Some(l) = &n.lb_local {
            i.key(b"lb_local");
            str_array(i.out, 4, l.iter().map(String::as_str));
        }
        i.close();
    }
    o.close();
}

/// An object or array being written: `depth` is its own level (its members go one deeper).
struct Nest<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
    any: bool,
    end: u8,
}

impl<'a> Nest<'a> {
    fn object(out: &'a mut Vec<u8>, depth: usize) -> Nest<'a> {
        Nest::open(out, depth, b'{', b'}')
    }

    fn array(out: &'a mut Vec<u8>, depth: usize) -> Nest<'a> {
        Nest::open(out, depth, b'[', b']')
    }

    fn open(out: &'a mut Vec<u8>, depth: usize, start: u8, end: u8) -> Nest<'a> {
        out.push(start);
        Nest {
            out,
            depth,
            any: false,
            end,
        }
    }

    /// Before a member: the separator and the indent.
    fn element(&mut self) {
        line(self.out, self.any, self.depth + 1);
        self.any = true;
    }

    /// A key that needs no escaping (the document's own field names).
    fn key(&mut self, name: &[u8]) {
        self.element();
        self.out.push(b'"');
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b"\": ");
    }

    fn field_str(&mut self, name: &[u8], value: &str) {
        self.key(name);
        json_str(self.out, value);
    }

    fn field_u64(&mut self, name: &[u8], value: u64) {
        self.key(name);
        json_u64(self.out, value);
    }

    fn key_str(&mut self, name: &str) {
        self.element();
        json_str(self.out, name);
        self.out.extend_from_slice(b": ");
    }

    fn close(self) {
        if self.any {
            self.out.push(b'\n');
            indent(self.out, self.depth);
        }
        self.out.push(self.end);
    }
}

fn str_array<'s>(out: &mut Vec<u8>, depth: usize, items: impl Iterator<Item = &'s str>) {
    let mut a = Nest::array(out, depth);
    for s in items {
        a.element();
        json_str(a.out, s);
    }
    a.close();
}

/// A comma (after a value) and a newline, or the newline alone, and the indent of `depth`.
fn line(out: &mut Vec<u8>, comma: bool, depth: usize) {
    let from = usize::from(!comma);
    out.extend_from_slice(LINES.get(from..2 + 2 * depth).unwrap_or(LINES));
}

fn indent(out: &mut Vec<u8>, depth: usize) {
    out.extend_from_slice(LINES.get(2..2 + 2 * depth).unwrap_or(LINES));
}

/// `,\n` and the indent of the deepest level an edge reaches (5) and more.
const LINES: &[u8] = b",\n                ";

fn json_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A JSON string as serde_json escapes it: quote, backslash and control characters; the
/// short forms where JSON has them, else `\u00XX` in lower-case hex.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        // Addresses, names, resources: almost always nothing to escape.
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(i: usize) -> EdgeDoc {
        let d = |n: usize| Directional {
            to_server: n as u64,
            to_client: 2 * n as u64,
        };
        EdgeDoc {
            client: format!("10.0.{}.{}", i / 250, i % 250),
            server: "10.9.0.1:80".into(),
            transport: if i.is_multiple_of(5) { "udp" } else { "tcp" },
            protocol: "http",
            connections: i as u64,
            failed_connections: (!i.is_multiple_of(5)).then_some(1),
            packets: d(i),
            bytes: d(i * 100),
            requests: (i % 3) as u64,
            responses: (i % 3) as u64,
            errors: 0,
            latency_us: (!i.is_multiple_of(3)).then_some(Latency {
                count: 1,
                min: 5,
                p50: 5,
                p90: 5,
                p99: 5,
                max: 5,
                mean: 5,
            }),
            // Empty and non-empty maps and arrays, nested: every layout rule shows.
            codes: (0..i % 3).map(|c| (format!("{}\"x", 200 + c), 1)).collect(),
            top_resources: (!i.is_multiple_of(3)).then(|| {
                (0..i % 4)
                    .map(|r| ResourceDoc {
                        // Every kind of escape serde_json makes, and what it leaves.
                        resource: format!("GET /\"{r}\"\n\\\t\r\u{1}\u{8}\u{c}\u{1f}\u{7f}é"),
                        requests: 1,
                        errors: 0,
                    })
                    .collect()
            }),
            tcp: (!i.is_multiple_of(5)).then(|| TcpDoc {
                rtt_us: i.is_multiple_of(2).then_some(7),
                retransmissions: 0,
                resets: 0,
                missed_bytes: 0,
            }),
            nat: i.is_multiple_of(7).then(|| NatDoc {
                mode: "nat",
                evidence: vec!["syn"],
                clients: (0..i % 3).map(|c| format!("10.2.0.{c}")).collect(),
                lb_local: i.is_multiple_of(2).then(|| vec!["10.1.1.1".into()]),
            }),
        }
    }

    fn document(edges: usize) -> Document {
        Document {
            schema: SCHEMA,
            generator: Generator {
                name: "wiremap",
                version: "test",
            },
            sources: Vec::new(),
            window: Window {
                start: "a".into(),
                end: "b".into(),
            },
            totals: Totals::default(),
            limits: LimitHits::default(),
            nodes: Vec::new(),
            edges: (0..edges).map(edge).collect(),
            spent: Default::default(),
        }
    }

    #[test]
    fn the_parallel_writer_writes_what_serde_json_writes() {
        // Below, at and well above the size where edges are serialised in parallel.
        for n in [0, 1, 3, 4_095, 4_096, 9_001] {
            let mut doc = document(n);
            let want = serde_json::to_vec_pretty(&doc).unwrap();
            let mut got = Vec::new();
            write_json_pretty(&mut doc, &mut got).unwrap();
            assert!(got == want, "{n} edges: the texts differ");
            assert_eq!(doc.edges.len(), n, "the document keeps its edges");
        }
    }

    #[test]
    fn each_edge_is_written_as_serde_json_writes_it() {
        // Whatever the machine's parallelism (the writer above uses `edges_text` only with
        // several threads): every shape of edge, one at a time, in a whole document.
        for i in 0..420 {
            let mut doc = document(0);
            doc.edges.push(edge(i));
            let whole = serde_json::to_vec_pretty(&doc).unwrap();
            let open = b"\"edges\": [";
            let at = whole.windows(open.len()).position(|w| w == open).unwrap() + open.len();
            let want = &whole[at..whole.len() - b"\n  ]\n}".len()];
            let got = edges_text(&doc.edges);
            assert_eq!(
                String::from_utf8_lossy(&got[1..]),
                String::from_utf8_lossy(want),
                "edge {i}"
            );
        }
    }

    /// A writer that fails once `left` bytes are taken (a closed pipe, a full disk).
    struct FailsAfter {
        left: usize,
    }

    impl std::io::Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("no space left"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_stops_the_writing_threads_and_reports_the_error() {
        let mut doc = document(20_000);
        for left in [0, 10, 700_000] {
            let mut out = FailsAfter { left };
            let err = write_json_pretty(&mut doc, &mut out).unwrap_err();
            assert_eq!(err.to_string(), "no space left");
        }
    }
}
