//! Hostile and broken captures: wiremap finishes quickly, within bounded memory, with a
//! document (or a clean one-line error), and counts the limits it hit. Never a panic.
//!
//! The captures are generated here, so each case states exactly what it contains.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[allow(clippy::too_many_arguments)]
fn frame_v4_tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (40 + data.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(data);
    f
}

fn rec(ts_usec: u64, data: Vec<u8>) -> Rec {
    Rec {
        ts_sec: (ts_usec / 1_000_000) as u32,
        ts_usec: (ts_usec % 1_000_000) as u32,
        orig_len: data.len() as u32,
        data,
    }
}

/// Run wiremap under GNU time; returns (exit code, stdout, stderr, peak RSS in KiB).
fn run_measured(args: &[&str]) -> (Option<i32>, Vec<u8>, String, u64) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("WIREMAP_MAXRSS_KB=%M")
        .arg(bin())
        .args(args)
        .output()
        .expect("GNU time is installed (package `time`)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("WIREMAP_MAXRSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (out.status.code(), out.stdout, err, rss)
}

#[test]
fn a_syn_flood_from_distinct_sources_stays_small() {
    // 300,000 SYNs from 300,000 distinct sources to one service, never answered.
    let dir = tmpdir("synflood");
    let path = dir.join("flood.pcap");
    let n = 300_000u32;
    let recs: Vec<Rec> = (0..n)
        .map(|i| {
            let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            rec(
                u64::from(i) * 10,
                frame_v4_tcp(src, [192, 0, 2, 1], 40000, 80, i, 0, 0x02, b""),
            )
        })
        .collect();
    write_pcap(&path, 1, &recs);
    let started = std::time::Instant::now();
    let (code, stdout, err, rss_kb) = run_measured(&["analyze", "-q", path.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let edges = doc["edges"].as_array().unwrap();
    // The contract: failed-only edges exist only under the edge limit (10,000 by default).
    assert!(edges.len() <= 10_000, "{} edges", edges.len());
    assert_eq!(u(&doc["totals"]["failed_connections"]), u64::from(n));
    let server = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "192.0.2.1:80")
        .unwrap();
    assert_eq!(
        u(&server["failed_connections"]),
        u64::from(n),
        "every attempt still counts on the service"
    );
    assert!(u(&doc["limits"]["edges_folded"]) > 0);
    println!(
        "syn flood: {} edges, {} KiB peak RSS, {took:?}",
        edges.len(),
        rss_kb
    );
    assert!(rss_kb < 400 * 1024, "peak RSS {rss_kb} KiB");
    assert!(
        took < Duration::from_secs(60),
        "no timing assertion beyond 'finishes': {took:?}"
    );
}

#[test]
fn bit_flipped_captures_never_crash() {
    let Some(p) = peer("zeek/http/pipelined-requests.pcap") else {
        return;
    };
    let original = std::fs::read(&p).unwrap();
    let dir = tmpdir("bitflip");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..60 {
        let mut b = original.clone();
        let flips = 1 + (next() % 64) as usize;
        for _ in 0..flips {
            let at = (next() as usize) % b.len();
            b[at] ^= 1 << (next() % 8);
        }
        let f = dir.join(format!("flip{round}.pcap"));
        std::fs::write(&f, &b).unwrap();
        let out = run(&["analyze", "-q", f.to_str().unwrap()]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(3) | Some(4)),
            "round {round}: {:?}\n{}",
            code,
            String::from_utf8_lossy(&out.stderr)
        );
        if code != Some(3) {
            let _: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("round {round}: not JSON: {e}"));
        }
        assert!(String::from_utf8_lossy(&out.stderr).lines().count() <= 2);
    }
}

#[test]
fn a_snaplen_80_capture_is_decoded_as_far_as_it_goes() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    let (lt, recs) = read_pcap(&p);
    let cut: Vec<Rec> = recs
        .iter()
        .map(|r| Rec {
            data: r.data[..r.data.len().min(80)].to_vec(),
            ..r.clone()
        })
        .collect();
    let dir = tmpdir("snap80");
    let f = dir.join("snap80.pcap");
    write_pcap(&f, lt, &cut);
    let doc = analyze(&[f.to_str().unwrap()]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    assert_eq!(
        (u(&e["packets"]["to_server"]), u(&e["packets"]["to_client"])),
        (7, 7)
    );
    // tshark: 6 of the 14 frames are longer than 80 bytes.
    let longer = recs.iter().filter(|r| r.data.len() > 80).count() as u64;
    assert_eq!(u(&doc["totals"]["truncated"]), longer);
    assert!(u(&e["tcp"]["missed_bytes"]) > 0);
}

