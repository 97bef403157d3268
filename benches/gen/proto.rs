//! Application payloads: HTTP/1.1, Redis RESP, MySQL client/server protocol (protocol 41,
//! CLIENT_DEPRECATE_EOF off) and DNS. Each builder appends to a reused `Vec<u8>`.

use crate::rng::Rng;
use std::io::Write;

// ---------------------------------------------------------------------------------------------
// Filler text for bodies and values

/// A static-ish block of text that bodies are sliced from (built once at start-up).
pub fn filler() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
        "incididunt",
        "ut",
        "labore",
        "et",
        "dolore",
        "magna",
        "aliqua",
        "enim",
        "minim",
        "veniam",
        "quis",
        "nostrud",
        "exercitation",
        "ullamco",
        "laboris",
        "nisi",
        "aliquip",
    ];
    let mut r = Rng::new(0xF111E7);
    let mut v = Vec::with_capacity(66_000);
    while v.len() < 65_536 {
        v.extend_from_slice(WORDS[r.below(WORDS.len() as u64) as usize].as_bytes());
        v.push(if r.pct(8) { b'\n' } else { b' ' });
    }
    v.truncate(65_536);
    v
}

#[inline]
fn fill(out: &mut Vec<u8>, filler: &[u8], rng: &mut Rng, mut n: usize) {
    while n > 0 {
        let off = rng.below((filler.len() / 2) as u64) as usize;
        let take = n.min(filler.len() - off);
        out.extend_from_slice(&filler[off..off + take]);
        n -= take;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

/// What a request will be answered with; chosen with the request.
#[derive(Clone, Copy)]
pub struct HttpPlan {
    pub status: u16,
    pub post: bool,
    pub res: u8,
    pub n: u32,
}

struct Res {
    method_post: bool,
    path: &'static str, // "{}" is replaced by a number
    ctype: &'static str,
}

const OK_RES: &[Res] = &[
    Res {
        method_post: false,
        path: "/",
        ctype: "text/html; charset=utf-8",
    },
    Res {
        method_post: false,
        path: "/index.html",
        ctype: "text/html; charset=utf-8",
    },
    Res {
        method_post: false,
        path: "/static/css/main.3c2f1a.css",
        ctype: "text/css",
    },
    Res {
        method_post: false,
        path: "/static/js/app.9b1e7d.js",
        ctype: "application/javascript",
    },
    Res {
        method_post: false,
        path: "/images/hero-{}.jpg",
        ctype: "image/jpeg",
    },
    Res {
        method_post: false,
        path: "/api/v1/products?page={}&limit=20",
        ctype: "application/json",
    },
    Res {
        method_post: false,
        path: "/api/v1/products/{}",
        ctype: "application/json",
    },
    Res {
        method_post: false,
        path: "/api/v1/users/{}/orders",
        ctype: "application/json",
    },
    Res {
        method_post: false,
        path: "/search?q=running+shoes&p={}",
        ctype: "text/html; charset=utf-8",
    },
    Res {
        method_post: true,
        path: "/api/v1/cart/items",
        ctype: "application/json",
    },
    Res {
        method_post: true,
        path: "/api/v1/events",
        ctype: "application/json",
    },
];
const NOTFOUND_RES: &[Res] = &[
    Res {
        method_post: false,
        path: "/favicon.ico",
        ctype: "text/html",
    },
    Res {
        method_post: false,
        path: "/wp-login.php",
        ctype: "text/html",
    },
    Res {
        method_post: false,
        path: "/api/v1/products/{}",
        ctype: "application/json",
    },
    Res {
        method_post: false,
        path: "/static/js/old.{}.bundle.js",
        ctype: "text/html",
    },
];
const ERROR_RES: &[Res] = &[
    Res {
        method_post: true,
        path: "/api/v1/checkout",
        ctype: "application/json",
    },
    Res {
        method_post: false,
        path: "/api/v1/recommendations?user={}",
        ctype: "application/json",
    },
];

fn res_table(status: u16) -> &'static [Res] {
    match status {
        200 => OK_RES,
        404 => NOTFOUND_RES,
        _ => ERROR_RES,
    }
}

pub fn http_plan(rng: &mut Rng) -> HttpPlan {
    let r = rng.below(100);
    let status = if r < 8 {
        404
    } else if r < 12 {
        500
    } else {
        200
    };
    let table = res_table(status);
    let res = rng.below(table.len() as u64) as u8;
    HttpPlan {
        status,
        post: table[res as usize].method_post,
        res,
        n: rng.range(1, 99_999) as u32,
    }
}

fn path(out: &mut Vec<u8>, p: &str, n: u32) {
    match p.find("{}") {
        Some(i) => {
            out.extend_from_slice(&p.as_bytes()[..i]);
            write!(out, "{}", n).unwrap();
            out.extend_from_slice(&p.as_bytes()[i + 2..]);
        }
        None => out.extend_from_slice(p.as_bytes()),
    }
}

const UA: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
];

