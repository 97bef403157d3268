//! Fuzz harnesses, shared by the cargo-fuzz targets (`tests/fuzz/fuzz_targets/*.rs`
//! include this file) and by `tests/fuzz_regressions.rs`, which replays every saved input
//! in `tests/fuzz-regressions/<target>/`.
//!
//! Each harness takes arbitrary bytes and must return without panicking, hanging or
//! growing memory without bound.
//!
//! Parser inputs (`http`, `dns_udp`, `dns_tcp`, `mysql`, `redis`, `tls_sni`) are
//!
//! ```text
//! config byte, then records: hdr byte, length (u16 LE, cut to what is left), bytes
//! ```
//!
//! config: bit 0 tiny limits, bit 1 mid-stream session, bits 2-4 server port hint.
//! hdr: bit 0 direction (0 to the server), bit 1 a gap before the record, bit 2 the
//! direction closes after it, bit 3 the record is fed in pieces of `1 + (hdr >> 4) * 5`
//! bytes (otherwise whole). Records are fed the way `src/l7` does: unconsumed bytes are
//! kept per direction and fed again with what follows, a buffer over `max_buffered` is
//! dropped and followed by `gap()`, a gap is followed by an empty feed, and a direction
//! still in a message at the end gets a gap.
#![allow(dead_code)]

use protocols::{AnySession, Direction, Event, Events, Limits, Protocol, Session, Transport};

const PORTS: [u16; 8] = [80, 53, 3306, 6379, 443, 8080, 5353, 40000];

/// Parser limits small enough for a fuzzer to hit every bound.
pub fn tiny_limits() -> Limits {
    Limits {
        max_buffered: 64,
        max_http_headers: 4,
        max_dns_name: 32,
        max_dns_pointers: 4,
        max_resp_depth: 3,
        max_resp_elements: 8,
        max_mysql_message: 256,
        max_pending: 4,
        request_text: true,
    }
}

/// `[hdr][len u16 LE][bytes]` records; the last one is cut to what is left.
pub struct Records<'a>(pub &'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&hdr, rest) = self.0.split_first()?;
        let len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let (body, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((hdr, body))
    }
}

fn direction(hdr: u8) -> Direction {
    if hdr & 1 == 0 {
        Direction::ToServer
    } else {
        Direction::ToClient
    }
}

/// The caller's side of one connection, as `src/l7` drives a session.
struct Driver {
    sess: AnySession,
    tcp: bool,
    transport: Transport,
    port: u16,
    limits: Limits,
    carry: [Vec<u8>; 2],
    closed: [bool; 2],
    events: Events,
    encrypted: bool,
}

impl Driver {
    fn new(protocol: Protocol, transport: Transport, cfg: u8) -> Driver {
        let limits = if cfg & 1 != 0 {
            tiny_limits()
        } else {
            Limits::default()
        };
        Driver {
            sess: AnySession::new(protocol, transport, cfg & 2 != 0, &limits),
            tcp: transport == Transport::Tcp,
            transport,
            port: PORTS[usize::from((cfg >> 2) & 7)],
            limits,
            carry: [Vec::new(), Vec::new()],
            closed: [false; 2],
            events: Vec::new(),
            encrypted: false,
        }
    }

    fn feed(&mut self, dir: Direction, bytes: &[u8]) {
        let d = dir.index();
        self.events.clear();
        let carry = &mut self.carry[d];
        if carry.is_empty() {
            let used = self.sess.feed(dir, bytes, &mut self.events);
            assert!(
                used <= bytes.len(),
                "consumed {used} of {} bytes",
                bytes.len()
            );
            if self.tcp && used < bytes.len() {
                carry.extend_from_slice(&bytes[used..]);
            }
        } else {
            carry.extend_from_slice(bytes);
            let used = self.sess.feed(dir, carry, &mut self.events);
            assert!(
                used <= carry.len(),
                "consumed {used} of {} bytes",
                carry.len()
            );
            carry.drain(..used);
        }
        if carry.len() > self.limits.max_buffered {
            carry.clear();
            self.sess.gap(dir);
        }
        let _ = self.sess.in_message(dir);
        self.check_events();
    }

