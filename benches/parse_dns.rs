//! Throughput of the DNS session: UDP query/response datagrams of realistic size, and a DNS
//! over TCP stream of 100 messages fed in 1448-byte segments through the caller's re-feed
//! loop (unconsumed bytes kept and re-fed with the next segment).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use protocols::dns::DnsSession;
use protocols::{Direction, Events, Limits, Session, Transport};

const NAMES: [&str; 8] = [
    "www.example.com",
    "api.internal.svc.cluster.local",
    "cdn-7.static.example.net",
    "login.microsoftonline.com",
    "mail.google.com",
    "s3.eu-west-1.amazonaws.com",
    "detail.deepflow-ebpf-istio-demo.svc.cluster.local",
    "telemetry.example.org",
];

fn push_name(m: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
}

/// A recursive query with an EDNS OPT record (udp size 1232), like a stub resolver sends.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
    push_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0x00, 0x01]);
    m.extend_from_slice(&[
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]);
    m
}

/// Its answer: a CNAME to a CDN name, then four A records, then the OPT record.
fn response(id: u16, name: &str, rcode: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[
        0x81,
        0x80 | rcode,
        0x00,
        0x01,
        0x00,
        0x05,
        0x00,
        0x00,
        0x00,
        0x01,
    ]);
    push_name(&mut m, name);
    m.extend_from_slice(&[0x00, 0x01, 0x00, 0x01]);
    // CNAME: owner c0 0c, target "edge-17.cdn.example.net"
    m.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c]);
    let mut target = Vec::new();
    push_name(&mut target, "edge-17.cdn.example.net");
    m.extend_from_slice(&(target.len() as u16).to_be_bytes());
    let target_at = m.len() as u16;
    m.extend_from_slice(&target);
    for i in 0..4u8 {
        m.extend_from_slice(&(0xc000 | target_at).to_be_bytes());
        m.extend_from_slice(&[
            0x00,
            0x01,
            0x00,
            0x01,
            0x00,
            0x00,
            0x00,
            0x3c,
            0x00,
            0x04,
            93,
            184,
            216,
            30 + i,
        ]);
    }
    m.extend_from_slice(&[
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]);
    m
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut datagrams = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let id = 0x1000 + i as u16;
        datagrams.push(query(id, name, if i % 2 == 0 { 1 } else { 28 }));
        datagrams.push(response(id, name, if i == 3 { 3 } else { 0 }));
    }
    let udp_bytes: usize = datagrams.iter().map(Vec::len).sum();

    let mut stream = Vec::new();
    for i in 0..100u16 {
        let name = NAMES[usize::from(i) % NAMES.len()];
        let msg = response(i, name, 0);
        stream.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        stream.extend_from_slice(&msg);
    }

    let mut group = c.benchmark_group("parse_dns");
    let mut out = Events::with_capacity(256);

    let udp_run = |out: &mut Events| {
        let mut s = DnsSession::new(Transport::Udp, &limits);
        out.clear();
        for d in &datagrams {
            s.feed(Direction::ToServer, black_box(d), out);
        }
        black_box(out.len())
    };
    group.throughput(Throughput::Bytes(udp_bytes as u64));
    group.bench_function("udp_query_response_bytes", |b| b.iter(|| udp_run(&mut out)));
    group.throughput(Throughput::Elements(datagrams.len() as u64));
    group.bench_function("udp_query_response_messages", |b| {
        b.iter(|| udp_run(&mut out))
    });

    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let tcp_run = |out: &mut Events, buf: &mut Vec<u8>| {
        let mut s = DnsSession::new(Transport::Tcp, &limits);
        out.clear();
        buf.clear();
        for seg in stream.chunks(1448) {
            buf.extend_from_slice(seg);
            let n = s.feed(Direction::ToClient, black_box(buf), out);
            buf.drain(..n);
        }
        assert_eq!(out.len(), 100);
        black_box(out.len())
    };
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("tcp_100_messages_1448_segments_bytes", |b| {
        b.iter(|| tcp_run(&mut out, &mut buf))
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("tcp_100_messages_1448_segments_messages", |b| {
        b.iter(|| tcp_run(&mut out, &mut buf))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