pub fn http_request(out: &mut Vec<u8>, rng: &mut Rng, filler: &[u8], plan: &HttpPlan) {
    let res = &res_table(plan.status)[plan.res as usize];
    out.extend_from_slice(if plan.post { b"POST " } else { b"GET " });
    path(out, res.path, plan.n);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: ");
    out.extend_from_slice(UA[rng.below(UA.len() as u64) as usize].as_bytes());
    out.extend_from_slice(b"\r\n");
    if plan.post {
        let body = if res.path.ends_with("events") {
            rng.range(1_000, 4_000)
        } else {
            rng.range(40, 400)
        } as usize;
        out.extend_from_slice(b"Accept: application/json\r\nContent-Type: application/json\r\nOrigin: https://shop.example.com\r\n");
        write!(out, "Content-Length: {}\r\n", body).unwrap();
        http_common(out, rng);
        out.extend_from_slice(b"\r\n");
        // A JSON-looking body of exactly `body` bytes.
        let start = out.len();
        out.extend_from_slice(b"{\"items\":\"");
        let inner = body.saturating_sub(12);
        fill(out, filler, rng, inner);
        for b in &mut out[start + 10..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"\"}");
        out.truncate(start + body);
    } else {
        out.extend_from_slice(
            b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n",
        );
        http_common(out, rng);
        out.extend_from_slice(b"\r\n");
    }
}

fn http_common(out: &mut Vec<u8>, rng: &mut Rng) {
    out.extend_from_slice(b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate\r\n");
    if rng.pct(50) {
        write!(
            out,
            "Cookie: session={:016x}; theme=dark\r\n",
            rng.next_u64()
        )
        .unwrap();
    }
    out.extend_from_slice(b"Connection: keep-alive\r\n");
}

/// "Mon, 01 Jan 2024 00:00:00 GMT" for a Unix time.
fn http_date(out: &mut Vec<u8>, secs: u64) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    let s = secs % 86_400;
    write!(
        out,
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        s / 3600,
        s / 60 % 60,
        s % 60
    )
    .unwrap();
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// TCP payload per segment; the connection code splits messages at this size.
pub const MSS: usize = 1448;

pub fn http_response(
    out: &mut Vec<u8>,
    rng: &mut Rng,
    filler: &[u8],
    plan: &HttpPlan,
    now_secs: u64,
) {
    let res = &res_table(plan.status)[plan.res as usize];
    let mut body = if plan.status == 200 {
        rng.log_uniform(100, 20_000)
    } else {
        rng.range(150, 600)
    } as usize;
    let chunked = plan.status == 200 && res.ctype == "application/json" && rng.pct(30);
    let start = out.len();
    loop {
        http_response_once(out, rng, filler, plan, now_secs, body, chunked);
        // tshark 4.0 flags a chunked response whose last segment holds only the end of the
        // terminating "0\r\n\r\n" as malformed; such a split is legal, but we keep the
        // capture clean for tshark by growing the body a little.
        let tail = (out.len() - start) % MSS;
        if !chunked || !(1..=7).contains(&tail) {
            break;
        }
        out.truncate(start);
        body += 8;
    }
}

fn http_response_once(
    out: &mut Vec<u8>,
    rng: &mut Rng,
    filler: &[u8],
    plan: &HttpPlan,
    now_secs: u64,
    body: usize,
    chunked: bool,
) {
    let res = &res_table(plan.status)[plan.res as usize];
    let reason = match plan.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: nginx/1.24.0\r\nDate: ",
        plan.status, reason
    )
    .unwrap();
    http_date(out, now_secs);
    write!(out, "\r\nContent-Type: {}\r\n", res.ctype).unwrap();
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nCache-Control: no-store\r\n\r\n");
        let mut left = body;
        while left > 0 {
            let n = left.min(4096);
            write!(out, "{:x}\r\n", n).unwrap();
            fill(out, filler, rng, n);
            out.extend_from_slice(b"\r\n");
            left -= n;
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        write!(
            out,
            "Content-Length: {}\r\nConnection: keep-alive\r\n",
            body
        )
        .unwrap();
        if plan.status == 200 {
            write!(
                out,
                "ETag: \"{:08x}-{:x}\"\r\nCache-Control: max-age=3600\r\n",
                rng.next_u32(),
                body
            )
            .unwrap();
        }
        out.extend_from_slice(b"\r\n");
        if res.ctype == "image/jpeg" {
            jpeg(out, filler, rng, body);
        } else {
            fill(out, filler, rng, body);
        }
    }
}