    fn check_events(&mut self) {
        for ev in &self.events {
            match ev {
                Event::Request(r) => {
                    let _ = (r.resource.as_str(), r.text.as_str());
                }
                Event::Response(r) => {
                    let _ = (r.code.as_str(), r.kind.as_str());
                }
                Event::LoginFailed { code } => {
                    let _ = code.as_str();
                }
                Event::Encrypted => self.encrypted = true,
                Event::Anomaly(a) => {
                    let _ = a.as_str();
                }
            }
        }
    }

    fn gap(&mut self, dir: Direction) {
        self.sess.gap(dir);
        self.carry[dir.index()].clear();
        self.feed(dir, &[]);
    }

    fn record(&mut self, hdr: u8, bytes: &[u8]) {
        let dir = direction(hdr);
        let d = dir.index();
        if self.closed[d] || self.encrypted {
            return;
        }
        if !self.tcp {
            // One datagram per record.
            let _ = protocols::detect(self.transport, dir, bytes, self.port);
            self.feed(dir, bytes);
            return;
        }
        if hdr & 2 != 0 {
            self.gap(dir);
        }
        let piece = if hdr & 8 != 0 {
            1 + usize::from(hdr >> 4) * 5
        } else {
            bytes.len().max(1)
        };
        for p in bytes.chunks(piece) {
            if self.encrypted {
                return;
            }
            self.feed(dir, p);
            let _ = protocols::detect(self.transport, dir, &self.carry[d], self.port);
        }
        if hdr & 4 != 0 && !self.encrypted {
            self.events.clear();
            self.sess.close(dir, &mut self.events);
            self.check_events();
            self.closed[d] = true;
        }
    }

    fn finish(&mut self) {
        for dir in [Direction::ToServer, Direction::ToClient] {
            if self.encrypted {
                return;
            }
            if !self.carry[dir.index()].is_empty() || self.sess.in_message(dir) {
                self.gap(dir);
            }
        }
    }
}

/// Drive a `protocol` session over `transport` with the records of `data`.
pub fn session(protocol: Protocol, transport: Transport, data: &[u8]) {
    let Some((&cfg, body)) = data.split_first() else {
        return;
    };
    // Detection sees the first bytes of each direction, as the pipeline's does.
    for (hdr, bytes) in Records(body).take(2) {
        let _ = protocols::detect(
            transport,
            direction(hdr),
            bytes,
            PORTS[usize::from(cfg >> 5)],
        );
    }
    let mut d = Driver::new(protocol, transport, cfg);
    for (hdr, bytes) in Records(body) {
        d.record(hdr, bytes);
    }
    d.finish();
}

pub fn http(data: &[u8]) {
    session(Protocol::Http, Transport::Tcp, data);
}

pub fn dns_udp(data: &[u8]) {
    session(Protocol::Dns, Transport::Udp, data);
}

pub fn dns_tcp(data: &[u8]) {
    session(Protocol::Dns, Transport::Tcp, data);
}

pub fn mysql(data: &[u8]) {
    session(Protocol::Mysql, Transport::Tcp, data);
}

pub fn redis(data: &[u8]) {
    session(Protocol::Redis, Transport::Tcp, data);
}

/// TLS: the session, plus the record helpers and the SNI reader on every record and on
/// what the direction has sent so far.
pub fn tls_sni(data: &[u8]) {
    session(Protocol::Tls, Transport::Tcp, data);
    let Some((_, body)) = data.split_first() else {
        return;
    };
    let mut sent = [Vec::new(), Vec::new()];
    for (hdr, bytes) in Records(body) {
        let _ = protocols::tls::probe(bytes);
        let _ = protocols::tls::parse_client_hello_sni(bytes);
        let _ = protocols::tls::parse_record(bytes);
        let s = &mut sent[usize::from(hdr & 1)];
        if s.len() < 64 * 1024 {
            s.extend_from_slice(bytes);
            if let Some(name) = protocols::tls::parse_client_hello_sni(s) {
                assert!(name.len() <= s.len());
            }
        }
    }
}

