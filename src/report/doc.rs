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
            let (tx, rx) = std::sync::mpsc::sync_channel::<serde_json::Result<Vec<u8>>>(2);
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
                .ok_or_else(|| std::io::Error::other("a serialising thread stopped"))?
                .map_err(std::io::Error::other)?;
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
fn edges_text(edges: &[EdgeDoc]) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(edges.len() * 1536);
    for e in edges {
        // Each edge is an element of the top-level object's array: two levels deep.
        out.extend_from_slice(b",\n    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, Nested::new(2));
        e.serialize(&mut ser)?;
    }
    Ok(out)
}

/// serde_json's pretty layout (two-space indent), starting `depth` levels in. Arrays and
/// objects are laid out alike; only their brackets differ.
struct Nested {
    depth: usize,
    has_value: bool,
}

type Io = std::io::Result<()>;

impl Nested {
    fn new(depth: usize) -> Self {
        Nested {
            depth,
            has_value: false,
        }
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> Io {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> Io {
        self.depth -= 1;
        if self.has_value {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        w.write_all(bracket)
    }

    /// Before an element or a key: its separator and indent.
    fn element<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> Io {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(w)
    }

    fn indent<W: ?Sized + std::io::Write>(&self, w: &mut W) -> Io {
        for _ in 0..self.depth {
            w.write_all(b"  ")?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> Io {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> Io {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> Io {
        self.element(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> Io {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> Io {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> Io {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> Io {
        self.element(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> Io {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> Io {
        self.has_value = true;
        Ok(())
    }
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
            codes: (0..i % 3).map(|c| (format!("{}", 200 + c), 1)).collect(),
            top_resources: (!i.is_multiple_of(3)).then(|| {
                (0..i % 4)
                    .map(|r| ResourceDoc {
                        resource: format!("GET /\"{r}\"\n"),
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
                clients: Vec::new(),
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
