//! Shared test helpers: run the binary, find peer captures, read and write small pcaps
//! independently of wiremap's own reader (so a reader bug cannot hide itself).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wiremap")
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("wiremap runs")
}

/// `wiremap analyze -q ARGS`, asserting success, parsed.
pub fn analyze(args: &[&str]) -> Value {
    let mut a = vec!["analyze", "-q"];
    a.extend_from_slice(args);
    let out = run(&a);
    assert!(
        out.status.success(),
        "wiremap {a:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the output is JSON")
}

/// Run `bash scripts/SCRIPT`, one of the build scripts that print the binary's path as their
/// last line of output: that path (checked to be a file) and what the script logged.
pub fn build_script(script: &str) -> (PathBuf, String) {
    let out = Command::new("bash")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scripts")
                .join(script),
        )
        .output()
        .expect("bash runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        out.status,
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let bin = PathBuf::from(path);
    assert!(bin.is_file(), "{script}: no binary at {}", bin.display());
    (bin, log)
}

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A capture from ../shared/peer-pcaps, or None (with the reason printed) when the shared
/// folder is absent.
pub fn peer(rel: &str) -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/peer-pcaps")
        .join(rel);
    if p.exists() {
        Some(p.to_string_lossy().into_owned())
    } else {
        println!(
            "skipped: {} is absent (../shared is not beside the repository)",
            p.display()
        );
        None
    }
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wiremap-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The edge with this client and server, or a panic listing the edges there are.
pub fn edge<'a>(doc: &'a Value, client: &str, server: &str, protocol: Option<&str>) -> &'a Value {
    doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["client"] == client
                && e["server"] == server
                && protocol.is_none_or(|p| e["protocol"] == p)
        })
        .unwrap_or_else(|| {
            panic!(
                "no edge {client} -> {server} ({protocol:?}) in {:#}",
                doc["edges"]
            )
        })
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// One record of a classic pcap file.
#[derive(Clone, Debug)]
pub struct Rec {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Read a little-endian microsecond pcap: (linktype, records).
pub fn read_pcap(path: &str) -> (u32, Vec<Rec>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[0..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "test reader handles LE µs pcap only"
    );
    let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let linktype = le32(20);
    let mut recs = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let incl = le32(o + 8) as usize;
        recs.push(Rec {
            ts_sec: le32(o),
            ts_usec: le32(o + 4),
            orig_len: le32(o + 12),
            data: b[o + 16..o + 16 + incl].to_vec(),
        });
        o += 16 + incl;
    }
    (linktype, recs)
}

pub fn write_pcap(path: &Path, linktype: u32, recs: &[Rec]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&262144u32.to_le_bytes());
    b.extend_from_slice(&linktype.to_le_bytes());
    for r in recs {
        b.extend_from_slice(&r.ts_sec.to_le_bytes());
        b.extend_from_slice(&r.ts_usec.to_le_bytes());
        b.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.orig_len.max(r.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.data);
    }
    std::fs::write(path, b).unwrap();
}

/// The number of packets tcpdump reads from FILE with EXPR (the reference for filters),
/// or None when tcpdump refuses the expression for this capture's link type.
pub fn tcpdump_count(file: &str, expr: &str) -> Option<u64> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-r", file, expr])
        .output()
        .expect("tcpdump is installed");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

/// Write a little-endian pcapng: one section, `interfaces` Ethernet interfaces with
/// microsecond timestamps, and packets as (interface, record).
pub fn write_pcapng(path: &Path, interfaces: &[&str], packets: &[(u32, Rec)]) {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(0u8, pad));
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut b = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut b, 0x0a0d0d0a, &shb);
    for name in interfaces {
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&262144u32.to_le_bytes());
        // if_name option (code 2), then opt_endofopt.
        let n = name.as_bytes();
        idb.extend_from_slice(&2u16.to_le_bytes());
        idb.extend_from_slice(&(n.len() as u16).to_le_bytes());
        idb.extend_from_slice(n);
        idb.extend(std::iter::repeat_n(0u8, (4 - n.len() % 4) % 4));
        idb.extend_from_slice(&[0, 0, 0, 0]);
        block(&mut b, 1, &idb);
    }
    for (iface, r) in packets {
        let ts = u64::from(r.ts_sec) * 1_000_000 + u64::from(r.ts_usec);
        let mut epb = Vec::new();
        epb.extend_from_slice(&iface.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&r.orig_len.max(r.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&r.data);
        epb.extend(std::iter::repeat_n(0u8, (4 - r.data.len() % 4) % 4));
        block(&mut b, 6, &epb);
    }
    std::fs::write(path, b).unwrap();
}

