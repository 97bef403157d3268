//! Criterion benches for the per-packet path: decode, flow table lookup, TCP reassembly,
//! and whole-file throughput (reader, filter-free decode, workers, L7, document).
//! Quote ratios and medians from these; absolute times on a shared machine are noise.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wiremap::decode::{Decoder, Outcome};
use wiremap::flow::{Endpoint, Flow, FlowKey, FlowTable};
use wiremap::l7::Reassembly;
use wiremap::limits::Limits;
use wiremap::source::{CaptureFile, OwnedPacket, ReadOutcome, Vantages};

fn lab() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lab.pcap")
}

fn read_all(path: &str) -> Vec<OwnedPacket> {
    let mut f = CaptureFile::open(path, 1 << 24).expect("fixture opens");
    let mut v = Vantages::new(false);
    let mut out = Vec::new();
    loop {
        let mut p = OwnedPacket::default();
        let mut span = None;
        match f.next_packet(&mut v, &mut p, &mut span) {
            Ok(ReadOutcome::Packet) => {
                if let Some(s) = span {
                    p.data = f.bytes(s).to_vec();
                    f.release(s);
                }
                out.push(p)
            }
            _ => break,
        }
    }
    out
}

/// The lab capture repeated `times`, each copy with its own client ports and later
/// timestamps: realistic mixed L7 traffic with many connections.
fn scaled_lab(times: u32) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wiremap-bench-lab-x{times}.pcap"));
    if path.exists() {
        return path;
    }
    let pkts = read_all(lab().to_str().unwrap());
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&262144u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    let client = [10u8, 203, 0, 2];
    for k in 0..times {
        for p in &pkts {
            let mut d = p.data.clone();
            // IPv4 only: shift the client's port so each copy is its own set of connections.
            if d.len() >= 38 && d[12..14] == [0x08, 0x00] {
                let ihl = usize::from(d[14] & 0x0f) * 4;
                let l4 = 14 + ihl;
                let port_at = if d[26..30] == client {
                    l4
                } else if d[30..34] == client {
                    l4 + 2
                } else {
                    continue;
                };
                if d.len() >= port_at + 2 {
                    let port = u16::from_be_bytes([d[port_at], d[port_at + 1]]);
                    let shifted = 1024 + (u32::from(port) + k * 7) % 60000;
                    d[port_at..port_at + 2].copy_from_slice(&(shifted as u16).to_be_bytes());
                }
            } else {
                continue;
            }
            let ts = p.ts_ns / 1000 + i64::from(k) * 200_000;
            b.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            b.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(&d);
        }
    }
    std::fs::write(&path, b).expect("temp file");
    path
}

fn bench_decode(c: &mut Criterion) {
    let pkts = read_all(lab().to_str().unwrap());
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    g.bench_function("lab_frames", |b| {
        let mut d = Decoder::new(1024, 30_000_000_000);
        b.iter(|| {
            for p in &pkts {
                if let Outcome::Flow(t, payload) = d.decode(p.linktype, &p.data, p.ts_ns) {
                    black_box((t.sport, payload.len()));
                }
            }
        })
    });
    g.finish();
}

fn bench_flow_table(c: &mut Criterion) {
    let keys: Vec<FlowKey> = (0..100_000u32)
        .map(|i| {
            let a = Endpoint {
                ip: std::net::IpAddr::from((0x0a00_0000 | i).to_be_bytes()),
                port: (i % 50000) as u16 + 1024,
            };
            let b = Endpoint {
                ip: "10.255.0.1".parse().unwrap(),
                port: 80,
            };
            FlowKey::new(a, b, 6, 0).0
        })
        .collect();
    let mut g = c.benchmark_group("flow_table");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("find_100k", |b| {
        let mut t = FlowTable::new(200_000);
        for k in &keys {
            t.insert(Flow::new(*k, 0, 0, true));
        }
        b.iter(|| {
            for k in &keys {
                black_box(t.find(k));
            }
        })
    });
    g.finish();
}

fn bench_reassembly(c: &mut Criterion) {
    let seg = vec![b'x'; 1448];
    let limits = Limits::default();
    let mut g = c.benchmark_group("reassembly");
    g.throughput(Throughput::Bytes(1448 * 1000));
    for reorder in [false, true] {
        g.bench_with_input(
            BenchmarkId::new(
                "segments_1000",
                if reorder { "swapped_pairs" } else { "in_order" },
            ),
            &reorder,
            |b, &reorder| {
                b.iter(|| {
                    let mut r = Reassembly::default();
                    r.syn(0);
                    let mut dropped = 0;
                    let mut delivered = 0usize;
                    for i in 0..1000u32 {
                        // With `reorder`, each pair of segments arrives swapped.
                        let j = if reorder { i ^ 1 } else { i };
                        r.segment(
                            1 + j * 1448,
                            &seg,
                            1448,
                            false,
                            0,
                            &limits,
                            &mut dropped,
                            |c| {
                                if let wiremap::l7::Chunk::Data(d, _) = c {
                                    delivered += d.len();
                                }
                            },
                        );
                    }
                    black_box(delivered)
                })
            },
        );
    }
    g.finish();
}

fn bench_whole_file(c: &mut Criterion) {
    let path = scaled_lab(200);
    let packets = read_all(path.to_str().unwrap()).len() as u64;
    let mut g = c.benchmark_group("whole_file");
    g.sample_size(10);
    g.throughput(Throughput::Elements(packets));
    for threads in [1usize, 2] {
        g.bench_with_input(
            BenchmarkId::new("lab_x200", format!("{threads}_threads")),
            &threads,
            |b, &threads| {
                let opts = wiremap::pipeline::Options {
                    files: vec![path.to_string_lossy().into_owned()],
                    filter: None,
                    threads,
                    one_vantage: false,
                    vlan_key: false,
                    l7: true,
                    records: None,
                    limits: Limits::default(),
                    progress: false,
                    lb: Default::default(),
                    reader_worker: Default::default(),
                };
                b.iter(|| {
                    black_box(
                        wiremap::pipeline::analyze(&opts)
                            .expect("analyses")
                            .document
                            .totals
                            .packets,
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_flow_table,
    bench_reassembly,
    bench_whole_file
);
criterion_main!(benches);