#[test]
fn headers_that_lie_are_counted_not_fatal() {
    let good = frame_v4_tcp([10, 0, 0, 1], [10, 0, 0, 2], 1000, 80, 1, 0, 0x02, b"");
    let mut short_ihl = good.clone();
    short_ihl[14] = 0x43;
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&9000u16.to_be_bytes());
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0xf0;
    let mut tiny = good.clone();
    tiny.truncate(20);
    let recs = vec![
        rec(1, short_ihl),
        rec(2, long_total),
        rec(3, bad_doff),
        rec(4, tiny),
        rec(5, good),
    ];
    let dir = tmpdir("liars");
    let f = dir.join("liars.pcap");
    write_pcap(&f, 1, &recs);
    let doc = analyze(&[f.to_str().unwrap()]);
    let t = &doc["totals"];
    assert_eq!(u(&t["packets"]), 5);
    // short IHL, bad data offset and the 20-byte frame cannot be decoded; the long total
    // length is decoded as far as the frame goes and marked truncated.
    assert_eq!(u(&t["undecodable"]), 3);
    assert_eq!(u(&t["truncated"]), 2);
    assert_eq!(
        u(&t["failed_connections"]),
        1,
        "the SYN (and the truncated one on the same 5-tuple) is one attempt"
    );
}

const C: ([u8; 4], u16) = ([10, 9, 0, 1], 40001);

