//! Throughput of the MySQL session on a command-phase stream: after a greeting and login,
//! 100 COM_QUERY SELECTs, each answered by a text result set of 10 columns and 50 rows
//! (EOF mode). Each message is fed in 1448-byte segments through the caller's re-feed loop
//! (unconsumed bytes kept and re-fed with the next segment), directions interleaved per
//! exchange as on the wire.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use protocols::mysql::MysqlSession;
use protocols::{Direction, Event, Events, Limits, Session};

const COLUMNS: usize = 10;
const ROWS: usize = 50;
const QUERIES: usize = 100;

fn packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let n = payload.len() as u32;
    out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
    out.extend_from_slice(payload);
}

fn lenenc_str(p: &mut Vec<u8>, s: &[u8]) {
    p.push(s.len() as u8);
    p.extend_from_slice(s);
}

fn login() -> (Vec<u8>, Vec<u8>) {
    let caps: u32 = 0x000a_a20f; // PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, MULTI_RESULTS ...
    let mut g = vec![0x0a];
    g.extend_from_slice(b"8.0.36\0");
    g.extend_from_slice(&[7, 0, 0, 0]);
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.extend_from_slice(&[0xff, 2, 0]);
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.extend_from_slice(&[21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    let mut server = Vec::new();
    packet(&mut server, 0, &g);
    let mut l = caps.to_le_bytes().to_vec();
    l.extend_from_slice(&[0, 0, 0, 1, 0xff]);
    l.extend_from_slice(&[0; 23]);
    l.extend_from_slice(b"app\0");
    lenenc_str(&mut l, &[0x5a; 20]);
    l.extend_from_slice(b"shop\0mysql_native_password\0");
    let mut client = Vec::new();
    packet(&mut client, 1, &l);
    packet(&mut server, 2, &[0, 0, 0, 2, 0, 0, 0]);
    (client, server)
}

fn query(i: usize) -> Vec<u8> {
    let sql = format!(
        "SELECT o.id, o.customer_id, o.status, o.total, o.currency, o.created_at, o.updated_at, \
         o.shipping_city, o.shipping_country, o.note FROM orders o WHERE o.customer_id = {} \
         ORDER BY o.created_at DESC LIMIT 50",
        1000 + i
    );
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    let mut m = Vec::new();
    packet(&mut m, 0, &p);
    m
}

fn result_set(i: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 * 1024);
    let mut seq = 1u8;
    packet(&mut m, seq, &[COLUMNS as u8]);
    for c in 0..COLUMNS {
        seq = seq.wrapping_add(1);
        let mut d = Vec::new();
        let name = format!("col_{c}");
        for s in [
            &b"def"[..],
            b"shop",
            b"o",
            b"orders",
            name.as_bytes(),
            name.as_bytes(),
        ] {
            lenenc_str(&mut d, s);
        }
        d.extend_from_slice(&[0x0c, 0x21, 0, 0xfc, 3, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        packet(&mut m, seq, &d);
    }
    seq = seq.wrapping_add(1);
    packet(&mut m, seq, &[0xfe, 0, 0, 0x22, 0]);
    for r in 0..ROWS {
        seq = seq.wrapping_add(1);
        let mut row = Vec::new();
        let vals = [
            format!("{}", 500_000 + i * ROWS + r),
            format!("{}", 1000 + i),
            "shipped".to_string(),
            format!("{}.{:02}", 10 + r * 3, r % 100),
            "EUR".to_string(),
            "2024-04-15 10:00:00".to_string(),
            "2024-04-16 08:30:12".to_string(),
            "Berlin".to_string(),
            "DE".to_string(),
            "leave at the door, ring twice".to_string(),
        ];
        for v in &vals {
            lenenc_str(&mut row, v.as_bytes());
        }
        packet(&mut m, seq, &row);
    }
    seq = seq.wrapping_add(1);
    packet(&mut m, seq, &[0xfe, 0, 0, 0x22, 0]);
    m
}

/// Feed one message in 1448-byte segments, keeping and re-feeding unconsumed bytes.
fn feed_segments(
    s: &mut MysqlSession,
    dir: Direction,
    msg: &[u8],
    buf: &mut Vec<u8>,
    out: &mut Events,
) {
    for seg in msg.chunks(1448) {
        buf.extend_from_slice(seg);
        let n = s.feed(dir, black_box(buf), out);
        buf.drain(..n);
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let (login_c, login_s) = login();
    let exchanges: Vec<(Vec<u8>, Vec<u8>)> =
        (0..QUERIES).map(|i| (query(i), result_set(i))).collect();
    let total = (login_c.len() + login_s.len()) as u64
        + exchanges
            .iter()
            .map(|(q, r)| (q.len() + r.len()) as u64)
            .sum::<u64>();

    let mut group = c.benchmark_group("parse_mysql");
    let mut out = Events::with_capacity(256);
    let mut bufs: [Vec<u8>; 2] = [Vec::with_capacity(64 * 1024), Vec::with_capacity(64 * 1024)];
    let run = |out: &mut Events, bufs: &mut [Vec<u8>; 2]| {
        let mut s = MysqlSession::new(false, &limits);
        out.clear();
        let [cb, sb] = bufs;
        cb.clear();
        sb.clear();
        feed_segments(
            &mut s,
            Direction::ToClient,
            &login_s[..login_s.len() - 11],
            sb,
            out,
        );
        feed_segments(&mut s, Direction::ToServer, &login_c, cb, out);
        feed_segments(
            &mut s,
            Direction::ToClient,
            &login_s[login_s.len() - 11..],
            sb,
            out,
        );
        for (q, r) in &exchanges {
            feed_segments(&mut s, Direction::ToServer, q, cb, out);
            feed_segments(&mut s, Direction::ToClient, r, sb, out);
        }
        let (req, resp) = out.iter().fold((0, 0), |(q, r), e| match e {
            Event::Request(_) => (q + 1, r),
            Event::Response(_) => (q, r + 1),
            _ => (q, r),
        });
        assert_eq!((req, resp, out.len()), (QUERIES, QUERIES, 2 * QUERIES));
        black_box(out.len())
    };
    group.throughput(Throughput::Bytes(total));
    group.bench_function("select_10cols_50rows_1448_segments_bytes", |b| {
        b.iter(|| run(&mut out, &mut bufs))
    });
    group.throughput(Throughput::Elements(2 * QUERIES as u64));
    group.bench_function("select_10cols_50rows_1448_segments_messages", |b| {
        b.iter(|| run(&mut out, &mut bufs))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