/// Compare wiremap's document for `capture` with an expected file written by
/// fixtures/lab/record.sh (edges from the clients' own results, tshark's frame count).
pub fn check_against_expected(capture: &str, expected: &serde_json::Value) {
    let doc = analyze(&[capture]);
    let want_edges = expected["edges"].as_array().unwrap();
    let got_edges = doc["edges"].as_array().unwrap();
    assert_eq!(
        got_edges.len(),
        want_edges.len(),
        "{capture}: edges {:#}",
        doc["edges"]
    );
    for w in want_edges {
        let (client, server) = (w["client"].as_str().unwrap(), w["server"].as_str().unwrap());
        let g = got_edges
            .iter()
            .find(|e| {
                e["client"] == client && e["server"] == server && e["transport"] == w["transport"]
            })
            .unwrap_or_else(|| {
                panic!("{capture}: no edge {client} -> {server} {}", w["transport"])
            });
        let what = format!("{capture}: {client} -> {server} {}", w["transport"]);
        assert_eq!(g["protocol"], w["protocol"], "{what}");
        for field in ["connections", "requests", "responses", "errors"] {
            assert_eq!(g[field], w[field], "{what}: {field}");
        }
        if w["transport"] == "tcp" {
            assert_eq!(
                g["failed_connections"], w["failed_connections"],
                "{what}: failed_connections"
            );
        }
        assert_eq!(g["codes"], w["codes"], "{what}: codes");
        if u(&g["requests"]) == 0 {
            assert!(
                g.get("top_resources").is_none(),
                "{what}: top_resources only with requests"
            );
        } else if let Some(resources) = w["resources"].as_object() {
            let got: std::collections::BTreeMap<String, u64> = g["top_resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["resource"].as_str().unwrap().to_string(),
                        u(&r["requests"]),
                    )
                })
                .collect();
            let want: std::collections::BTreeMap<String, u64> =
                resources.iter().map(|(k, v)| (k.clone(), u(v))).collect();
            assert_eq!(got, want, "{what}: resources");
        }
        if u(&g["responses"]) > 0 {
            let l = &g["latency_us"];
            assert_eq!(
                l["count"], g["responses"],
                "{what}: one latency per response"
            );
            assert!(
                u(&l["min"]) <= u(&l["p50"])
                    && u(&l["p50"]) <= u(&l["p99"])
                    && u(&l["p99"]) <= u(&l["max"])
            );
        }
    }
    let t = &expected["totals"];
    assert_eq!(doc["totals"]["l7_requests"], t["l7_requests"]);
    assert_eq!(doc["totals"]["failed_connections"], t["failed_connections"]);
    assert_eq!(doc["totals"]["other"], t["other"]);
    assert_eq!(u(&doc["totals"]["undecodable"]), 0);
    // Every packet of the file is read (the router pcapng holds each packet twice).
    let read: u64 = doc["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["packets"]))
        .sum();
    let frames = expected["tshark"]["packets"].as_u64().unwrap_or(0);
    if frames > 0 {
        assert_eq!(
            read, frames,
            "{capture}: packets read vs tshark's frame count"
        );
    }
}

/// Builds a TCP conversation as Ethernet/IPv4 frames with correct sequence numbers:
/// handshake, data segments (cut at `mss`), then FIN from both sides.
pub struct TcpConv {
    pub client: ([u8; 4], u16),
    pub server: ([u8; 4], u16),
    pub isn: (u32, u32),
    pub mss: usize,
    next: (u32, u32),
    ts_usec: u64,
    pub recs: Vec<Rec>,
}

impl TcpConv {
    pub fn new(client: ([u8; 4], u16), server: ([u8; 4], u16), isn: (u32, u32)) -> TcpConv {
        let mut c = TcpConv {
            client,
            server,
            isn,
            mss: 1448,
            next: (isn.0.wrapping_add(1), isn.1.wrapping_add(1)),
            ts_usec: 1_000_000,
            recs: Vec::new(),
        };
        c.push(true, isn.0, 0, 0x02, b"");
        c.push(false, isn.1, isn.0.wrapping_add(1), 0x12, b"");
        c.push(
            true,
            isn.0.wrapping_add(1),
            isn.1.wrapping_add(1),
            0x10,
            b"",
        );
        c
    }

    /// One raw segment (for out-of-order and overlap cases).
    pub fn push(&mut self, from_client: bool, seq: u32, ack: u32, flags: u8, data: &[u8]) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (40 + data.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(data);
        self.ts_usec += 100;
        self.recs.push(Rec {
            ts_sec: (self.ts_usec / 1_000_000) as u32,
            ts_usec: (self.ts_usec % 1_000_000) as u32,
            orig_len: f.len() as u32,
            data: f,
        });
    }

    /// Send bytes in order, cut at the MSS.
    pub fn send(&mut self, from_client: bool, data: &[u8]) {
        for chunk in data.chunks(self.mss.max(1)) {
            let (seq, ack) = if from_client {
                (self.next.0, self.next.1)
            } else {
                (self.next.1, self.next.0)
            };
            self.push(from_client, seq, ack, 0x18, chunk);
            if from_client {
                self.next.0 = self.next.0.wrapping_add(chunk.len() as u32);
            } else {
                self.next.1 = self.next.1.wrapping_add(chunk.len() as u32);
            }
        }
    }

    /// The next sequence number of a side.
    pub fn next_seq(&self, client: bool) -> u32 {
        if client {
            self.next.0
        } else {
            self.next.1
        }
    }

    pub fn advance(&mut self, client: bool, n: u32) {
        if client {
            self.next.0 = self.next.0.wrapping_add(n)
        } else {
            self.next.1 = self.next.1.wrapping_add(n)
        }
    }

    pub fn close(&mut self) {
        let (c, s) = self.next;
        self.push(true, c, s, 0x11, b"");
        self.push(false, s, c.wrapping_add(1), 0x11, b"");
        self.push(true, c.wrapping_add(1), s.wrapping_add(1), 0x10, b"");
    }
}