/// Link types `decode` tries; the config byte picks one (values past the list are used
/// as link type numbers themselves).
const LINKTYPES: [u32; 9] = [1, 113, 276, 101, 228, 229, 0, 108, 12];

/// `decode`: config byte (link type), then records `[hdr][len][frame]`; hdr is the time
/// step (bit 7: in seconds, else in milliseconds). bit 0 of the config's high nibble
/// shrinks the fragment table to 2 datagrams.
pub fn decode(data: &[u8]) {
    use wiremap::decode::{Decoder, Outcome};
    let Some((&cfg, body)) = data.split_first() else {
        return;
    };
    let linktype = LINKTYPES
        .get(usize::from(cfg & 15))
        .copied()
        .unwrap_or(u32::from(cfg));
    let max_datagrams = if cfg & 16 != 0 { 2 } else { 4096 };
    let mut dec = Decoder::new(max_datagrams, 30_000_000_000);
    let mut ts: i64 = 1_700_000_000_000_000_000;
    for (hdr, frame) in Records(body) {
        let step = i64::from(hdr & 0x7f);
        ts += if hdr & 0x80 != 0 {
            step * 1_000_000_000
        } else {
            step * 1_000_000
        };
        let _ = wiremap::decode::ip_bytes_of(linktype, frame);
        match dec.decode(linktype, frame, ts) {
            Outcome::Flow(t, payload) => {
                assert!(t.proto == 6 || t.proto == 17);
                let _ = (payload.len(), t.payload_wire_len);
            }
            Outcome::Other { .. }
            | Outcome::FragmentHeld { .. }
            | Outcome::Duplicate
            | Outcome::Undecodable { .. } => {}
        }
    }
    let _ = dec.fragments_dropped();
}

/// A fresh temporary path (unique per process and call: tests run harnesses in parallel).
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("wiremap-fuzz-{tag}-{}-{n}", std::process::id()))
}

/// `capture_file`: the input is a capture file; read it to its end or first error.
pub fn capture_file(data: &[u8]) {
    use wiremap::source::{CaptureFile, OwnedPacket, ReadOutcome, Vantages};
    let path = temp_path("capture");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let p = path.to_string_lossy().into_owned();
    if let Ok(mut file) = CaptureFile::open(&p, 16 << 20) {
        let mut vantages = Vantages::new(false);
        let mut pkt = OwnedPacket::default();
        let mut span = None;
        // Every packet needs at least 16 bytes of the capture: more calls than that is a
        // hang. A gzip-compressed one holds at most 1,032 times its size (deflate's limit).
        let inside = if file.compressed() {
            data.len().saturating_mul(1032)
        } else {
            data.len()
        };
        let bound = inside / 16 + 16;
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(
                calls <= bound,
                "next_packet called {calls} times on {} bytes",
                data.len()
            );
            match file.next_packet(&mut vantages, &mut pkt, &mut span) {
                Ok(ReadOutcome::Packet) => {
                    assert!(usize::from(pkt.vantage) < vantages.list.len().max(1));
                    if let Some(s) = span {
                        // Classic pcap: the bytes are in the file's chunk, as long as declared.
                        assert_eq!(file.bytes(s).len(), s.len as usize);
                        file.release(s);
                    }
                }
                Ok(ReadOutcome::End) | Ok(ReadOutcome::Cut { .. }) | Err(_) => break,
            }
        }
        let _ = file.offset();
    }
    let _ = std::fs::remove_file(&path);
}

