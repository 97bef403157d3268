//! Throughput of the HTTP/1.x session on a keep-alive connection: 100 browser-like
//! requests (a few POSTs with bodies) and nginx-like responses (Content-Length bodies of
//! 300 B to 24 KiB, every fourth one chunked, some 304s and a 404), each direction fed in
//! 1448-byte segments through the caller's re-feed loop (unconsumed bytes kept and re-fed
//! with the next segment).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use protocols::http::HttpSession;
use protocols::{Direction, Event, Events, Limits, Session};

const PATHS: [&str; 8] = [
    "/",
    "/static/css/main.3f9a1c.css",
    "/static/js/app.7be21d.js",
    "/api/v1/users/42/orders?page=2&per_page=50&sort=-created_at",
    "/images/hero@2x.webp",
    "/search?q=wire+map&lang=en",
    "/api/v1/cart",
    "/favicon.ico",
];

fn request(i: usize) -> Vec<u8> {
    let path = PATHS[i % PATHS.len()];
    let post = i % 10 == 6;
    let mut m = Vec::with_capacity(1024);
    m.extend_from_slice(if post { b"POST " } else { b"GET " });
    m.extend_from_slice(path.as_bytes());
    m.extend_from_slice(
        b" HTTP/1.1\r\n\
Host: shop.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://shop.example.com/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
Cookie: _ga=GA1.2.1234567890.1700000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark\r\n",
    );
    if i % 8 == 3 {
        m.extend_from_slice(b"If-None-Match: \"65f1c2a4-1e2f\"\r\n");
    }
    if post {
        let body = br#"{"sku":"A-1042","quantity":2,"gift":false,"note":"leave at the door"}"#;
        m.extend_from_slice(b"Content-Type: application/json\r\n");
        m.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        m.extend_from_slice(body);
    } else {
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn response(i: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 * 1024);
    let (status, reason) = match i {
        _ if i % 8 == 3 => ("304", "Not Modified"),
        _ if i % 37 == 5 => ("404", "Not Found"),
        _ => ("200", "OK"),
    };
    m.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    m.extend_from_slice(
        b"Server: nginx/1.24.0\r\n\
Date: Mon, 15 Apr 2024 10:00:00 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=0, must-revalidate\r\n\
ETag: \"65f1c2a4-1e2f\"\r\n\
Strict-Transport-Security: max-age=63072000\r\n\
X-Content-Type-Options: nosniff\r\n\
X-Frame-Options: SAMEORIGIN\r\n\
Set-Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; Path=/; HttpOnly; Secure; SameSite=Lax\r\n",
    );
    if status == "304" {
        m.extend_from_slice(b"\r\n");
        return m;
    }
    let body_len = 300 + (i * 7919) % (24 * 1024);
    let body: Vec<u8> = (0..body_len)
        .map(|k| b"<div class=\"item\">wiremap</div>\n"[k % 32])
        .collect();
    if i % 4 == 1 {
        m.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for chunk in body.chunks(4096) {
            m.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            m.extend_from_slice(chunk);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"0\r\n\r\n");
    } else {
        m.extend_from_slice(format!("Content-Length: {body_len}\r\n\r\n").as_bytes());
        m.extend_from_slice(&body);
    }
    m
}

/// Feed `stream` in 1448-byte segments, keeping and re-feeding unconsumed bytes.
fn feed_segments(
    s: &mut HttpSession,
    dir: Direction,
    stream: &[u8],
    buf: &mut Vec<u8>,
    out: &mut Events,
) {
    buf.clear();
    for seg in stream.chunks(1448) {
        buf.extend_from_slice(seg);
        let n = s.feed(dir, black_box(buf), out);
        buf.drain(..n);
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for i in 0..100 {
        requests.extend_from_slice(&request(i));
        responses.extend_from_slice(&response(i));
    }
    let total = (requests.len() + responses.len()) as u64;

    let mut group = c.benchmark_group("parse_http");
    let mut out = Events::with_capacity(256);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let run = |out: &mut Events, buf: &mut Vec<u8>| {
        let mut s = HttpSession::new(&limits);
        out.clear();
        feed_segments(&mut s, Direction::ToServer, &requests, buf, out);
        feed_segments(&mut s, Direction::ToClient, &responses, buf, out);
        let (req, resp) = out.iter().fold((0, 0), |(q, r), e| match e {
            Event::Request(_) => (q + 1, r),
            Event::Response(_) => (q, r + 1),
            _ => (q, r),
        });
        assert_eq!((req, resp, out.len()), (100, 100, 200));
        black_box(out.len())
    };
    group.throughput(Throughput::Bytes(total));
    group.bench_function("keepalive_100_exchanges_1448_segments_bytes", |b| {
        b.iter(|| run(&mut out, &mut buf))
    });
    group.throughput(Throughput::Elements(200));
    group.bench_function("keepalive_100_exchanges_1448_segments_messages", |b| {
        b.iter(|| run(&mut out, &mut buf))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