/// A body of `len` bytes (>= 32) shaped like a baseline JPEG: SOI, APP0 (JFIF), SOS, scan data
/// (filler text, which holds no 0xFF byte), EOI; so that tshark's JFIF dissector accepts it.
fn jpeg(out: &mut Vec<u8>, filler: &[u8], rng: &mut Rng, len: usize) {
    const HEAD: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0,
        0, // SOI, APP0
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, // SOS, one component
    ];
    out.extend_from_slice(HEAD);
    fill(out, filler, rng, len - HEAD.len() - 2);
    out.extend_from_slice(&[0xFF, 0xD9]);
}

// ---------------------------------------------------------------------------------------------
// Redis (RESP2)

pub const R_SET: u8 = 0;
pub const R_GET: u8 = 1;
pub const R_GET_MISS: u8 = 2;
pub const R_INCR: u8 = 3;
pub const R_WRONGTYPE: u8 = 4; // LPUSH on a string key
pub const R_ERR: u8 = 5; // INCR on a non-integer value

pub fn redis_pick(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..=34 => R_SET,
        35..=64 => R_GET,
        65..=74 => R_GET_MISS,
        75..=91 => R_INCR,
        92..=95 => R_WRONGTYPE,
        _ => R_ERR,
    }
}

fn bulk(out: &mut Vec<u8>, s: &[u8]) {
    write!(out, "${}\r\n", s.len()).unwrap();
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

fn bulk_key(out: &mut Vec<u8>, prefix: &str, n: u64) {
    let digits = if n == 0 { 1 } else { n.ilog10() as usize + 1 };
    write!(out, "${}\r\n{}{}\r\n", prefix.len() + digits, prefix, n).unwrap();
}

pub fn redis_command(out: &mut Vec<u8>, rng: &mut Rng, filler: &[u8], cmd: u8) {
    let n = rng.below(100_000);
    match cmd {
        R_SET => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            bulk_key(out, "session:", n);
            out.extend_from_slice(b"$100\r\n");
            let s = out.len();
            fill(out, filler, rng, 100);
            for b in &mut out[s..] {
                if *b == b'\n' {
                    *b = b'-';
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        R_GET | R_GET_MISS => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            bulk_key(out, "session:", n);
        }
        R_INCR => {
            out.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n");
            bulk_key(out, "counter:page:", n % 1000);
        }
        R_WRONGTYPE => {
            out.extend_from_slice(b"*3\r\n$5\r\nLPUSH\r\n");
            bulk_key(out, "session:", n);
            bulk(out, b"event");
        }
        _ => {
            out.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n");
            bulk_key(out, "session:", n);
        }
    }
}

pub fn redis_reply(out: &mut Vec<u8>, rng: &mut Rng, filler: &[u8], cmd: u8) {
    match cmd {
        R_SET => out.extend_from_slice(b"+OK\r\n"),
        R_GET => {
            out.extend_from_slice(b"$100\r\n");
            let s = out.len();
            fill(out, filler, rng, 100);
            for b in &mut out[s..] {
                if *b == b'\n' {
                    *b = b'-';
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        R_GET_MISS => out.extend_from_slice(b"$-1\r\n"),
        R_INCR => write!(out, ":{}\r\n", rng.range(1, 5_000_000)).unwrap(),
        R_WRONGTYPE => out.extend_from_slice(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        _ => out.extend_from_slice(b"-ERR value is not an integer or out of range\r\n"),
    }
}

// ---------------------------------------------------------------------------------------------
// MySQL

const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_FOUND_ROWS: u32 = 0x2;
const CLIENT_LONG_FLAG: u32 = 0x4;
const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PS_MULTI_RESULTS: u32 = 0x4_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
const CLIENT_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC;
const SERVER_CAPS: u32 = CLIENT_CAPS | CLIENT_FOUND_ROWS;
const STATUS_AUTOCOMMIT: u16 = 0x0002;

/// Starts a MySQL packet (header patched by `my_end`); returns its start offset.
#[inline]
fn my_begin(out: &mut Vec<u8>) -> usize {
    let s = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    s
}

#[inline]
fn my_end(out: &mut [u8], start: usize, seq: &mut u8) {
    let len = out.len() - start - 4;
    assert!(len < 0xff_ffff);
    out[start..start + 3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
    out[start + 3] = *seq;
    *seq = seq.wrapping_add(1);
}

fn lenenc(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v < 1 << 16 {
        out.push(0xfc);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        out.push(0xfd);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xfe);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    lenenc(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn scramble(out: &mut Vec<u8>, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        out.push(0x21 + rng.below(0x5d) as u8); // printable, never 0
    }
}

pub fn mysql_greeting(out: &mut Vec<u8>, rng: &mut Rng, conn_id: u32) {
    let mut seq = 0;
    let s = my_begin(out);
    out.push(10);
    out.extend_from_slice(b"8.0.36\0");
    out.extend_from_slice(&conn_id.to_le_bytes());
    scramble(out, rng, 8);
    out.push(0);
    out.extend_from_slice(&(SERVER_CAPS as u16).to_le_bytes());
    out.push(0xff); // utf8mb4_0900_ai_ci
    out.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    out.extend_from_slice(&((SERVER_CAPS >> 16) as u16).to_le_bytes());
    out.push(21);
    out.extend_from_slice(&[0; 10]);
    scramble(out, rng, 12);
    out.push(0);
    out.extend_from_slice(b"mysql_native_password\0");
    my_end(out, s, &mut seq);
}

pub fn mysql_login(out: &mut Vec<u8>, rng: &mut Rng) {
    let mut seq = 1;
    let s = my_begin(out);
    out.extend_from_slice(&CLIENT_CAPS.to_le_bytes());
    out.extend_from_slice(&(16u32 << 20).to_le_bytes()); // max packet 16 MiB
    out.push(0xff);
    out.extend_from_slice(&[0; 23]);
    out.extend_from_slice(b"shop_app\0");
    out.push(20);
    for _ in 0..20 {
        out.push(rng.next_u32() as u8);
    }
    out.extend_from_slice(b"shop\0");
    out.extend_from_slice(b"mysql_native_password\0");
    my_end(out, s, &mut seq);
}

/// An OK packet with sequence id `seq`.
pub fn mysql_ok(out: &mut Vec<u8>, seq: u8, affected: u64, insert_id: u64, info: &[u8]) {
    let mut seq = seq;
    let s = my_begin(out);
    out.push(0);
    lenenc(out, affected);
    lenenc(out, insert_id);
    out.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(info);
    my_end(out, s, &mut seq);
}

pub const Q_SELECT: u8 = 0;
pub const Q_INSERT: u8 = 1;
pub const Q_UPDATE: u8 = 2;
pub const Q_MISSING_TABLE: u8 = 3;

pub fn mysql_pick(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..=69 => Q_SELECT,
        70..=84 => Q_INSERT,
        85..=93 => Q_UPDATE,
        _ => Q_MISSING_TABLE,
    }
}

// Column types and flags.
const T_LONG: u8 = 0x03;
const T_LONGLONG: u8 = 0x08;
const T_DATETIME: u8 = 0x0c;
const T_NEWDECIMAL: u8 = 0xf6;
const T_VAR_STRING: u8 = 0xfd;
const F_NOT_NULL: u16 = 0x0001;
const F_PRI: u16 = 0x0002;
const F_UNSIGNED: u16 = 0x0020;
const F_BINARY: u16 = 0x0080;
const F_AUTO_INC: u16 = 0x0200;
const F_NUM: u16 = 0x8000;

struct Col {
    name: &'static str,
    ty: u8,
    len: u32,
    flags: u16,
    decimals: u8,
}

const ID: Col = Col {
    name: "id",
    ty: T_LONGLONG,
    len: 20,
    flags: F_NOT_NULL | F_PRI | F_UNSIGNED | F_AUTO_INC | F_NUM,
    decimals: 0,
};

struct Table {
    name: &'static str,
    cols: &'static [Col],
    filter: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "products",
        cols: &[
            ID,
            Col {
                name: "name",
                ty: T_VAR_STRING,
                len: 1020,
                flags: F_NOT_NULL,
                decimals: 0,
            },
            Col {
                name: "price",
                ty: T_NEWDECIMAL,
                len: 12,
                flags: F_NOT_NULL | F_NUM,
                decimals: 2,
            },
            Col {
                name: "stock",
                ty: T_LONG,
                len: 11,
                flags: F_NOT_NULL | F_NUM,
                decimals: 0,
            },
        ],
        filter: "category_id",
    },
    Table {
        name: "users",
        cols: &[
            ID,
            Col {
                name: "email",
                ty: T_VAR_STRING,
                len: 1020,
                flags: F_NOT_NULL,
                decimals: 0,
            },
            Col {
                name: "created_at",
                ty: T_DATETIME,
                len: 19,
                flags: F_NOT_NULL | F_BINARY,
                decimals: 0,
            },
        ],
        filter: "id",
    },
    Table {
        name: "orders",
        cols: &[
            ID,
            Col {
                name: "user_id",
                ty: T_LONGLONG,
                len: 20,
                flags: F_NOT_NULL | F_UNSIGNED | F_NUM,
                decimals: 0,
            },
            Col {
                name: "total",
                ty: T_NEWDECIMAL,
                len: 12,
                flags: F_NOT_NULL | F_NUM,
                decimals: 2,
            },
            Col {
                name: "status",
                ty: T_VAR_STRING,
                len: 80,
                flags: F_NOT_NULL,
                decimals: 0,
            },
            Col {
                name: "created_at",
                ty: T_DATETIME,
                len: 19,
                flags: F_NOT_NULL | F_BINARY,
                decimals: 0,
            },
        ],
        filter: "user_id",
    },
];

/// COM_QUERY for `kind` on table `t` with parameter `n`.
pub fn mysql_query(out: &mut Vec<u8>, kind: u8, t: u8, n: u32) {
    let mut seq = 0;
    let s = my_begin(out);
    out.push(0x03);
    let tb = &TABLES[t as usize % TABLES.len()];
    match kind {
        Q_SELECT => {
            out.extend_from_slice(b"SELECT ");
            for (i, c) in tb.cols.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(c.name.as_bytes());
            }
            write!(out, " FROM {} WHERE {} = {} ORDER BY id LIMIT 20", tb.name, tb.filter, n).unwrap();
        }
        Q_INSERT => write!(
            out,
            "INSERT INTO orders (user_id, total, status, created_at) VALUES ({}, {}.{:02}, 'new', NOW())",
            n,
            n % 500,
            n % 100
        )
        .unwrap(),
        Q_UPDATE => write!(out, "UPDATE products SET stock = stock - 1 WHERE id = {}", n).unwrap(),
        _ => write!(out, "SELECT id, user_id, total FROM order_archive WHERE user_id = {}", n).unwrap(),
    }
    my_end(out, s, &mut seq);
}

pub fn mysql_quit(out: &mut Vec<u8>) {
    let mut seq = 0;
    let s = my_begin(out);
    out.push(0x01);
    my_end(out, s, &mut seq);
}

fn eof(out: &mut Vec<u8>, seq: &mut u8) {
    let s = my_begin(out);
    out.push(0xfe);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    my_end(out, s, seq);
}

/// The response to `mysql_query(kind, t, n)`.
pub fn mysql_response(out: &mut Vec<u8>, rng: &mut Rng, kind: u8, t: u8, n: u32, insert_id: u64) {
    match kind {
        Q_SELECT => {
            let tb = &TABLES[t as usize % TABLES.len()];
            let mut seq = 1u8;
            let s = my_begin(out);
            lenenc(out, tb.cols.len() as u64);
            my_end(out, s, &mut seq);
            for c in tb.cols {
                let s = my_begin(out);
                lenenc_str(out, b"def");
                lenenc_str(out, b"shop");
                lenenc_str(out, tb.name.as_bytes());
                lenenc_str(out, tb.name.as_bytes());
                lenenc_str(out, c.name.as_bytes());
                lenenc_str(out, c.name.as_bytes());
                out.push(0x0c);
                let charset: u16 = if c.ty == T_VAR_STRING { 255 } else { 63 };
                out.extend_from_slice(&charset.to_le_bytes());
                out.extend_from_slice(&c.len.to_le_bytes());
                out.push(c.ty);
                out.extend_from_slice(&c.flags.to_le_bytes());
                out.push(c.decimals);
                out.extend_from_slice(&[0, 0]);
                my_end(out, s, &mut seq);
            }
            eof(out, &mut seq);
            let rows = if tb.filter == "id" {
                1
            } else {
                rng.range(0, 20)
            };
            for r in 0..rows {
                let s = my_begin(out);
                for c in tb.cols {
                    // Every value is shorter than 251 bytes: a one-byte length, patched after.
                    let lp = out.len();
                    out.push(0);
                    match c.ty {
                        T_LONGLONG | T_LONG => {
                            let x = if c.name == "id" {
                                n as u64 * 20 + r
                            } else {
                                rng.below(100_000)
                            };
                            write!(out, "{}", x).unwrap()
                        }
                        T_NEWDECIMAL => {
                            write!(out, "{}.{:02}", rng.below(1000), rng.below(100)).unwrap()
                        }
                        T_DATETIME => write!(
                            out,
                            "2023-{:02}-{:02} {:02}:{:02}:{:02}",
                            rng.range(1, 12),
                            rng.range(1, 28),
                            rng.below(24),
                            rng.below(60),
                            rng.below(60)
                        )
                        .unwrap(),
                        _ => match c.name {
                            "email" => {
                                write!(out, "user{}@example.com", rng.below(1_000_000)).unwrap()
                            }
                            "status" => out.extend_from_slice(
                                [&b"new"[..], b"paid", b"shipped", b"delivered"]
                                    [rng.below(4) as usize],
                            ),
                            _ => {
                                write!(out, "Product {} deluxe edition", rng.below(10_000)).unwrap()
                            }
                        },
                    }
                    let l = out.len() - lp - 1;
                    debug_assert!(l < 251);
                    out[lp] = l as u8;
                }
                my_end(out, s, &mut seq);
            }
            eof(out, &mut seq);
        }
        Q_INSERT => mysql_ok(out, 1, 1, insert_id, b""),
        // No info string ("Rows matched: ..."): tshark reads it as a length-encoded string and flags it.
        Q_UPDATE => mysql_ok(out, 1, 1, 0, b""),
        _ => {
            let mut seq = 1;
            let s = my_begin(out);
            out.push(0xff);
            out.extend_from_slice(&1146u16.to_le_bytes());
            out.extend_from_slice(b"#42S02Table 'shop.order_archive' doesn't exist");
            my_end(out, s, &mut seq);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DNS

const NAMES: &[&str] = &[
    "api.shop.example.com",
    "cdn.example.com",
    "db-primary.internal.example.com",
    "cache.internal.example.com",
    "auth.example.com",
    "www.example.com",
    "metrics.internal.example.com",
    "queue.internal.example.com",
];
const NX_WORDS: &[&str] = &["old-api", "staging", "canary", "legacy-db", "tmp"];

/// A DNS question, decided at query time and replayed for the response.
#[derive(Clone, Copy)]
pub struct DnsPlan {
    pub id: u16,
    pub nx: bool,
    pub name: u8,
    pub n: u16,
}

pub fn dns_plan(rng: &mut Rng, id: u16) -> DnsPlan {
    let nx = rng.pct(10);
    let name = if nx {
        rng.below(NX_WORDS.len() as u64)
    } else {
        rng.below(NAMES.len() as u64)
    } as u8;
    DnsPlan {
        id,
        nx,
        name,
        n: rng.below(1000) as u16,
    }
}

fn labels(out: &mut Vec<u8>, name: &[u8]) {
    for l in name.split(|&b| b == b'.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// Writes the QNAME; returns its length.
fn qname(out: &mut Vec<u8>, p: &DnsPlan) -> usize {
    let s = out.len();
    if p.nx {
        let w = NX_WORDS[p.name as usize];
        let mut tmp = [0u8; 64];
        let mut c = std::io::Cursor::new(&mut tmp[..]);
        write!(c, "{}{}.example.com", w, p.n).unwrap();
        let l = c.position() as usize;
        labels(out, &tmp[..l]);
    } else {
        labels(out, NAMES[p.name as usize].as_bytes());
    }
    out.len() - s
}

/// Starts a DNS message; with `tcp`, leaves room for the 2-byte length. Returns the message start.
fn dns_begin(out: &mut Vec<u8>, tcp: bool) -> usize {
    if tcp {
        out.extend_from_slice(&[0, 0]);
    }
    out.len()
}

fn dns_end(out: &mut [u8], start: usize, tcp: bool) {
    if tcp {
        let l = (out.len() - start) as u16;
        out[start - 2..start].copy_from_slice(&l.to_be_bytes());
    }
}

pub fn dns_query(out: &mut Vec<u8>, p: &DnsPlan, tcp: bool) {
    let s = dns_begin(out, tcp);
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    qname(out, p);
    out.extend_from_slice(&[0, 1, 0, 1]); // A IN
    dns_end(out, s, tcp);
}

pub fn dns_response(out: &mut Vec<u8>, rng: &mut Rng, p: &DnsPlan, tcp: bool) {
    let s = dns_begin(out, tcp);
    out.extend_from_slice(&p.id.to_be_bytes());
    if p.nx {
        out.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0]);
    } else {
        let an = 1 + rng.below(2) as u8;
        out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, an, 0, 0, 0, 0]);
    }
    let ql = qname(out, p);
    out.extend_from_slice(&[0, 1, 0, 1]);
    if p.nx {
        // SOA of example.com in the authority section; the zone name points into the question.
        let zone = 12 + ql - 13; // "\x07example\x03com\x00" is 13 bytes at the end of QNAME
        let zp = [0xc0 | (zone >> 8) as u8, zone as u8];
        out.extend_from_slice(&zp);
        out.extend_from_slice(&[0, 6, 0, 1]);
        out.extend_from_slice(&900u32.to_be_bytes());
        let rd = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(b"\x03ns1");
        out.extend_from_slice(&zp);
        out.extend_from_slice(b"\x0ahostmaster");
        out.extend_from_slice(&zp);
        for v in [2024010101u32, 7200, 3600, 1_209_600, 300] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let l = (out.len() - rd - 2) as u16;
        out[rd..rd + 2].copy_from_slice(&l.to_be_bytes());
    } else {
        let an = out[s + 7];
        for _ in 0..an {
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            out.extend_from_slice(&300u32.to_be_bytes());
            out.extend_from_slice(&[0, 4, 10, 40]);
            out.push(p.name);
            out.push(1 + rng.below(250) as u8);
        }
    }
    dns_end(out, s, tcp);
}