/// Turn `data` into a pcap: config byte (bits 0-3 link type as in `decode`, bit 4 nanosecond
/// timestamps, bit 5 tiny limits, bit 6 write records), then records `[hdr][len][frame]`:
/// hdr bits 0-4 time step, bit 5 step in seconds (else ms), bit 6 step backwards (a
/// reordered capture), bit 7 the frame was cut by the snaplen (wire length larger).
pub fn pcap_of(data: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&cfg, body) = data.split_first()?;
    let linktype = LINKTYPES
        .get(usize::from(cfg & 15))
        .copied()
        .unwrap_or(u32::from(cfg & 15));
    let nanos = cfg & 16 != 0;
    let mut out = Vec::with_capacity(data.len() + 64);
    let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    let unit: i64 = if nanos { 1_000_000_000 } else { 1_000_000 };
    let mut ts: i64 = 1_700_000_000 * unit;
    for (hdr, frame) in Records(body) {
        let step = i64::from(hdr & 31) * if hdr & 32 != 0 { unit } else { unit / 1000 };
        ts = if hdr & 64 != 0 { ts - step } else { ts + step };
        let orig = if hdr & 128 != 0 {
            frame.len() + 100
        } else {
            frame.len()
        };
        out.extend_from_slice(&((ts / unit) as u32).to_le_bytes());
        out.extend_from_slice(&((ts % unit) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(orig as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    Some((cfg, out))
}

/// `pipeline`: the whole analysis, on 2 workers with L7, on the pcap made of `data`; twice,
/// with the reading thread running one of the workers and without. With the default limits
/// the two documents must agree (`--threads` and `--reader-worker` change nothing), but for
/// what the README says may vary with how connections are spread: the top resources lists
/// and their displacement count. With tiny limits the per-worker shares of the flow table
/// differ between the two, so only the absence of a panic is checked there.
pub fn pipeline(data: &[u8]) {
    use wiremap::pipeline::{analyze, Options, ReaderWorker, RunError};
    let Some((cfg, pcap)) = pcap_of(data) else {
        return;
    };
    let path = temp_path("pipeline");
    if std::fs::write(&path, &pcap).is_err() {
        return;
    }
    let records = (cfg & 64 != 0).then(|| temp_path("records"));
    let tiny = cfg & 32 != 0;
    let mut limits = wiremap::limits::Limits::default();
    if tiny {
        limits.max_flows = 4;
        limits.max_reassembly_bytes_per_direction = 256;
        limits.max_reassembly_bytes_total = 1024;
        limits.max_message_bytes_total = 256;
        limits.max_pending_requests = 2;
        limits.max_edges = 2;
        limits.max_fragment_datagrams = 2;
        limits.parser = tiny_limits();
    }
    let run = |reader_worker| {
        let opts = Options {
            files: vec![path.to_string_lossy().into_owned()],
            filter: None,
            threads: 2,
            one_vantage: false,
            vlan_key: cfg & 128 != 0,
            l7: true,
            records: records.as_ref().map(|p| p.to_string_lossy().into_owned()),
            limits: limits.clone(),
            progress: false,
            lb: Default::default(),
            reader_worker,
        };
        match analyze(&opts) {
            Ok(a) => {
                let json = serde_json::to_value(&a.document);
                assert!(json.is_ok(), "the document does not serialise");
                json.ok()
            }
            Err(RunError::Internal(e)) => panic!("internal error: {e}"),
            Err(_) => None,
        }
    };
    let hosted = run(ReaderWorker::On);
    let threads_only = run(ReaderWorker::Off);
    let _ = std::fs::remove_file(&path);
    if let Some(r) = &records {
        let _ = std::fs::remove_file(r);
    }
    if !tiny {
        assert_eq!(
            hosted.map(without_spread_variance),
            threads_only.map(without_spread_variance),
            "the reader running a worker changed the document"
        );
    }
}

/// A document without the parts that may depend on how connections were spread over the
/// workers (README, "Limits": resources displaced from a full top-resources list).
fn without_spread_variance(mut doc: serde_json::Value) -> serde_json::Value {
    if let Some(edges) = doc.get_mut("edges").and_then(|e| e.as_array_mut()) {
        for e in edges {
            if let Some(e) = e.as_object_mut() {
                e.remove("top_resources");
            }
        }
    }
    if let Some(l) = doc.get_mut("limits").and_then(|l| l.as_object_mut()) {
        l.remove("resources_displaced");
    }
    doc
}