/// Run one hostile conversation: exit 0, a document, bounded memory. Returns the document.
fn survive(name: &str, recs: &[Rec]) -> serde_json::Value {
    let dir = tmpdir(name);
    let f = dir.join(format!("{name}.pcap"));
    write_pcap(&f, 1, recs);
    let (code, stdout, err, rss_kb) = run_measured(&["analyze", "-q", f.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{name}: {err}");
    println!("{name}: {rss_kb} KiB peak RSS");
    assert!(rss_kb < 300 * 1024, "{name}: peak RSS {rss_kb} KiB");
    serde_json::from_slice(&stdout).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parser_limits(doc: &serde_json::Value) -> u64 {
    u(&doc["limits"]["parser_limits"])
}

#[test]
fn an_http_request_line_that_never_ends() {
    let mut c = TcpConv::new(C, ([10, 9, 0, 2], 80), (1, 1));
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat_n(b'A', 4 << 20));
    c.send(true, &line);
    c.send(true, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    c.close();
    let doc = survive("endless-line", &c.recs);
    assert!(parser_limits(&doc) > 0, "{:#}", doc["limits"]);
    let e = edge(&doc, "10.9.0.1", "10.9.0.2:80", Some("http"));
    assert_eq!(
        (u(&e["requests"]), u(&e["responses"])),
        (1, 1),
        "resynchronised on the next request"
    );
}

#[test]
fn absurd_lengths_and_header_floods() {
    let mut c = TcpConv::new(C, ([10, 9, 0, 3], 80), (7, 9));
    c.send(
        true,
        b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    );
    c.send(
        true,
        b"GET /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\nxx\r\n",
    );
    let mut flood = b"GET /c HTTP/1.1\r\n".to_vec();
    for i in 0..50_000 {
        flood.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    c.send(true, &flood);
    c.close();
    let doc = survive("absurd-http", &c.recs);
    assert!(
        parser_limits(&doc) > 0
            || doc["edges"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["protocol"] == "http")
    );
}

#[test]
fn redis_arrays_of_two_billion_and_nesting_a_hundred_thousand_deep() {
    let mut c = TcpConv::new(C, ([10, 9, 0, 4], 6379), (100, 200));
    c.send(true, b"*2147483648\r\n$3\r\nGET\r\n");
    c.send(true, b"*1\r\n$4\r\nPING\r\n");
    let mut deep = Vec::new();
    for _ in 0..100_000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    deep.extend_from_slice(b":1\r\n");
    c.send(false, &deep);
    c.close();
    let doc = survive("redis-deep", &c.recs);
    assert!(parser_limits(&doc) > 0, "{:#}", doc["limits"]);
}

#[test]
fn mysql_packets_declaring_16_mib() {
    let mut c = TcpConv::new(C, ([10, 9, 0, 5], 3306), (5, 6));
    // A COM_QUERY declaring 0xFFFFFF bytes of SQL, of which only a few arrive.
    let mut q = vec![0xff, 0xff, 0xff, 0x00, 0x03];
    q.extend_from_slice(b"SELECT ");
    q.extend(std::iter::repeat_n(b'x', 100_000));
    c.send(true, &q);
    c.close();
    let doc = survive("mysql-16mib", &c.recs);
    assert!(u(&doc["totals"]["packets"]) > 0);
}

#[test]
fn dns_compression_loops_and_overlong_labels() {
    let mut recs = Vec::new();
    let udp = |sport: u16, payload: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (28 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 9, 0, 1, 10, 9, 0, 53]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    };
    // Header (one question), then a name that points at itself.
    let looped = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
    ];
    let mut long = vec![0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..10 {
        long.push(63);
        long.extend(std::iter::repeat_n(b'a', 63));
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    for (i, p) in [&looped[..], &long[..]].iter().enumerate() {
        let f = udp(5000 + i as u16, p);
        recs.push(rec(1 + i as u64, f));
    }
    let doc = survive("dns-loops", &recs);
    assert_eq!(u(&doc["totals"]["packets"]), 2);
}

#[test]
fn sequence_wrap_overlaps_and_out_of_order_segments_still_pair() {
    // ISNs just below 2^32, so the request wraps the sequence space.
    let mut c = TcpConv::new(C, ([10, 9, 0, 6], 80), (u32::MAX - 10, u32::MAX - 3));
    let req = b"GET /wrap HTTP/1.1\r\nHost: example\r\nX-Pad: 0123456789\r\n\r\n";
    let base = c.next_seq(true);
    let ack = c.next_seq(false);
    // Out of order and overlapping: the tail first, then an overlapping middle, then the head.
    c.push(true, base.wrapping_add(30), ack, 0x18, &req[30..]);
    c.push(true, base.wrapping_add(10), ack, 0x18, &req[10..40]);
    c.push(true, base, ack, 0x18, &req[..20]);
    c.advance(true, req.len() as u32);
    c.send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    c.close();
    let doc = survive("wrap", &c.recs);
    let e = edge(&doc, "10.9.0.1", "10.9.0.6:80", Some("http"));
    assert_eq!(
        (u(&e["requests"]), u(&e["responses"]), u(&e["connections"])),
        (1, 1, 1)
    );
    assert_eq!(e["top_resources"][0]["resource"], "GET /wrap");
    assert_eq!(u(&e["tcp"]["missed_bytes"]), 0);
}

#[test]
fn out_of_order_data_across_connections_is_bounded_per_worker() {
    // 100 HTTP connections, each sending a request whose first 10 bytes never arrive: the
    // rest (about 8 KB each) waits in reassembly until the end.
    let mut recs = Vec::new();
    for i in 0..100u16 {
        let mut c = TcpConv::new(
            ([10, 9, 1, (i % 250) as u8], 20000 + i),
            ([10, 9, 0, 7], 80),
            (1, 1),
        );
        let mut req = b"GET /held HTTP/1.1\r\nX-Pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'p', 8000));
        req.extend_from_slice(b"\r\n\r\n");
        let base = c.next_seq(true);
        let ack = c.next_seq(false);
        c.push(true, base.wrapping_add(10), ack, 0x18, &req[10..]);
        recs.extend(c.recs);
    }
    let dir = tmpdir("held");
    let f = dir.join("held.pcap");
    write_pcap(&f, 1, &recs);
    let f = f.to_str().unwrap();
    // Within the default bound (64 MiB per worker): nothing dropped.
    let doc = analyze(&[f]);
    assert_eq!(u(&doc["limits"]["reassembly_dropped_segments"]), 0);
    // A 100 KB bound across connections: hit, counted, and analysis goes on.
    let doc = analyze(&["--threads", "1", "--reassembly-total-bytes", "100000", f]);
    assert!(
        u(&doc["limits"]["reassembly_dropped_segments"]) > 0,
        "{:#}",
        doc["limits"]
    );
    assert_eq!(u(&doc["totals"]["packets"]), 400);
}

#[test]
fn partial_messages_across_connections_are_bounded_per_worker() {
    // 500 HTTP connections, interleaved, each sending a 40 KB request head in MSS-sized
    // segments before any of them ends it: at the peak every connection holds a partial
    // head (about 20 MB in all). Then each ends its head and sends `GET /after`.
    let conns = 500u16;
    let mut per_conn: Vec<Vec<Rec>> = Vec::new();
    for i in 0..conns {
        let mut c = TcpConv::new(
            ([10, 9, 2, (i % 250) as u8], 30000 + i),
            ([10, 9, 0, 8], 80),
            (1, 1),
        );
        let mut head = b"GET /big HTTP/1.1\r\nX-Pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'p', 40_000));
        c.send(true, &head);
        c.send(true, b"\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
        c.close();
        per_conn.push(c.recs);
    }
    // Round-robin: record k of every connection, then record k + 1 (same timestamps per k,
    // so this is also time order).
    let longest = per_conn.iter().map(Vec::len).max().unwrap();
    let recs: Vec<Rec> = (0..longest)
        .flat_map(|k| per_conn.iter().filter_map(move |c| c.get(k).cloned()))
        .collect();
    let total_packets = recs.len() as u64;
    let dir = tmpdir("carry");
    let f = dir.join("carry.pcap");
    write_pcap(&f, 1, &recs);
    let f = f.to_str().unwrap();
    let after = |doc: &serde_json::Value| -> u64 {
        let e = edge(doc, "10.9.2.0", "10.9.0.8:80", Some("http"));
        e["top_resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "GET /after")
            .map(|r| u(&r["requests"]))
            .unwrap_or(0)
    };
    // Within the default bound (64 MiB per worker): nothing given up.
    let (code, out, err, rss_default) = run_measured(&["analyze", "-q", "--threads", "1", f]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(u(&doc["limits"]["message_buffers_dropped"]), 0);
    assert_eq!(u(&doc["limits"]["parser_limits"]), 0);
    // 10.9.2.0 is the client of connections 0, 250 (two of the 500).
    assert_eq!(after(&doc), 2);
    // A 2 MB bound across connections: hit, counted, and every connection resynchronises
    // on the request after its long head.
    let (code, out, err, rss_bounded) = run_measured(&[
        "analyze",
        "-q",
        "--threads",
        "1",
        "--message-total-bytes",
        "2000000",
        f,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        u(&doc["limits"]["message_buffers_dropped"]) > 0,
        "{:#}",
        doc["limits"]
    );
    assert_eq!(u(&doc["totals"]["packets"]), total_packets);
    assert_eq!(after(&doc), 2, "resynchronised on the next request");
    let all_after: u64 = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["server"] == "10.9.0.8:80")
        .flat_map(|e| e["top_resources"].as_array().unwrap().iter())
        .filter(|r| r["resource"] == "GET /after")
        .map(|r| u(&r["requests"]))
        .sum();
    assert_eq!(all_after, u64::from(conns));
    println!(
        "500 partial 40 KB heads: {rss_default} KiB peak RSS by default, {rss_bounded} KiB under a 2 MB bound"
    );
    assert!(
        rss_bounded < rss_default,
        "{rss_bounded} vs {rss_default} KiB"
    );
}

/// A DNS query for `name` (type A) over UDP from port 5353 + `id` to port 53: the UDP
/// header and message, as one datagram's upper-layer bytes.
fn dns_query_udp(id: u16, name: &[&str]) -> Vec<u8> {
    let mut dns = id.to_be_bytes().to_vec();
    dns.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut udp = (5353 + id).to_be_bytes().to_vec();
    udp.extend_from_slice(&53u16.to_be_bytes());
    udp.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&dns);
    udp
}

/// The answer to [`dns_query_udp`]: ports swapped, QR and RA set, no records.
fn dns_answer_udp(id: u16, name: &[&str]) -> Vec<u8> {
    let mut answer = dns_query_udp(id, name);
    answer.swap(0, 2);
    answer.swap(1, 3);
    answer[10] = 0x81;
    answer[11] = 0x80;
    answer
}

fn v4_fragment(id: u16, offset: usize, more: bool, part: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + part.len()) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    f.extend_from_slice(&field.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 10, 9, 3, 1, 10, 9, 3, 2]);
    f.extend_from_slice(part);
    f
}

fn v6_fragment(id: u32, offset: usize, more: bool, part: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + part.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[44, 64]);
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0xfd, 0x00, 0x02, 0x09]);
    let mut dst = src;
    src[15] = 1;
    dst[15] = 2;
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    // Fragment header: next header UDP, offset in 8-byte units << 3, M flag.
    f.extend_from_slice(&[17, 0]);
    f.extend_from_slice(&(((offset / 8) as u16) << 3 | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(part);
    f
}

/// Overlapping fragments, IPv4 and IPv6. wiremap's policy: for each 8-byte unit the first
/// copy to arrive wins; two last fragments that disagree on the datagram's end, or data past
/// the end, drop the datagram. Each datagram here is a DNS query whose name differs between
/// the first and the later copy of the overlapping unit, so the resource shows which won.
#[test]
fn overlapping_fragments_first_copy_wins() {
    // UDP 0..8, DNS header 8..20, the name from 20: "\x04aaaa\x07example\x00".
    let first = dns_query_udp(1, &["aaaa", "example"]);
    let second = dns_query_udp(1, &["bbbb", "example"]);
    assert_eq!(first.len(), second.len());
    let mut recs = Vec::new();
    let mut t = 1u64;
    let mut push = |frame: Vec<u8>| {
        recs.push(rec(t, frame));
        t += 1;
    };
    // IPv4 datagram 7: [0, 24) from `first`, then [16, 32) from `second` (the unit
    // [16, 24) overlaps: it holds "\x04aaa" / "\x04bbb"; [24, 32) is new and starts with
    // the fourth letter), then the rest, last. First copy wins: "aaab". (Last copy wins
    // would give "bbbb"; dropping overlaps, no request at all.)
    push(v4_fragment(7, 0, true, &first[..24]));
    push(v4_fragment(7, 16, true, &second[16..32]));
    push(v4_fragment(7, 32, false, &first[32..]));
    // IPv4 datagram 8: two last fragments that disagree on the end: both dropped; its
    // first fragment then starts a datagram that never completes (dropped at the end).
    let third = dns_query_udp(2, &["cccc", "example"]);
    push(v4_fragment(8, 16, false, &third[16..24]));
    push(v4_fragment(8, 16, false, &third[16..]));
    push(v4_fragment(8, 0, true, &third[..16]));
    // IPv6 datagram 9: the same overlap.
    push(v6_fragment(9, 0, true, &first[..24]));
    push(v6_fragment(9, 16, true, &second[16..32]));
    push(v6_fragment(9, 32, false, &first[32..]));
    let doc = survive("overlap", &recs);
    assert_eq!(u(&doc["totals"]["packets"]), 9);
    assert_eq!(
        u(&doc["limits"]["fragments_dropped"]),
        3,
        "datagram 8's fragments"
    );
    let v4 = edge(&doc, "10.9.3.1", "10.9.3.2:53", Some("dns"));
    let resources: Vec<&str> = v4["top_resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert!(resources.contains(&"aaab.example A"), "{resources:?}");
    assert_eq!(
        resources.len(),
        1,
        "datagram 8 never completed: {resources:?}"
    );
    assert_eq!(u(&v4["requests"]), 1);
    assert_eq!(
        u(&v4["packets"]["to_server"]),
        3,
        "every fragment is a packet"
    );
    let v6 = edge(&doc, "fd00:209::1", "[fd00:209::2]:53", Some("dns"));
    assert_eq!(v6["top_resources"][0]["resource"], "aaab.example A");
    assert_eq!(u(&v6["packets"]["to_server"]), 3);
}

/// URLs that carry ids make every request a new resource. The edge keeps a bounded list,
/// counts each displacement, and the resources that carry most requests keep exact counts
/// (they were seen before the list filled and never gave way): what the client sent says
/// how many. With two workers each keeps its own list and the join merges them.
#[test]
fn resources_with_ids_keep_the_heavy_hitters_exact() {
    let (mut recs, mut home, mut cart, mut cart_errors) = (Vec::new(), 0u64, 0u64, 0u64);
    for conn in 0..20u32 {
        let mut c = TcpConv::new(
            ([10, 9, 3, 1], 41000 + conn as u16),
            ([10, 9, 0, 9], 80),
            (7, 9),
        );
        for i in 0..100u32 {
            let n = conn * 100 + i;
            let (path, status) = match n % 10 {
                0..=2 => {
                    home += 1;
                    ("/home".to_string(), "200 OK")
                }
                3 | 4 => {
                    cart += 1;
                    if n % 20 == 3 {
                        cart_errors += 1;
                        ("/cart".to_string(), "503 Busy")
                    } else {
                        ("/cart".to_string(), "200 OK")
                    }
                }
                _ => (format!("/api/v1/items/{n}/reviews?page=1"), "200 OK"),
            };
            c.send(
                true,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
            c.send(
                false,
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
        }
        c.close();
        // One connection after the other in packet time.
        for r in &mut c.recs {
            r.ts_sec += conn * 10;
        }
        recs.extend(c.recs);
    }
    let dir = tmpdir("resource-ids");
    let f = dir.join("ids.pcap");
    write_pcap(&f, 1, &recs);
    for threads in ["1", "2"] {
        let doc = analyze(&["--threads", threads, f.to_str().unwrap()]);
        let e = edge(&doc, "10.9.3.1", "10.9.0.9:80", Some("http"));
        assert_eq!(u(&e["requests"]), 2000);
        let top = e["top_resources"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        assert_eq!(top[0]["resource"], "GET /home");
        assert_eq!((u(&top[0]["requests"]), u(&top[0]["errors"])), (home, 0));
        assert_eq!(top[1]["resource"], "GET /cart");
        assert_eq!(
            (u(&top[1]["requests"]), u(&top[1]["errors"])),
            (cart, cart_errors)
        );
        // 1,000 distinct id URLs through lists of 64.
        assert!(
            u(&doc["limits"]["resources_displaced"]) >= 900,
            "{:#}",
            doc["limits"]
        );
        for r in &top[2..] {
            assert!(u(&r["requests"]) <= 1, "{r}");
        }
    }
}

/// A Redis server whose errors each start with a new word: codes are whatever it sends, so
/// an edge keeps the smallest 64 (byte order) with exact counts and sums the rest under
/// "(other)", counted in `limits.codes_folded`. What the server sent says which and how
/// many; one and two workers agree.
#[test]
fn distinct_error_words_are_bounded_per_edge() {
    let (mut recs, mut errors, mut oks) = (Vec::new(), 0u64, 0u64);
    for conn in 0..20u32 {
        let mut c = TcpConv::new(
            ([10, 9, 4, 1], 42000 + conn as u16),
            ([10, 9, 0, 7], 6379),
            (11, 13),
        );
        for i in 0..60u32 {
            let n = conn * 60 + i;
            c.send(true, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
            if n % 6 == 5 {
                oks += 1;
                c.send(false, b"+OK\r\n");
            } else {
                errors += 1;
                c.send(false, format!("-E{n:04} boom\r\n").as_bytes());
            }
        }
        c.close();
        for r in &mut c.recs {
            r.ts_sec += conn * 10;
        }
        recs.extend(c.recs);
    }
    let dir = tmpdir("error-words");
    let f = dir.join("words.pcap");
    write_pcap(&f, 1, &recs);
    // The words sent, in byte order: E0000, E0001, ... (every sixth number answered OK
    // instead), then OK. The smallest 64 are kept, one response each.
    let kept: Vec<String> = (0..1200u32)
        .filter(|n| n % 6 != 5)
        .take(64)
        .map(|n| format!("E{n:04}"))
        .collect();
    for threads in ["1", "2"] {
        let doc = analyze(&["--threads", threads, f.to_str().unwrap()]);
        let e = edge(&doc, "10.9.4.1", "10.9.0.7:6379", Some("redis"));
        assert_eq!(u(&e["requests"]), 1200);
        assert_eq!(u(&e["errors"]), errors);
        let codes = e["codes"].as_object().unwrap();
        assert_eq!(codes.len(), 65, "{codes:?}");
        for w in &kept {
            assert_eq!(u(&codes[w.as_str()]), 1, "{w}");
        }
        assert!(!codes.contains_key("OK"));
        let other = errors - 64 + oks;
        assert_eq!(u(&codes["(other)"]), other);
        assert_eq!(u(&doc["limits"]["codes_folded"]), other);
    }
}

/// An Ethernet/IPv4 frame carrying `l4` (protocol `proto`) from `src` to `dst`.
fn v4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

/// A 20-byte TCP header (no options, checksum left zero).
fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = sport.to_be_bytes().to_vec();
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp
}

fn rec_at(usec: u64, data: Vec<u8>) -> Rec {
    Rec {
        ts_sec: 1_700_000_000 + (usec / 1_000_000) as u32,
        ts_usec: (usec % 1_000_000) as u32,
        orig_len: data.len() as u32,
        data,
    }
}

/// Source `i` of a spoofed range (100.64.0.0/10).
fn spoofed(i: u32) -> [u8; 4] {
    [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// A DNS server answering 3,000 sources (as under a spoofed-source flood): past
/// `--max-clients-per-service` clients in a worker, a new client's exchanges are summed on
/// the service's "other clients" edge (client 0.0.0.0) and counted in
/// `limits.clients_folded`, so memory and the document stay bounded and every request is
/// still counted.
#[test]
fn clients_past_the_bound_are_summed_on_the_other_clients_edge() {
    let server = [10, 9, 5, 53];
    let sources = 3000u32;
    let mut recs = Vec::new();
    for i in 0..sources {
        let query = dns_query_udp(i as u16, &["www", "example", "com"]);
        let answer = dns_answer_udp(i as u16, &["www", "example", "com"]);
        let at = u64::from(i) * 100;
        recs.push(rec_at(at, v4_frame(spoofed(i), server, 17, &query)));
        recs.push(rec_at(at + 20, v4_frame(server, spoofed(i), 17, &answer)));
    }
    let dir = tmpdir("spoofed-dns");
    let f = dir.join("dns.pcap");
    write_pcap(&f, 1, &recs);
    for threads in ["1", "2"] {
        let doc = analyze(&[
            "--threads",
            threads,
            "--max-clients-per-service",
            "1000",
            f.to_str().unwrap(),
        ]);
        let edges: Vec<&serde_json::Value> = doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["server"] == "10.9.5.53:53")
            .collect();
        let requests: u64 = edges.iter().map(|e| u(&e["requests"])).sum();
        assert_eq!(requests, u64::from(sources));
        let own = edges.iter().filter(|e| e["client"] != "0.0.0.0").count() as u64;
        let other = edge(&doc, "0.0.0.0", "10.9.5.53:53", Some("dns"));
        let folded = u(&doc["limits"]["clients_folded"]);
        assert_eq!(u(&other["requests"]), folded);
        assert_eq!(u(&other["responses"]), folded);
        assert_eq!(own + folded, u64::from(sources));
        if threads == "1" {
            assert_eq!(own, 1000);
        } else {
            assert!((1000..=2000).contains(&own), "{own}");
        }
        assert!(doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "0.0.0.0" && n["role"] == "client"));
    }
}

/// 40,000 lone ACKs from distinct sources (a spoofed mid-stream flood): no opener is seen,
/// so each would wait for the join stage to be oriented. A worker holds 16,384 of those;
/// past that it orients them itself (port 80 is the server's) and counts them, and past
/// the per-service bound they land on the "other clients" edge.
#[test]
fn a_mid_stream_flood_is_oriented_by_the_worker_past_its_bound() {
    let server = [10, 9, 5, 80];
    let sources = 40_000u32;
    let mut recs = Vec::new();
    for i in 0..sources {
        let tcp = tcp_header(40_000, 80, i.wrapping_mul(2_654_435_761), 7, 0x10);
        recs.push(rec_at(
            u64::from(i) * 10,
            v4_frame(spoofed(i), server, 6, &tcp),
        ));
    }
    let dir = tmpdir("ack-flood");
    let f = dir.join("acks.pcap");
    write_pcap(&f, 1, &recs);
    let doc = analyze(&[
        "--threads",
        "1",
        "--max-clients-per-service",
        "100",
        f.to_str().unwrap(),
    ]);
    let held = 16_384u64;
    let oriented = u64::from(sources) - held;
    assert_eq!(u(&doc["limits"]["undetermined_oriented"]), oriented);
    assert_eq!(u(&doc["limits"]["clients_folded"]), oriented - 100);
    let other = edge(&doc, "0.0.0.0", "10.9.5.80:80", None);
    assert_eq!(u(&other["packets"]["to_server"]), oriented - 100);
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len() as u64, held + 100 + 1);
    let packets: u64 = edges.iter().map(|e| u(&e["packets"]["to_server"])).sum();
    assert_eq!(packets, u64::from(sources));
    assert!(edges.iter().all(|e| e["server"] == "10.9.5.80:80"));
}

/// A host scanning port 80 of 1,000 addresses (no answers): each attempt is a failed
/// connection to a new service. Past `--max-edges` the attempts fold into their service's
/// node, and past that many such services into the port's "other services" node
/// `0.0.0.0:80`: the document stays bounded and every attempt is still counted.
#[test]
fn a_scan_folds_into_the_ports_other_services_node() {
    let scanner = [10, 9, 6, 5];
    let targets = 1000u32;
    let mut recs = Vec::new();
    for i in 0..targets {
        let tcp = tcp_header(40_000 + i as u16, 80, i.wrapping_mul(7919), 0, 0x02);
        recs.push(rec_at(
            u64::from(i) * 10,
            v4_frame(scanner, spoofed(i), 6, &tcp),
        ));
    }
    let dir = tmpdir("scan");
    let f = dir.join("scan.pcap");
    write_pcap(&f, 1, &recs);
    let doc = analyze(&["--threads", "1", "--max-edges", "100", f.to_str().unwrap()]);
    assert_eq!(u(&doc["totals"]["failed_connections"]), u64::from(targets));
    assert_eq!(doc["edges"].as_array().unwrap().len(), 100);
    assert_eq!(u(&doc["limits"]["edges_folded"]), 900);
    assert_eq!(u(&doc["limits"]["services_folded"]), 800);
    let nodes = doc["nodes"].as_array().unwrap();
    // The scanner, 100 services with an edge, 100 with folded attempts, and 0.0.0.0:80.
    assert_eq!(nodes.len(), 202);
    let other = nodes.iter().find(|n| n["id"] == "0.0.0.0:80").unwrap();
    assert_eq!(other["role"], "service");
    assert_eq!(u(&other["failed_connections"]), 800);
    let failed: u64 = nodes
        .iter()
        .filter(|n| n["role"] == "service")
        .map(|n| u(&n["failed_connections"]))
        .sum();
    assert_eq!(failed, u64::from(targets));
}

/// Reflected traffic: 3,000 DNS servers answer a victim that never asked (each answer is
/// its own flow, client the victim). Every server is a new service, so the per-service
/// bound does not help; past `--max-edges-per-worker` edges, new ones are summed on the
/// port's "other traffic" edge (0.0.0.0 to 0.0.0.0:53), counted in `limits.traffic_folded`.
#[test]
fn reflected_traffic_past_the_edge_bound_is_summed_per_port() {
    let victim = [10, 9, 7, 1];
    let servers = 3000u32;
    let mut recs = Vec::new();
    for i in 0..servers {
        // An answer nobody asked for.
        let answer = dns_answer_udp(i as u16, &["www", "example", "com"]);
        recs.push(rec_at(
            u64::from(i) * 100,
            v4_frame(spoofed(i), victim, 17, &answer),
        ));
    }
    let dir = tmpdir("reflection");
    let f = dir.join("reflected.pcap");
    write_pcap(&f, 1, &recs);
    let doc = analyze(&[
        "--threads",
        "1",
        "--max-edges-per-worker",
        "500",
        f.to_str().unwrap(),
    ]);
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 501);
    assert_eq!(u(&doc["limits"]["traffic_folded"]), 2500);
    let other = edge(&doc, "0.0.0.0", "0.0.0.0:53", Some("dns"));
    assert_eq!(u(&other["packets"]["to_client"]), 2500);
    assert_eq!(u(&other["connections"]), 2500);
    let to_victim: u64 = edges.iter().map(|e| u(&e["packets"]["to_client"])).sum();
    assert_eq!(to_victim, u64::from(servers));
    assert_eq!(
        edges.iter().filter(|e| e["client"] == "10.9.7.1").count(),
        500
    );
}

/// Clients that pipeline requests a server never answers: each connection's queue is
/// bounded by `--max-pending` (1,024), and all of a worker's by `--pending-total-bytes`.
/// Past the worker's bound a connection's new request displaces its own oldest (counted
/// in `pending_requests_dropped`); every request is still counted.
#[test]
fn unanswered_pipelines_are_bounded_per_worker() {
    let (conns, per_conn) = (50u32, 100u32);
    let mut recs = Vec::new();
    for c in 0..conns {
        let mut t = TcpConv::new(
            ([10, 9, 8, 1], 43000 + c as u16),
            ([10, 9, 0, 80], 80),
            (17, 19),
        );
        for i in 0..per_conn {
            t.send(
                true,
                format!("GET /q/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
        }
        for r in &mut t.recs {
            r.ts_sec += c;
        }
        recs.extend(t.recs);
    }
    let dir = tmpdir("pipelines");
    let f = dir.join("pipelines.pcap");
    write_pcap(&f, 1, &recs);
    let total = u64::from(conns * per_conn);
    let free = analyze(&["--threads", "1", f.to_str().unwrap()]);
    assert_eq!(u(&free["totals"]["l7_requests"]), total);
    assert_eq!(u(&free["limits"]["pending_requests_dropped"]), 0);
    // 10,000 bytes hold a few hundred entries of 32 bytes plus their paths; past that each
    // connection keeps what it holds (at least one).
    let bounded = analyze(&[
        "--threads",
        "1",
        "--pending-total-bytes",
        "10000",
        f.to_str().unwrap(),
    ]);
    assert_eq!(u(&bounded["totals"]["l7_requests"]), total);
    let dropped = u(&bounded["limits"]["pending_requests_dropped"]);
    let most_held = 10_000 / 32 + u64::from(conns);
    assert!(dropped >= total - most_held, "{dropped}");
    assert!(dropped < total, "{dropped}");
}
