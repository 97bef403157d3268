//! HTTP/1.x: request and response framing over one TCP connection.
//!
//! Heads (request line / status line and header fields) are parsed by `httparse`; the
//! framing around them is done here: `Content-Length` bodies, chunked bodies (sizes,
//! extensions, trailers) consumed incrementally, close-delimited response bodies, interim
//! 1xx responses, `HEAD` / 204 / 304 responses without a body, and the switch away from
//! HTTP after `101 Switching Protocols` or a 2xx answer to `CONNECT`.
//!
//! Bodies are never buffered: a partial body is consumed and the rest remembered. A head is
//! only consumed once complete (`feed` returns 0 meanwhile and the caller keeps the bytes).
//!
//! Events, in stream order per direction:
//! * `Event::Request` once the whole request (head and body) has been consumed, with
//!   `resource = "METHOD /path"` (no query) and `text = "METHOD /path?name1=&name2="`
//!   (query values removed, names kept; header fields are never copied).
//! * `Event::Response` once the whole final response has been consumed (`code` and `kind`
//!   are the 3-digit status, `error` is status >= 400). Interim 1xx produce nothing.
//! * `Event::Anomaly` on limit hits and unparsable bytes, followed by resynchronisation on
//!   the next line that looks like a request line (to server) or a status line (to client).
//!   Segment boundaries after discarded bytes count as line starts too (messages usually
//!   start a segment).
//!
//! Counting choices, so that answers pair with what they answer:
//! * A complete request head with a broken request line or header (`GET / HTTP/1.`,
//!   `OPTIONS HTTP/1.1`, as in zeek's methods.pcap; servers answer them with 400/405) is
//!   reported as `Anomaly(Malformed)` then the `Request`, if it starts with an upper-case
//!   method token.
//! * A message whose head was seen but whose body is cut (unparsable chunk size, invalid
//!   `Content-Length`, a `gap()` mid-body, the close mid-body) is reported with the bytes
//!   seen; after `gap()` the report comes with the next `feed` or `close` of that direction.
//! * A head cut by the close whose start line is complete is reported at `close`.

use core::mem::MaybeUninit;

use crate::detect::{Probe, Role};
use crate::event::{Code, RequestText, Resource};
use crate::queue::InlineQueue;
use crate::{Anomaly, Direction, Event, Events, Limits, Request, Response, Session};

/// Header slots kept on the stack (enough for the default `max_http_headers`).
const STACK_HEADERS: usize = 256;
/// Hard ceiling on header slots when the limit asks for more than the stack holds.
const MAX_HEAP_HEADERS: usize = 1 << 16;
/// Largest chunk size accepted (RFC 9112 leaves it open; anything above is garbage).
const MAX_CHUNK_SIZE: u64 = 1 << 40;
/// Longest chunk-size or trailer line (also bounded by `max_buffered`).
const MAX_LINE: usize = 8192;
/// Longest method token the probe accepts.
const MAX_METHOD: usize = 32;

// ---------------------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------------------

/// Is `data` the start of an HTTP/1.x request or response?
///
/// A request line is a token, SP, a target, SP and `HTTP/1.0` or `HTTP/1.1`; a status line
/// is `HTTP/1.0 ` or `HTTP/1.1 ` and three digits. A prefix of either is `NeedMore`.
pub fn probe(data: &[u8]) -> Probe {
    match probe_status_line(data) {
        Probe::No => match probe_request_line(data) {
            // A standard method and an origin-form, absolute or `*` target are evidence
            // enough: a request line can be too long to wait for its version.
            Probe::NeedMore if standard_request_start(data) => Probe::Match(Role::Request),
            p => p,
        },
        p => p,
    }
}

/// `GET /…`, `POST http://…`, `OPTIONS *` and the like, with at least 8 bytes of target.
fn standard_request_start(data: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| {
        data.starts_with(m)
            && data.get(m.len()..).is_some_and(|t| {
                (t.starts_with(b"/")
                    || t.starts_with(b"http://")
                    || t.starts_with(b"https://")
                    || t.starts_with(b"* "))
                    && t.len() >= 8
                    && t.iter()
                        .take(64)
                        .all(|b| b.is_ascii_graphic() || *b == b' ')
            })
    })
}

/// `HTTP/1.[01] DDD` at the start of `data`.
fn probe_status_line(data: &[u8]) -> Probe {
    const PREFIX: &[u8] = b"HTTP/1.";
    for (i, &b) in data.iter().enumerate().take(12) {
        let ok = match i {
            0..=6 => PREFIX.get(i) == Some(&b),
            7 => b == b'0' || b == b'1',
            8 => b == b' ',
            _ => b.is_ascii_digit(),
        };
        if !ok {
            return Probe::No;
        }
    }
    if data.len() >= 12 {
        Probe::Match(Role::Response)
    } else {
        Probe::NeedMore
    }
}

/// `token SP target SP HTTP/1.[01]` at the start of `data`.
fn probe_request_line(data: &[u8]) -> Probe {
    let method = data.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD {
        return Probe::No;
    }
    let Some(rest) = data.get(method..) else {
        return Probe::NeedMore;
    };
    let Some((&sp, rest)) = rest.split_first() else {
        return Probe::NeedMore;
    };
    if method == 0 || sp != b' ' {
        return Probe::No;
    }
    let target = rest.iter().take_while(|b| is_target_byte(**b)).count();
    let Some(rest) = rest.get(target..) else {
        return Probe::NeedMore;
    };
    let Some((&sp, rest)) = rest.split_first() else {
        return Probe::NeedMore;
    };
    if target == 0 || sp != b' ' {
        return Probe::No;
    }
    const VERSION: &[u8] = b"HTTP/1.";
    for (i, &b) in rest.iter().enumerate().take(8) {
        let ok = match VERSION.get(i) {
            Some(&v) => b == v,
            None => b == b'0' || b == b'1',
        };
        if !ok {
            return Probe::No;
        }
    }
    if rest.len() >= 8 {
        Probe::Match(Role::Request)
    } else {
        Probe::NeedMore
    }
}

/// The length of `p` if it is `method SP` followed by target bytes only (a request line
/// waiting for the end of its target), else 0.
fn request_target_prefix(p: &[u8]) -> usize {
    let method = p.iter().take_while(|b| is_tchar(**b)).count();
    let in_target = method > 0
        && method <= MAX_METHOD
        && p.get(method) == Some(&b' ')
        && p.get(method.saturating_add(1)..)
            .is_some_and(|t| t.iter().all(|b| is_target_byte(*b)));
    if in_target {
        p.len()
    } else {
        0
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes a request target may hold on the wire (visible ASCII, or raw UTF-8 from sloppy
/// clients).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

// ---------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (a request without `Content-Length` / `Transfer-Encoding`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses without a length).
    UntilClose,
    /// Unusable framing headers (a `Content-Length` that does not parse, conflicting
    /// lengths, a request whose transfer coding is not chunked).
    Invalid,
}

/// The framing a head's fields announce (RFC 9112 section 6.3). `Transfer-Encoding` wins over
/// `Content-Length`.
fn framing(headers: &[httparse::Header<'_>], request: bool) -> Framing {
    let mut chunked: Option<bool> = None;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let mut last_is_chunked = chunked.unwrap_or(false);
            for coding in h.value.split(|b| *b == b',') {
                let coding = trim_ows(coding);
                if !coding.is_empty() {
                    last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            chunked = Some(last_is_chunked);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|b| *b == b',') {
                match parse_decimal(trim_ows(v)) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            }
        }
    }
    match chunked {
        Some(true) => Framing::Chunked,
        Some(false) if request => Framing::Invalid,
        Some(false) => Framing::UntilClose,
        None if bad_length => Framing::Invalid,
        None => match length {
            Some(n) => Framing::Length(n),
            None if request => Framing::Empty,
            None => Framing::UntilClose,
        },
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e.saturating_add(1));
    v.get(start..end).unwrap_or(&[])
}

/// A non-empty run of ASCII digits as u64 (None on anything else or overflow).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        } else {
            None
        }
    })
}

/// Result of [`parse_chunk_size_line`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkLine {
    /// The line is not complete yet (what is there is valid so far).
    Partial,
    /// A complete line of `len` bytes (CRLF included) announcing `size` bytes of data.
    Complete { len: usize, size: u64 },
    /// Not a chunk-size line, or a size over 2^40.
    Invalid,
    /// No line end within `max_line` bytes.
    TooLong,
}

/// Parse `chunk-size [BWS] *( ";" chunk-ext ) CRLF` (a bare LF is accepted too).
pub fn parse_chunk_size_line(data: &[u8], max_line: usize) -> ChunkLine {
    let mut size: u64 = 0;
    let mut digits = 0usize;
    let mut in_size = true;
    let mut in_ext = false;
    for (i, &b) in data.iter().enumerate() {
        if i >= max_line {
            return ChunkLine::TooLong;
        }
        match b {
            b'\n' | b'\r' => {
                let len = if b == b'\n' {
                    i.saturating_add(1)
                } else {
                    match data.get(i.saturating_add(1)) {
                        Some(b'\n') => i.saturating_add(2),
                        Some(_) => return ChunkLine::Invalid,
                        None => return ChunkLine::Partial,
                    }
                };
                return if digits == 0 {
                    ChunkLine::Invalid
                } else {
                    ChunkLine::Complete { len, size }
                };
            }
            0 => return ChunkLine::Invalid,
            _ if in_ext => {}
            b';' if digits > 0 => {
                in_size = false;
                in_ext = true;
            }
            b' ' | b'\t' if digits > 0 => in_size = false,
            _ if in_size => {
                let Some(v) = (b as char).to_digit(16) else {
                    return ChunkLine::Invalid;
                };
                digits = digits.saturating_add(1);
                size = size.saturating_mul(16).saturating_add(u64::from(v));
                if size > MAX_CHUNK_SIZE {
                    return ChunkLine::Invalid;
                }
            }
            _ => return ChunkLine::Invalid,
        }
    }
    ChunkLine::Partial
}

/// Split a request target into its path and query. Absolute-form targets
/// (`http://host/p?x`) lose scheme and authority; a fragment is dropped; an empty path is
/// `/`. Authority-form (`CONNECT host:443`) and `*` are kept as they are.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let t = match target.bytes().position(|b| b == b'#') {
        Some(p) => target.get(..p).unwrap_or(""),
        None => target,
    };
    // Origin-form (the usual `/path`) cannot be absolute-form: skip the substring search.
    let scheme = if t.starts_with('/') {
        None
    } else {
        t.find("://")
    };
    let t = match scheme {
        Some(p)
            if t.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && t.get(..p).is_some_and(|s| {
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                }) =>
        {
            let after = t.get(p.saturating_add(3)..).unwrap_or("");
            match after.find(['/', '?']) {
                Some(q) => after.get(q..).unwrap_or(""),
                None => "",
            }
        }
        _ => t,
    };
    let (path, query) = match t.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (t, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// Append a path with the values of `;name=value` path parameters removed
/// (`/shop;jsessionid=ABC/x` -> `/shop;jsessionid=/x`).
fn push_path<const N: usize>(t: &mut crate::Text<N>, path: &str) {
    let mut in_param = false;
    let mut in_value = false;
    let mut start = 0usize;
    // Push runs of kept bytes at a time; split points are ASCII so slices stay on
    // character boundaries.
    for (i, b) in path.bytes().enumerate() {
        match b {
            b'/' => {
                if in_value {
                    start = i;
                }
                in_param = false;
                in_value = false;
            }
            b';' if !in_value => in_param = true,
            b'=' if in_param && !in_value => {
                t.push_bytes_lossy(path.as_bytes().get(start..=i).unwrap_or(&[]));
                in_value = true;
            }
            _ => {}
        }
    }
    if !in_value {
        t.push_bytes_lossy(path.as_bytes().get(start..).unwrap_or(&[]));
    }
}

/// `resource = "METHOD /path"`, `text = "METHOD /path?name1=&name2="` (left empty unless
/// `want_text`).
fn describe(method: &str, target: &str, want_text: bool) -> (Resource, RequestText) {
    let (path, query) = split_target(target);
    let mut resource = Resource::new();
    resource.push_bytes_lossy(method.as_bytes());
    resource.push_char(' ');
    push_path(&mut resource, path);
    let mut text = RequestText::new();
    if !want_text {
        return (resource, text);
    }
    text.push_bytes_lossy(method.as_bytes());
    text.push_char(' ');
    push_path(&mut text, path);
    if let Some(q) = query {
        text.push_char('?');
        let mut first = true;
        for name in q
            .split('&')
            .filter_map(|p| p.split_once('=').map(|(n, _)| n))
        {
            if name.is_empty() {
                continue;
            }
            if !first {
                text.push_char('&');
            }
            first = false;
            text.push_bytes_lossy(name.as_bytes());
            text.push_char('=');
        }
    }
    (resource, text)
}

fn status_code(status: u16) -> Code {
    let digits = [
        b'0'.saturating_add(((status / 100) % 10) as u8),
        b'0'.saturating_add(((status / 10) % 10) as u8),
        b'0'.saturating_add((status % 10) as u8),
    ];
    Code::from_bytes_lossy(&digits)
}

/// A parsed head, or why there is none.
enum Head<T> {
    /// Not complete yet; what the start line says when it is complete (`len` is then the
    /// bytes seen so far), for a head cut by the close.
    Partial(Option<T>),
    Done(T),
    TooManyHeaders,
    Invalid,
}

struct ReqHead {
    len: usize,
    method: MethodKind,
    framing: Framing,
    resource: Resource,
    text: RequestText,
}

struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
}

fn parse_request_head<'b>(
    config: &httparse::ParserConfig,
    data: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    want_text: bool,
) -> Head<ReqHead> {
    let mut req = httparse::Request::new(&mut []);
    match config.parse_request_with_uninit_headers(&mut req, data, slots) {
        Ok(httparse::Status::Partial) => Head::Partial(match (req.method, req.path) {
            (Some(method), Some(target)) => {
                let (resource, text) = describe(method, target, want_text);
                Some(ReqHead {
                    len: data.len(),
                    method: MethodKind::of(method),
                    framing: Framing::Empty,
                    resource,
                    text,
                })
            }
            _ => None,
        }),
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Head::Invalid;
            };
            let (resource, text) = describe(method, target, want_text);
            Head::Done(ReqHead {
                len,
                method: MethodKind::of(method),
                framing: framing(req.headers, true),
                resource,
                text,
            })
        }
        Err(httparse::Error::TooManyHeaders) => Head::TooManyHeaders,
        Err(_) => Head::Invalid,
    }
}

fn parse_response_head<'b>(
    config: &httparse::ParserConfig,
    data: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Head<RespHead> {
    let mut resp = httparse::Response::new(&mut []);
    match config.parse_response_with_uninit_headers(&mut resp, data, slots) {
        Ok(httparse::Status::Partial) => Head::Partial(resp.code.map(|status| RespHead {
            len: data.len(),
            status,
            framing: Framing::UntilClose,
        })),
        Ok(httparse::Status::Complete(len)) => match resp.code {
            Some(status) => Head::Done(RespHead {
                len,
                status,
                framing: framing(resp.headers, false),
            }),
            None => Head::Invalid,
        },
        Err(httparse::Error::TooManyHeaders) => Head::TooManyHeaders,
        Err(_) => Head::Invalid,
    }
}

/// A request head httparse rejects but a server would still answer: an upper-case method
/// token at the start (`GET`, `CCM_POST`), then anything on that line (a missing target, a
/// bad version, no spaces), header lines, and the empty line ending the head, all within
/// `max_line` bytes. The target is the first run of visible bytes after the method unless
/// it is the version; the framing comes from the header lines if they parse, else there is
/// no body.
fn lenient_request_head(data: &[u8], max_line: usize, want_text: bool) -> Head<ReqHead> {
    let method_len = data
        .iter()
        .take(MAX_METHOD.saturating_add(1))
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_' || **b == b'-')
        .count();
    if method_len == 0
        || method_len > MAX_METHOD
        || !data.first().is_some_and(u8::is_ascii_uppercase)
    {
        return Head::Invalid;
    }
    match data.get(method_len) {
        None => return Head::Partial(None),
        Some(b' ' | b'\r' | b'\n' | b'/') => {}
        Some(_) => return Head::Invalid,
    }
    let window = data.get(..data.len().min(max_line)).unwrap_or(data);
    let Some(line_end) = window.iter().position(|b| *b == b'\n') else {
        return if data.len() >= max_line {
            Head::Invalid
        } else {
            Head::Partial(None)
        };
    };
    // The empty line: "\n\n" or "\n\r\n" from the end of the request line on.
    let mut end = None;
    let mut i = line_end;
    while let Some(&b) = window.get(i) {
        if b == b'\n' {
            match (
                window.get(i.saturating_add(1)),
                window.get(i.saturating_add(2)),
            ) {
                (Some(b'\n'), _) => {
                    end = Some(i.saturating_add(2));
                    break;
                }
                (Some(b'\r'), Some(b'\n')) => {
                    end = Some(i.saturating_add(3));
                    break;
                }
                _ => {}
            }
        }
        i = i.saturating_add(1);
    }
    let Some(len) = end else {
        return if data.len() >= max_line {
            Head::Invalid
        } else {
            Head::Partial(None)
        };
    };
    let line = data.get(..line_end).unwrap_or(&[]);
    let method = core::str::from_utf8(line.get(..method_len).unwrap_or(&[])).unwrap_or("");
    let after = line.get(method_len..).unwrap_or(&[]);
    let after = after
        .get(after.iter().take_while(|b| **b == b' ').count()..)
        .unwrap_or(&[]);
    let target = after
        .get(..after.iter().take_while(|b| is_target_byte(**b)).count())
        .unwrap_or(&[]);
    let target = if target.starts_with(b"HTTP/") {
        &[][..]
    } else {
        target
    };
    let target = utf8_prefix(target);
    let (resource, text) = if target.is_empty() {
        let text = if want_text {
            RequestText::from_str_lossy(method)
        } else {
            RequestText::new()
        };
        (Resource::from_str_lossy(method), text)
    } else {
        describe(method, target, want_text)
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let block = data.get(line_end.saturating_add(1)..len).unwrap_or(&[]);
    let framing = match httparse::parse_headers(block, &mut slots) {
        Ok(httparse::Status::Complete((_, headers))) => framing(headers, true),
        _ => Framing::Empty,
    };
    // A server that could not parse the request line cannot know it was HEAD or CONNECT:
    // its answer (400 with a body) is framed like any other.
    Head::Done(ReqHead {
        len,
        method: MethodKind::Other,
        framing,
        resource,
        text,
    })
}

/// The longest valid UTF-8 prefix of `b`.
fn utf8_prefix(b: &[u8]) -> &str {
    match core::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(b.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or(""),
    }
}

/// Reuse a header vector's allocation for another buffer lifetime. The vector is emptied
/// first, so no header outlives its buffer; the standard library collects in place (same
/// size and alignment), so the allocation is kept.
fn reuse_headers<'b>(mut v: Vec<httparse::Header<'_>>) -> Vec<httparse::Header<'b>> {
    v.clear();
    v.into_iter().map(|_| httparse::EMPTY_HEADER).collect()
}

/// Where the next line start that looks like a message start is (`dir` picks request
/// lines or status lines). `line_start` says whether `data[0]` starts a line.
/// Returns (bytes to discard, found); not found with fewer than all bytes discarded means
/// a plausible prefix is kept at the end.
fn resync_point(dir: Direction, data: &[u8], line_start: bool) -> (usize, bool) {
    let check = match dir {
        Direction::ToServer => probe_request_line,
        Direction::ToClient => probe_status_line,
    };
    let next_line = |from: usize| -> Option<usize> {
        let rest = data.get(from..)?;
        let p = rest.iter().position(|b| *b == b'\n')?;
        Some(from.saturating_add(p).saturating_add(1))
    };
    let mut i = if line_start {
        0
    } else {
        match next_line(0) {
            Some(i) => i,
            None => return (data.len(), false),
        }
    };
    loop {
        match check(data.get(i..).unwrap_or(&[])) {
            Probe::Match(_) => return (i, true),
            Probe::NeedMore => return (i, false),
            Probe::No => match next_line(i) {
                Some(n) => i = n,
                None => return (data.len(), false),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------

/// What a pending request's method means for its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

impl MethodKind {
    fn of(method: &str) -> Self {
        match method {
            "HEAD" => MethodKind::Head,
            "CONNECT" => MethodKind::Connect,
            _ => MethodKind::Other,
        }
    }
}

/// Where one direction is in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a message head.
    Head,
    /// Fixed-length body: bytes left.
    Length(u64),
    /// Chunked body: expecting a chunk-size line.
    ChunkSize,
    /// Chunked body: chunk data bytes left.
    ChunkData(u64),
    /// Chunked body: the CRLF after chunk data.
    ChunkEnd,
    /// Chunked body: trailer fields seen so far, until an empty line.
    Trailers(usize),
    /// Response body delimited by the close of the connection.
    UntilClose,
    /// Not HTTP any more (after 101 or a CONNECT tunnel): everything is consumed.
    Tunnel,
    /// Discarding bytes until a plausible message start.
    Resync,
}

#[derive(Clone, Copy, Debug)]
struct Half {
    state: State,
    /// Bytes of the current message consumed so far.
    bytes: u64,
    /// The next byte fed starts a line (resync candidates).
    line_start: bool,
    /// A partial head is waiting in the caller's buffer.
    head_partial: bool,
    /// ... and its start line was read (`bytes` then counts what was seen): reported if
    /// the direction closes before the head completes.
    partial_known: bool,
    /// A message cut by `gap()` is still to be reported (at the next feed or close).
    flush: bool,
    /// How far the partial head waiting in the caller's buffer has been scanned (valid
    /// while `head_partial`).
    scan: HeadScan,
    /// In `Resync`, to the server: the caller's buffer starts with this many bytes of a
    /// kept candidate `method SP target-bytes` (a request line still waiting for the end
    /// of its target). While only target bytes follow, the answer cannot change, so the
    /// candidate is not probed again from its start (which would be quadratic for a
    /// request line arriving a byte per segment).
    kept: usize,
}

impl Half {
    const fn new() -> Self {
        Half {
            state: State::Head,
            bytes: 0,
            line_start: true,
            head_partial: false,
            partial_known: false,
            flush: false,
            scan: HeadScan::new(),
            kept: 0,
        }
    }
}

/// An incremental scan of a partial head for what could change the parse: the end of its
/// first line, an empty line (the end of the head), more lines than `max_headers` allows,
/// or reaching `max_line`. A head that
/// arrives a byte per segment is re-fed from its start each time; without this it would be
/// parsed again from its start each time (work growing with the square of its size).
#[derive(Clone, Copy, Debug)]
struct HeadScan {
    /// Bytes of the head scanned.
    at: usize,
    /// A byte other than CR/LF was seen (leading empty lines are skipped by the parser).
    content: bool,
    /// The first line ended.
    newline: bool,
    /// Lines ended so far.
    lines: usize,
    /// 0: inside a line; 1: just after LF; 2: just after LF CR.
    state: u8,
}

impl HeadScan {
    const fn new() -> Self {
        HeadScan {
            at: 0,
            content: false,
            newline: false,
            lines: 0,
            state: 0,
        }
    }

    /// Scan the bytes of `head` not scanned yet; true if the parse must be run again.
    /// Returns the number of bytes scanned in `work`.
    fn advance(&mut self, head: &[u8], limits: (usize, usize), work: &mut u64) -> bool {
        let (max_line, max_headers) = limits;
        let new = head.get(self.at..).unwrap_or(&[]);
        let mut again = self.at < max_line && head.len() >= max_line;
        *work = work.saturating_add(new.len() as u64);
        for &b in new {
            if !self.content {
                self.content = b != b'\r' && b != b'\n';
                continue;
            }
            self.state = match (self.state, b) {
                (1 | 2, b'\n') => {
                    again = true;
                    1
                }
                (0, b'\n') => {
                    again |= !self.newline;
                    self.newline = true;
                    self.lines = self.lines.saturating_add(1);
                    // The start line, max_headers header lines and one more: too many.
                    again |= self.lines == max_headers.saturating_add(2);
                    1
                }
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        self.at = head.len();
        again
    }
}

/// One step of the feed loop: bytes consumed, and whether to keep going.
type Step = (usize, bool);

/// HTTP/1.x session for one connection.
pub struct HttpSession {
    max_buffered: usize,
    max_headers: usize,
    max_line: usize,
    max_pending: usize,
    /// Fill `Request::text` (records are written).
    want_text: bool,
    config: httparse::ParserConfig,
    half: [Half; 2],
    /// The resource of the request being framed (to server), reported at its end.
    req: Resource,
    /// Its record text: only when records are written (else it is empty, so not kept: an
    /// open connection then does not hold 256 bytes for it).
    req_text: Option<Box<RequestText>>,
    /// Status of the response being framed (to client).
    status: u16,
    /// Methods of requests still waiting for their final response (oldest first).
    pending: InlineQueue<MethodKind, 4>,
    /// Header slots when `max_http_headers` exceeds the stack array (else unallocated).
    header_store: Vec<httparse::Header<'static>>,
    /// The last request was CONNECT: bytes that are not a request are tunnel data.
    connect_sent: bool,
    /// Bytes looked at by head parses, head scans and resync probes (tests show it grows
    /// linearly).
    head_work: u64,
}

impl HttpSession {
    pub fn new(limits: &Limits) -> Self {
        let max_buffered = limits.max_buffered.max(1);
        let max_headers = limits
            .max_http_headers
            .min(MAX_HEAP_HEADERS)
            .min(max_buffered.saturating_div(3).saturating_add(1));
        let header_store = if max_headers > STACK_HEADERS {
            Vec::with_capacity(max_headers)
        } else {
            Vec::new()
        };
        let mut config = httparse::ParserConfig::default();
        config
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .ignore_invalid_headers_in_responses(true);
        HttpSession {
            max_buffered,
            max_headers,
            max_line: MAX_LINE.min(max_buffered).max(8),
            max_pending: limits.max_pending,
            want_text: limits.request_text,
            config,
            half: [Half::new(); 2],
            req: Resource::new(),
            req_text: limits.request_text.then(|| Box::new(RequestText::new())),
            status: 0,
            pending: InlineQueue::default(),
            header_store,
            connect_sent: false,
            head_work: 0,
        }
    }

    fn h(&mut self, dir: Direction) -> &mut Half {
        // index() is 0 or 1.
        let [to_server, to_client] = &mut self.half;
        match dir {
            Direction::ToServer => to_server,
            Direction::ToClient => to_client,
        }
    }

    fn hr(&self, dir: Direction) -> &Half {
        let [to_server, to_client] = &self.half;
        match dir {
            Direction::ToServer => to_server,
            Direction::ToClient => to_client,
        }
    }

    /// The request now being framed.
    fn set_req(&mut self, resource: Resource, text: RequestText) {
        self.req = resource;
        if let Some(t) = &mut self.req_text {
            **t = text;
        }
    }

    /// Report the message of `dir` with the bytes consumed so far and expect a new head.
    fn complete(&mut self, dir: Direction, out: &mut Events) {
        let bytes = self.hr(dir).bytes;
        match dir {
            Direction::ToServer => out.push(Event::Request(Request {
                resource: self.req,
                text: self.req_text.as_deref().copied().unwrap_or_default(),
                id: None,
                bytes,
            })),
            Direction::ToClient => {
                let code = status_code(self.status);
                out.push(Event::Response(Response {
                    code,
                    error: self.status >= 400,
                    kind: code,
                    id: None,
                    bytes,
                }));
            }
        }
        let h = self.h(dir);
        h.state = State::Head;
        h.bytes = 0;
    }

    /// Report a message cut by a gap, if any.
    fn flush(&mut self, dir: Direction, out: &mut Events) {
        if self.hr(dir).flush {
            self.h(dir).flush = false;
            let state = self.hr(dir).state;
            self.complete(dir, out);
            self.h(dir).state = state;
        }
    }

    /// Report the message in progress (its head was seen), then `anomaly`, then resync.
    fn abort_body(&mut self, dir: Direction, anomaly: Anomaly, out: &mut Events) -> Step {
        self.complete(dir, out);
        out.push(Event::Anomaly(anomaly));
        let h = self.h(dir);
        h.state = State::Resync;
        h.line_start = true;
        (0, true)
    }

    /// A head that cannot be used: report `anomaly` and resync from the next line.
    fn bad_head(&mut self, dir: Direction, anomaly: Anomaly, out: &mut Events) -> Step {
        out.push(Event::Anomaly(anomaly));
        let h = self.h(dir);
        h.state = State::Resync;
        h.line_start = false;
        h.head_partial = false;
        h.partial_known = false;
        h.bytes = 0;
        (0, true)
    }

    fn enter_tunnel(&mut self) {
        for h in &mut self.half {
            *h = Half {
                state: State::Tunnel,
                ..Half::new()
            };
        }
    }

    fn push_pending(&mut self, kind: MethodKind) {
        if self.max_pending == 0 {
            return;
        }
        if self.pending.len() >= self.max_pending {
            self.pending.pop_front();
        }
        self.pending.push_back(kind);
    }

    /// Parse a head with header slots from the stack or, for large limits, the session's
    /// reusable vector.
    fn parse_head<T>(
        &mut self,
        data: &[u8],
        parse: impl for<'b> FnOnce(
            &httparse::ParserConfig,
            &'b [u8],
            &mut [MaybeUninit<httparse::Header<'b>>],
        ) -> Head<T>,
    ) -> Head<T> {
        self.head_work = self.head_work.saturating_add(data.len() as u64);
        let mut store = reuse_headers(core::mem::take(&mut self.header_store));
        let result = if self.max_headers <= STACK_HEADERS {
            let mut stack =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
            parse(
                &self.config,
                data,
                stack.get_mut(..self.max_headers).unwrap_or_default(),
            )
        } else {
            let n = self.max_headers;
            parse(
                &self.config,
                data,
                store.spare_capacity_mut().get_mut(..n).unwrap_or_default(),
            )
        };
        self.header_store = reuse_headers(store);
        result
    }

    /// A partial head is waiting and nothing that could change its parse has arrived since
    /// the last one: keep waiting without parsing it again.
    fn still_partial(&mut self, dir: Direction, data: &[u8]) -> bool {
        let limits = (self.max_line, self.max_headers);
        let mut work = self.head_work;
        let h = self.h(dir);
        if !h.head_partial || h.scan.at > data.len() {
            return false;
        }
        let again = h.scan.advance(data, limits, &mut work);
        if !again && h.partial_known {
            h.bytes = data.len() as u64;
        }
        self.head_work = work;
        !again
    }

    /// The head in `data` is partial: remember how far it was scanned.
    fn mark_partial(&mut self, dir: Direction, data: &[u8]) {
        let limits = (self.max_line, self.max_headers);
        let mut work = self.head_work;
        let h = self.h(dir);
        h.head_partial = true;
        h.scan = HeadScan::new();
        h.scan.advance(data, limits, &mut work);
        self.head_work = work;
    }

    fn request_head(&mut self, data: &[u8], out: &mut Events) -> Step {
        let dir = Direction::ToServer;
        if self.still_partial(dir, data) {
            return (0, false);
        }
        let want_text = self.want_text;
        let head = match self.parse_head(data, |config, data, slots| {
            parse_request_head(config, data, slots, want_text)
        }) {
            Head::Partial(seen) => {
                self.mark_partial(dir, data);
                let h = self.h(dir);
                h.partial_known = seen.is_some();
                if let Some(head) = seen {
                    h.bytes = head.len as u64;
                    self.set_req(head.resource, head.text);
                }
                return (0, false);
            }
            Head::Invalid if self.connect_sent => {
                // Bytes sent after a CONNECT before its answer: tunnel data.
                *self.h(dir) = Half {
                    state: State::Tunnel,
                    ..Half::new()
                };
                return (0, true);
            }
            Head::Invalid => match lenient_request_head(data, self.max_line, want_text) {
                // A broken head the server will still answer (with 400 or so): count it,
                // flagged, so the answer pairs with it.
                Head::Done(head) => {
                    out.push(Event::Anomaly(Anomaly::Malformed));
                    head
                }
                Head::Partial(_) => {
                    self.mark_partial(dir, data);
                    let h = self.h(dir);
                    h.partial_known = false;
                    return (0, false);
                }
                Head::Invalid | Head::TooManyHeaders => {
                    return self.bad_head(dir, Anomaly::Malformed, out)
                }
            },
            Head::TooManyHeaders => return self.bad_head(dir, Anomaly::LimitExceeded, out),
            Head::Done(head) => head,
        };
        if head.len > self.max_buffered {
            return self.bad_head(dir, Anomaly::LimitExceeded, out);
        }
        self.push_pending(head.method);
        self.connect_sent = head.method == MethodKind::Connect;
        self.set_req(head.resource, head.text);
        let h = self.h(dir);
        h.head_partial = false;
        h.partial_known = false;
        h.bytes = head.len as u64;
        match head.framing {
            Framing::Empty | Framing::Length(0) | Framing::UntilClose => self.complete(dir, out),
            Framing::Length(n) => self.h(dir).state = State::Length(n),
            Framing::Chunked => self.h(dir).state = State::ChunkSize,
            Framing::Invalid => {
                self.abort_body(dir, Anomaly::Malformed, out);
            }
        }
        (head.len, true)
    }

    fn response_head(&mut self, data: &[u8], out: &mut Events) -> Step {
        let dir = Direction::ToClient;
        if self.still_partial(dir, data) {
            return (0, false);
        }
        let head = match self.parse_head(data, parse_response_head) {
            Head::Partial(seen) => {
                self.mark_partial(dir, data);
                let h = self.h(dir);
                h.partial_known = false;
                if let Some(head) = seen.filter(|r| !(100..200).contains(&r.status)) {
                    h.partial_known = true;
                    h.bytes = head.len as u64;
                    self.status = head.status;
                }
                return (0, false);
            }
            Head::Invalid => return self.bad_head(dir, Anomaly::Malformed, out),
            Head::TooManyHeaders => return self.bad_head(dir, Anomaly::LimitExceeded, out),
            Head::Done(head) => head,
        };
        if head.len > self.max_buffered {
            return self.bad_head(dir, Anomaly::LimitExceeded, out);
        }
        let status = head.status;
        let h = self.h(dir);
        h.head_partial = false;
        h.partial_known = false;
        if (100..200).contains(&status) && status != 101 {
            // Interim response: not a response to count, the final one follows.
            h.bytes = 0;
            return (head.len, true);
        }
        h.bytes = head.len as u64;
        self.status = status;
        let method = self.pending.pop_front().unwrap_or(MethodKind::Other);
        if status == 101 || (method == MethodKind::Connect && (200..300).contains(&status)) {
            self.complete(dir, out);
            self.enter_tunnel();
            return (head.len, true);
        }
        if method == MethodKind::Head || status == 204 || status == 304 {
            self.complete(dir, out);
            return (head.len, true);
        }
        match head.framing {
            Framing::Empty | Framing::Length(0) => self.complete(dir, out),
            Framing::Length(n) => self.h(dir).state = State::Length(n),
            Framing::Chunked => self.h(dir).state = State::ChunkSize,
            Framing::UntilClose => self.h(dir).state = State::UntilClose,
            Framing::Invalid => {
                self.abort_body(dir, Anomaly::Malformed, out);
            }
        }
        (head.len, true)
    }

    /// Consume up to `left` body bytes; returns (consumed, left after).
    fn take_body(&mut self, dir: Direction, data: &[u8], left: u64) -> (usize, u64) {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
        let h = self.h(dir);
        h.bytes = h.bytes.saturating_add(n as u64);
        (n, left.saturating_sub(n as u64))
    }

    fn step(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> Step {
        match self.hr(dir).state {
            State::Head => match dir {
                Direction::ToServer => self.request_head(data, out),
                Direction::ToClient => self.response_head(data, out),
            },
            State::Length(left) => {
                let (n, left) = self.take_body(dir, data, left);
                if left == 0 {
                    self.complete(dir, out);
                } else {
                    self.h(dir).state = State::Length(left);
                }
                (n, true)
            }
            State::ChunkSize => match parse_chunk_size_line(data, self.max_line) {
                ChunkLine::Partial => (0, false),
                ChunkLine::Invalid => self.abort_body(dir, Anomaly::Malformed, out),
                ChunkLine::TooLong => self.abort_body(dir, Anomaly::LimitExceeded, out),
                ChunkLine::Complete { len, size } => {
                    let h = self.h(dir);
                    h.bytes = h.bytes.saturating_add(len as u64);
                    h.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                    (len, true)
                }
            },
            State::ChunkData(left) => {
                let (n, left) = self.take_body(dir, data, left);
                self.h(dir).state = if left == 0 {
                    State::ChunkEnd
                } else {
                    State::ChunkData(left)
                };
                (n, true)
            }
            State::ChunkEnd => {
                let n = match data {
                    [b'\r', b'\n', ..] => 2,
                    [b'\n', ..] => 1,
                    [b'\r'] | [] => return (0, false),
                    _ => return self.abort_body(dir, Anomaly::Malformed, out),
                };
                let h = self.h(dir);
                h.bytes = h.bytes.saturating_add(n as u64);
                h.state = State::ChunkSize;
                (n, true)
            }
            State::Trailers(seen) => {
                let window = data.get(..self.max_line.min(data.len())).unwrap_or(data);
                let Some(p) = window.iter().position(|b| *b == b'\n') else {
                    if data.len() >= self.max_line {
                        return self.abort_body(dir, Anomaly::LimitExceeded, out);
                    }
                    return (0, false);
                };
                let len = p.saturating_add(1);
                let empty = p == 0 || (p == 1 && data.first() == Some(&b'\r'));
                if !empty && seen >= self.max_headers {
                    return self.abort_body(dir, Anomaly::LimitExceeded, out);
                }
                let h = self.h(dir);
                h.bytes = h.bytes.saturating_add(len as u64);
                h.state = State::Trailers(seen.saturating_add(1));
                if empty {
                    self.complete(dir, out);
                }
                (len, true)
            }
            State::UntilClose => {
                let h = self.h(dir);
                h.bytes = h.bytes.saturating_add(data.len() as u64);
                (data.len(), false)
            }
            State::Tunnel => (data.len(), false),
            State::Resync => {
                let kept = self.hr(dir).kept;
                if let Some(new) = data.get(kept..).filter(|_| kept > 0) {
                    self.head_work = self.head_work.saturating_add(new.len() as u64);
                    if new.iter().all(|b| is_target_byte(*b)) {
                        self.h(dir).kept = data.len();
                        return (0, false);
                    }
                }
                self.head_work = self.head_work.saturating_add(data.len() as u64);
                let (n, found) = resync_point(dir, data, self.hr(dir).line_start);
                let h = self.h(dir);
                h.kept = 0;
                if found {
                    h.state = State::Head;
                    h.bytes = 0;
                } else {
                    // Either a plausible line start is kept, or everything was discarded:
                    // then the next bytes fed start a new segment, and segment boundaries
                    // are where messages usually start, so they are a candidate too.
                    h.line_start = true;
                    if dir == Direction::ToServer {
                        h.kept = data.get(n..).map_or(0, request_target_prefix);
                    }
                }
                (n, found)
            }
        }
    }
}

impl Session for HttpSession {
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        self.flush(dir, out);
        let mut pos = 0usize;
        let mut idle = 0u8;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or(&[]);
            let (n, go) = self.step(dir, rest, out);
            pos = pos.saturating_add(n).min(data.len());
            if !go {
                break;
            }
            // Every zero-byte step changes state towards progress; this only guards
            // against a bug turning into a busy loop.
            if n == 0 {
                idle = idle.saturating_add(1);
                if idle > 8 {
                    break;
                }
            } else {
                idle = 0;
            }
        }
        pos
    }

    fn gap(&mut self, dir: Direction) {
        let h = self.h(dir);
        // The caller drops its buffer: a kept candidate is gone.
        h.kept = 0;
        // A head cut by the gap whose start line was complete is still a message: report it
        // (with the bytes seen) at the next feed, as a body cut by a gap is.
        let cut_head = h.state == State::Head && h.partial_known;
        h.head_partial = false;
        h.partial_known = false;
        if cut_head {
            h.flush = true;
            h.state = State::Resync;
            h.line_start = true;
            return;
        }
        match h.state {
            // The framing does not depend on the lost bytes.
            State::UntilClose | State::Tunnel => {}
            State::Length(_)
            | State::ChunkSize
            | State::ChunkData(_)
            | State::ChunkEnd
            | State::Trailers(_) => {
                h.flush = true;
                h.state = State::Resync;
                h.line_start = true;
            }
            State::Head | State::Resync => {
                h.state = State::Resync;
                h.line_start = true;
                h.bytes = 0;
            }
        }
    }

    fn close(&mut self, dir: Direction, out: &mut Events) {
        self.flush(dir, out);
        match self.hr(dir).state {
            State::UntilClose
            | State::Length(_)
            | State::ChunkSize
            | State::ChunkData(_)
            | State::ChunkEnd
            | State::Trailers(_) => self.complete(dir, out),
            State::Tunnel => return,
            // A head cut by the close (or by the end of the capture): its start line was
            // complete, so the message exists.
            State::Head if self.hr(dir).partial_known => self.complete(dir, out),
            State::Head | State::Resync => {}
        }
        *self.h(dir) = Half::new();
    }

    fn in_message(&self, dir: Direction) -> bool {
        let h = self.hr(dir);
        h.flush
            || match h.state {
                State::Head => h.head_partial,
                State::Length(_)
                | State::ChunkSize
                | State::ChunkData(_)
                | State::ChunkEnd
                | State::Trailers(_)
                | State::UntilClose => true,
                State::Tunnel | State::Resync => false,
            }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )]

    use super::*;
    use crate::Text;
    use Direction::{ToClient as C, ToServer as S};

    /// One step of a test script.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        D(Direction, &'static [u8]),
        Close(Direction),
    }

    /// Simulates the pipeline: keeps unconsumed bytes per direction, re-feeds them with new
    /// bytes, and calls `gap` when `max_buffered` bytes make no progress.
    struct Caller {
        s: HttpSession,
        buf: [Vec<u8>; 2],
        ev: Events,
        max: usize,
        gaps: usize,
    }

    impl Caller {
        fn new(limits: &Limits) -> Self {
            Caller {
                s: HttpSession::new(limits),
                buf: [Vec::new(), Vec::new()],
                ev: Vec::new(),
                max: limits.max_buffered,
                gaps: 0,
            }
        }

        fn data(&mut self, dir: Direction, bytes: &[u8]) {
            let b = &mut self.buf[dir.index()];
            b.extend_from_slice(bytes);
            let n = self.s.feed(dir, b, &mut self.ev);
            assert!(n <= b.len());
            b.drain(..n);
            if b.len() >= self.max {
                self.s.gap(dir);
                b.clear();
                self.gaps += 1;
            }
        }

        fn op(&mut self, op: Op) {
            match op {
                Op::D(dir, bytes) => self.data(dir, bytes),
                Op::Close(dir) => self.s.close(dir, &mut self.ev),
            }
        }
    }

    #[derive(Clone, Copy)]
    enum Split {
        Whole,
        Bytes,
        /// Op index, offset in its bytes.
        At(usize, usize),
    }

    fn run(ops: &[Op], limits: &Limits, split: Split) -> Caller {
        let mut c = Caller::new(limits);
        for (i, op) in ops.iter().enumerate() {
            match (split, *op) {
                (Split::Bytes, Op::D(dir, bytes)) => {
                    for b in bytes {
                        c.data(dir, core::slice::from_ref(b));
                    }
                }
                (Split::At(j, k), Op::D(dir, bytes)) if i == j => {
                    c.data(dir, &bytes[..k]);
                    c.data(dir, &bytes[k..]);
                }
                _ => c.op(*op),
            }
        }
        c
    }

    /// The events of `ops` fed whole, byte by byte and split at every byte of every chunk
    /// must all equal `expected`.
    fn check_with(ops: &[Op], limits: &Limits, expected: &[Event]) {
        assert_eq!(run(ops, limits, Split::Whole).ev, expected, "whole");
        assert_eq!(run(ops, limits, Split::Bytes).ev, expected, "byte by byte");
        for (i, op) in ops.iter().enumerate() {
            if let Op::D(_, bytes) = op {
                for k in 1..bytes.len() {
                    assert_eq!(
                        run(ops, limits, Split::At(i, k)).ev,
                        expected,
                        "split op {i} at {k}"
                    );
                }
            }
        }
    }

    fn check(ops: &[Op], expected: &[Event]) {
        check_with(ops, &Limits::default(), expected);
    }

    fn req(resource: &str, text: &str, bytes: usize) -> Event {
        Event::Request(Request {
            resource: Text::from_str_lossy(resource),
            text: Text::from_str_lossy(text),
            id: None,
            bytes: bytes as u64,
        })
    }

    fn resp(code: &str, bytes: usize) -> Event {
        Event::Response(Response {
            code: Text::from_str_lossy(code),
            error: code.parse::<u16>().unwrap_or(0) >= 400,
            kind: Text::from_str_lossy(code),
            id: None,
            bytes: bytes as u64,
        })
    }

    fn anomaly(a: Anomaly) -> Event {
        Event::Anomaly(a)
    }

    // ----- probe ------------------------------------------------------------------------

    #[test]
    fn probe_requests_and_responses() {
        assert_eq!(
            probe(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Probe::Match(Role::Request)
        );
        assert_eq!(
            probe(b"POST /api?x=1 HTTP/1.0\r\n"),
            Probe::Match(Role::Request)
        );
        assert_eq!(probe(b"CCM_POST /x HTTP/1.1"), Probe::Match(Role::Request));
        assert_eq!(
            probe(b"OPTIONS * HTTP/1.1\r\n"),
            Probe::Match(Role::Request)
        );
        assert_eq!(
            probe(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            Probe::Match(Role::Request)
        );
        assert_eq!(probe(b"HTTP/1.1 200 OK\r\n"), Probe::Match(Role::Response));
        assert_eq!(probe(b"HTTP/1.0 404"), Probe::Match(Role::Response));
    }

    #[test]
    fn a_standard_method_and_target_are_enough() {
        // The version may be far away (an over-long request line): method and target decide.
        assert_eq!(probe(b"GET /index.html?q=1"), Probe::Match(Role::Request));
        assert_eq!(probe(b"GET / HTTP/1"), Probe::Match(Role::Request));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'A', 5000));
        assert_eq!(probe(&long), Probe::Match(Role::Request));
        // Not for unknown methods or non-path targets.
        assert_eq!(probe(b"FOO /index.html?q=1"), Probe::NeedMore);
        assert_eq!(probe(b"GET key_name_long"), Probe::NeedMore);
    }

    #[test]
    fn probe_prefixes_need_more() {
        for p in [
            &b""[..],
            b"G",
            b"GE",
            b"GET",
            b"GET ",
            b"GET /ind",
            b"GET / ",
        ] {
            assert_eq!(
                probe(p),
                Probe::NeedMore,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        for p in [
            &b"H"[..],
            b"HTTP",
            b"HTTP/1",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.1 20",
        ] {
            assert_eq!(
                probe(p),
                Probe::NeedMore,
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn probe_rejects_other_protocols() {
        // Redis inline and RESP commands, MySQL greeting, TLS, HTTP/2 preface, binary.
        assert_eq!(probe(b"GET key\r\n"), Probe::No);
        assert_eq!(probe(b"SET a b\r\n"), Probe::No);
        assert_eq!(probe(b"PING\r\n"), Probe::No);
        assert_eq!(probe(b"*1\r\n$4\r\nPING\r\n"), Probe::No);
        assert_eq!(probe(b"\x4a\x00\x00\x00\x0a8.0.32\x00"), Probe::No);
        assert_eq!(probe(b"\x16\x03\x01\x00\xc8\x01"), Probe::No);
        assert_eq!(probe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Probe::No);
        assert_eq!(probe(b"HTTP/2 200\r\n"), Probe::No);
        assert_eq!(probe(b"HTTP/1.1 OK\r\n"), Probe::No);
        assert_eq!(probe(b"GET / HTTP/2.0\r\n"), Probe::No);
        assert_eq!(probe(b"GET  / HTTP/1.1\r\n"), Probe::No);
        assert_eq!(probe(b"\x00\x01\x02\x03"), Probe::No);
        assert_eq!(probe(&[b'A'; 40]), Probe::No);
    }

    // ----- basic exchanges --------------------------------------------------------------

    const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    const OK_HELLO: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn single_get() {
        check(
            &[Op::D(S, GET), Op::D(C, OK_HELLO)],
            &[
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn keep_alive_sequence() {
        const R2: &[u8] =
            b"GET /a.css HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n";
        const A2: &[u8] = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n";
        const R3: &[u8] = b"GET /missing HTTP/1.1\r\nHost: example.com\r\n\r\n";
        const A3: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
        check(
            &[
                Op::D(S, GET),
                Op::D(C, OK_HELLO),
                Op::D(S, R2),
                Op::D(C, A2),
                Op::D(S, R3),
                Op::D(C, A3),
            ],
            &[
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len()),
                req("GET /a.css", "GET /a.css", R2.len()),
                resp("304", A2.len()),
                req("GET /missing", "GET /missing", R3.len()),
                resp("404", A3.len()),
            ],
        );
    }

    #[test]
    fn post_with_content_length() {
        const POST: &[u8] = b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nuser=bob&password=hunter2!!";
        const ANS: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: /home\r\nContent-Length: 0\r\n\r\n";
        check(
            &[Op::D(S, POST), Op::D(C, ANS)],
            &[
                req("POST /login", "POST /login", POST.len()),
                resp("302", ANS.len()),
            ],
        );
        // Mid-body the request is in progress and not yet reported.
        let mut c = Caller::new(&Limits::default());
        c.data(S, &POST[..POST.len() - 5]);
        assert!(c.s.in_message(S));
        assert!(c.ev.is_empty());
        c.data(S, &POST[POST.len() - 5..]);
        assert!(!c.s.in_message(S));
        assert_eq!(c.ev.len(), 1);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        // Request body: "Wiki" (4) "pedia" (5, with extensions) then the last chunk with a
        // trailer field.
        const POST: &[u8] =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
4\r\nWiki\r\n5;name=value;flag\r\npedia\r\n0\r\nChecksum: abc\r\nX-Other: 1\r\n\r\n";
        const ANS: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
1A ; ext=\"quoted\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        check(
            &[
                Op::D(S, POST),
                Op::D(C, ANS),
                Op::D(S, GET),
                Op::D(C, OK_HELLO),
            ],
            &[
                req("POST /upload", "POST /upload", POST.len()),
                resp("200", ANS.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn head_response_has_no_body() {
        const HEAD: &[u8] = b"HEAD /big.iso HTTP/1.1\r\nHost: a\r\n\r\n";
        const HEAD_ANS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 734003200\r\n\r\n";
        const HEAD2_ANS: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        check(
            &[
                Op::D(S, HEAD),
                Op::D(C, HEAD_ANS),
                Op::D(S, HEAD),
                Op::D(C, HEAD2_ANS),
                Op::D(S, GET),
                Op::D(C, OK_HELLO),
            ],
            &[
                req("HEAD /big.iso", "HEAD /big.iso", HEAD.len()),
                resp("200", HEAD_ANS.len()),
                req("HEAD /big.iso", "HEAD /big.iso", HEAD.len()),
                resp("200", HEAD2_ANS.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn no_body_for_204_and_304() {
        const A204: &[u8] = b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n";
        // A 304 may carry the Content-Length of the representation; no body follows.
        const A304: &[u8] = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n";
        check(
            &[
                Op::D(S, GET),
                Op::D(S, GET),
                Op::D(S, GET),
                Op::D(C, A204),
                Op::D(C, A304),
                Op::D(C, OK_HELLO),
            ],
            &[
                req("GET /index.html", "GET /index.html", GET.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("204", A204.len()),
                resp("304", A304.len()),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn continue_then_final_is_one_response() {
        const HEAD: &[u8] =
            b"POST /put HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
        const BODY: &[u8] = b"0123456789";
        const CONT: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
        const FINAL: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        check(
            &[
                Op::D(S, HEAD),
                Op::D(C, CONT),
                Op::D(S, BODY),
                Op::D(C, HINTS),
                Op::D(C, FINAL),
            ],
            &[
                req("POST /put", "POST /put", HEAD.len() + BODY.len()),
                resp("201", FINAL.len()),
            ],
        );
    }

    #[test]
    fn upgrade_101_ends_http() {
        const UP: &[u8] = b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        const FRAME: &[u8] = b"\x81\x05Hello";
        check(
            &[
                Op::D(S, UP),
                Op::D(C, SWITCH),
                Op::D(C, FRAME),
                Op::D(S, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
                Op::D(S, GET),
                Op::D(C, OK_HELLO),
                Op::Close(C),
            ],
            &[
                req("GET /chat", "GET /chat", UP.len()),
                resp("101", SWITCH.len()),
            ],
        );
        // The 101 and the first frame in one segment.
        let mut both = SWITCH.to_vec();
        both.extend_from_slice(FRAME);
        let mut c = Caller::new(&Limits::default());
        c.data(S, UP);
        c.data(C, &both);
        assert_eq!(
            c.ev,
            [
                req("GET /chat", "GET /chat", UP.len()),
                resp("101", SWITCH.len())
            ]
        );
        assert!(c.buf[1].is_empty());
        assert!(!c.s.in_message(C));
    }

    #[test]
    fn connect_tunnel() {
        const CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        const EST: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        const HELLO: &[u8] = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00";
        let expected = [
            req(
                "CONNECT example.com:443",
                "CONNECT example.com:443",
                CONNECT.len(),
            ),
            resp("200", EST.len()),
        ];
        check(
            &[
                Op::D(S, CONNECT),
                Op::D(C, EST),
                Op::D(S, HELLO),
                Op::D(C, b"\x16\x03\x03\x00\x02\x02\x00"),
            ],
            &expected,
        );
        // The client may send its TLS hello before the proxy answers: no anomaly.
        check(
            &[
                Op::D(S, CONNECT),
                Op::D(S, HELLO),
                Op::D(C, EST),
                Op::D(C, b"\x16\x03\x03"),
            ],
            &expected,
        );
        // A refused CONNECT keeps HTTP going.
        const DENIED: &[u8] =
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
        check(
            &[
                Op::D(S, CONNECT),
                Op::D(C, DENIED),
                Op::D(S, GET),
                Op::D(C, OK_HELLO),
            ],
            &[
                req(
                    "CONNECT example.com:443",
                    "CONNECT example.com:443",
                    CONNECT.len(),
                ),
                resp("407", DENIED.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn http10_close_delimited() {
        const R10: &[u8] = b"GET /old HTTP/1.0\r\n\r\n";
        const HEAD: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n";
        const B1: &[u8] = b"<html>HTTP/1.1 200 OK inside the body\r\n";
        const B2: &[u8] = b"</html>";
        check(
            &[
                Op::D(S, R10),
                Op::D(C, HEAD),
                Op::D(C, B1),
                Op::D(C, B2),
                Op::Close(C),
            ],
            &[
                req("GET /old", "GET /old", R10.len()),
                resp("200", HEAD.len() + B1.len() + B2.len()),
            ],
        );
        let mut c = Caller::new(&Limits::default());
        c.data(S, R10);
        c.data(C, HEAD);
        c.data(C, B1);
        assert!(c.s.in_message(C));
        assert_eq!(c.ev.len(), 1);
        c.s.close(C, &mut c.ev);
        assert!(!c.s.in_message(C));
        assert_eq!(c.ev.len(), 2);
        // Transfer-Encoding other than chunked on a response: also until the close.
        const GZ: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00";
        check(
            &[Op::D(S, GET), Op::D(C, GZ), Op::Close(C)],
            &[
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", GZ.len()),
            ],
        );
    }

    #[test]
    fn pipelined_five_and_five() {
        const REQS: &[u8] = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
GET /2 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
HEAD /4 HTTP/1.1\r\nHost: a\r\n\r\n\
GET /5?a=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        const RESPS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n2\r\n0\r\n\r\n\
HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n:(";
        // Message sizes, counted by hand from the literals above.
        let (r1, r2, r3, r4, r5) = (28, 28, 51, 29, 32);
        let (a1, a2, a3, a4, a5) = (39, 58, 43, 40, 59);
        assert_eq!(r1 + r2 + r3 + r4 + r5, REQS.len());
        assert_eq!(a1 + a2 + a3 + a4 + a5, RESPS.len());
        check(
            &[Op::D(S, REQS), Op::D(C, RESPS)],
            &[
                req("GET /1", "GET /1", r1),
                req("GET /2", "GET /2", r2),
                req("POST /3", "POST /3", r3),
                req("HEAD /4", "HEAD /4", r4),
                req("GET /5", "GET /5?a=", r5),
                resp("200", a1),
                resp("200", a2),
                resp("201", a3),
                resp("200", a4),
                resp("500", a5),
            ],
        );
    }

    #[test]
    fn error_flag() {
        for (status, error) in [
            (200, false),
            (302, false),
            (399, false),
            (400, true),
            (404, true),
            (500, true),
            (503, true),
        ] {
            let head = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let mut c = Caller::new(&Limits::default());
            c.data(S, GET);
            c.data(C, head.as_bytes());
            match c.ev.get(1) {
                Some(Event::Response(r)) => {
                    assert_eq!(r.error, error, "{status}");
                    assert_eq!(r.code.as_str(), status.to_string());
                    assert_eq!(r.kind.as_str(), status.to_string());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn response_without_request() {
        check(
            &[Op::D(C, OK_HELLO), Op::D(C, OK_HELLO)],
            &[resp("200", OK_HELLO.len()), resp("200", OK_HELLO.len())],
        );
    }

    // ----- text and secrets ------------------------------------------------------------

    fn request_of(bytes: &[u8]) -> Request {
        let mut c = Caller::new(&Limits::default());
        c.data(S, bytes);
        match c.ev.first() {
            Some(Event::Request(r)) => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_values_and_secrets_scrubbed() {
        let r = request_of(
            b"GET /search?q=my+secret&page=2&token=abc123&flag HTTP/1.1\r\nHost: a\r\n\
Authorization: Basic dXNlcjpwYXNzd29yZA==\r\nCookie: session=s3cr3t\r\nProxy-Authorization: Bearer xyz\r\n\r\n",
        );
        assert_eq!(r.resource.as_str(), "GET /search");
        assert_eq!(r.text.as_str(), "GET /search?q=&page=&token=");
        for secret in [
            "secret",
            "abc123",
            "dXNlcjpwYXNzd29yZA",
            "s3cr3t",
            "xyz",
            "flag",
            "Basic",
            "session",
        ] {
            assert!(!r.text.as_str().contains(secret), "{secret}");
            assert!(!r.resource.as_str().contains(secret), "{secret}");
        }
        // Absolute form, fragment, path parameters.
        let r =
            request_of(b"GET http://user:pw@proxy.example:8080/p/q?x=1&y=2#frag HTTP/1.1\r\n\r\n");
        assert_eq!(r.resource.as_str(), "GET /p/q");
        assert_eq!(r.text.as_str(), "GET /p/q?x=&y=");
        let r = request_of(b"GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!((r.resource.as_str(), r.text.as_str()), ("GET /", "GET /"));
        let r = request_of(b"GET https://example.com?k=v HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.resource.as_str(), r.text.as_str()),
            ("GET /", "GET /?k=")
        );
        let r = request_of(b"GET /shop;jsessionid=0123ABCD/cart;v=2?id=7 HTTP/1.1\r\n\r\n");
        assert_eq!(r.resource.as_str(), "GET /shop;jsessionid=/cart;v=");
        assert_eq!(r.text.as_str(), "GET /shop;jsessionid=/cart;v=?id=");
        let r = request_of(b"GET /r?next=http://evil/x HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.resource.as_str(), r.text.as_str()),
            ("GET /r", "GET /r?next=")
        );
        let r = request_of(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(r.resource.as_str(), "OPTIONS *");
        let r = request_of(b"GET /query?1590632942 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.resource.as_str(), r.text.as_str()),
            ("GET /query", "GET /query?")
        );
    }

    #[test]
    fn long_targets_are_cut() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 500));
        line.extend_from_slice(b"?k=");
        line.extend(std::iter::repeat_n(b'v', 500));
        line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let r = request_of(&line);
        assert_eq!(r.resource.len(), 96);
        assert!(r.resource.is_cut());
        assert_eq!(r.text.len(), 256);
        assert!(!r.text.as_str().contains('v'));
        assert_eq!(r.bytes, line.len() as u64);
    }

    // ----- limits, garbage, resync ------------------------------------------------------

    fn many_headers(n: usize) -> Vec<u8> {
        let mut v = b"GET /many HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn too_many_headers_then_recovery() {
        let mut bytes = many_headers(300);
        bytes.extend_from_slice(GET);
        let mut c = Caller::new(&Limits::default());
        c.data(S, &bytes);
        assert_eq!(
            c.ev,
            [
                anomaly(Anomaly::LimitExceeded),
                req("GET /index.html", "GET /index.html", GET.len())
            ]
        );
        assert!(c.buf[0].is_empty());
        // Exactly at the limit is fine.
        let ok = many_headers(256);
        assert_eq!(request_of(&ok).bytes, ok.len() as u64);
    }

    #[test]
    fn large_header_limit_uses_reused_vector() {
        let limits = Limits {
            max_http_headers: 1000,
            ..Limits::default()
        };
        let bytes = many_headers(600);
        let mut c = Caller::new(&limits);
        let cap = c.s.header_store.capacity();
        assert!(cap >= 1000);
        c.data(S, &bytes);
        c.data(S, &bytes);
        assert_eq!(
            c.ev,
            [
                req("GET /many", "GET /many", bytes.len()),
                req("GET /many", "GET /many", bytes.len())
            ]
        );
        assert_eq!(c.s.header_store.capacity(), cap, "allocation kept");
        let mut c = Caller::new(&limits);
        c.data(S, &many_headers(1001));
        assert_eq!(c.ev, [anomaly(Anomaly::LimitExceeded)]);
    }

    #[test]
    fn endless_request_line_needs_gap_then_recovers() {
        let limits = Limits {
            max_buffered: 256,
            ..Limits::default()
        };
        let mut c = Caller::new(&limits);
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'x', 300));
        for chunk in line.chunks(100) {
            c.data(S, chunk);
        }
        assert!(c.ev.is_empty());
        assert_eq!(c.gaps, 1, "feed returned 0 until the caller gave up");
        // The rest of the endless line, its headers, then a valid request.
        c.data(S, b"yyyy HTTP/1.1\r\nHost: a\r\n\r\n");
        c.data(S, GET);
        c.data(C, OK_HELLO);
        assert_eq!(
            c.ev,
            [
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", OK_HELLO.len())
            ]
        );
        assert_eq!(c.gaps, 1);
    }

    #[test]
    fn head_over_max_buffered_in_one_feed() {
        let limits = Limits {
            max_buffered: 256,
            ..Limits::default()
        };
        let mut big = b"GET /big HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'p', 400));
        big.extend_from_slice(b"\r\n\r\n");
        big.extend_from_slice(GET);
        let mut s = HttpSession::new(&limits);
        let mut ev = Vec::new();
        let n = s.feed(S, &big, &mut ev);
        assert_eq!(n, big.len());
        assert_eq!(
            ev,
            [
                anomaly(Anomaly::LimitExceeded),
                req("GET /index.html", "GET /index.html", GET.len())
            ]
        );
    }

    #[test]
    fn chunk_size_garbage_is_malformed() {
        const HEAD: &[u8] = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        const GOOD: &[u8] = b"3\r\nabc\r\n";
        const BAD: &[u8] = b"zz\r\nsomething\r\n";
        check(
            &[Op::D(S, HEAD), Op::D(S, GOOD), Op::D(S, BAD), Op::D(S, GET)],
            &[
                req("POST /c", "POST /c", HEAD.len() + GOOD.len()),
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
        // 2^40 + 1 is over the bound; 2^40 itself is accepted.
        const HUGE: &[u8] = b"10000000001\r\n";
        check(
            &[Op::D(S, HEAD), Op::D(S, HUGE), Op::D(S, GET)],
            &[
                req("POST /c", "POST /c", HEAD.len()),
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
        assert_eq!(
            parse_chunk_size_line(b"10000000000\r\n", 100),
            ChunkLine::Complete {
                len: 13,
                size: 1 << 40
            }
        );
        // Data not followed by CRLF.
        check(
            &[Op::D(S, HEAD), Op::D(S, b"3\r\nabcX\r\n"), Op::D(S, GET)],
            &[
                req("POST /c", "POST /c", HEAD.len() + 6),
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
    }

    #[test]
    fn chunk_size_line_parser() {
        assert_eq!(
            parse_chunk_size_line(b"4\r\nWiki", 100),
            ChunkLine::Complete { len: 3, size: 4 }
        );
        assert_eq!(
            parse_chunk_size_line(b"fF;a=b;c\r\n", 100),
            ChunkLine::Complete { len: 10, size: 255 }
        );
        assert_eq!(
            parse_chunk_size_line(b"a \t;x\r\n", 100),
            ChunkLine::Complete { len: 7, size: 10 }
        );
        assert_eq!(
            parse_chunk_size_line(b"0\n", 100),
            ChunkLine::Complete { len: 2, size: 0 }
        );
        assert_eq!(parse_chunk_size_line(b"1a", 100), ChunkLine::Partial);
        assert_eq!(parse_chunk_size_line(b"1a\r", 100), ChunkLine::Partial);
        assert_eq!(parse_chunk_size_line(b"", 100), ChunkLine::Partial);
        assert_eq!(parse_chunk_size_line(b"\r\n", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b" 1\r\n", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b";x\r\n", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b"1 2\r\n", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b"-1\r\n", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b"1\rx", 100), ChunkLine::Invalid);
        assert_eq!(parse_chunk_size_line(b"1;\0\r\n", 100), ChunkLine::Invalid);
        assert_eq!(
            parse_chunk_size_line(b"ffffffffffffffffffff\r\n", 100),
            ChunkLine::Invalid
        );
        assert_eq!(
            parse_chunk_size_line(b"1;aaaaaaaaaa", 8),
            ChunkLine::TooLong
        );
    }

    #[test]
    fn invalid_content_length() {
        const BAD: &[u8] = b"POST /x HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n";
        check(
            &[Op::D(S, BAD), Op::D(S, b"body bytes\r\n"), Op::D(S, GET)],
            &[
                req("POST /x", "POST /x", BAD.len()),
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
        const CONFLICT: &[u8] =
            b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        check(
            &[Op::D(S, CONFLICT)],
            &[
                req("POST /x", "POST /x", CONFLICT.len()),
                anomaly(Anomaly::Malformed),
            ],
        );
        // Repeated identical values are one length (RFC 9110 8.6).
        const SAME: &[u8] = b"POST /x HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc";
        check(&[Op::D(S, SAME)], &[req("POST /x", "POST /x", SAME.len())]);
        // Transfer-Encoding wins over Content-Length.
        const BOTH: &[u8] = b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        check(&[Op::D(S, BOTH)], &[req("POST /x", "POST /x", BOTH.len())]);
    }

    #[test]
    fn malformed_heads_resync() {
        // Garbage, then a request; a bad header line inside a head.
        const JUNK: &[u8] = b"\x00\x01binary junk\r\nmore junk\r\nGET / HTTP/2.0\r\n";
        const BAD_HDR: &[u8] = b"GET /bad HTTP/1.1\r\nBad Header\x01: x\r\n\r\n";
        check(
            &[
                Op::D(S, JUNK),
                Op::D(S, GET),
                Op::D(S, BAD_HDR),
                Op::D(S, GET),
            ],
            &[
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
                // A complete head with a bad header line is still a request (flagged).
                anomaly(Anomaly::Malformed),
                req("GET /bad", "GET /bad", BAD_HDR.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
        const BAD_STATUS: &[u8] = b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n";
        check(
            &[
                Op::D(C, BAD_STATUS),
                Op::D(C, b"junk\r\n"),
                Op::D(C, OK_HELLO),
            ],
            &[anomaly(Anomaly::Malformed), resp("200", OK_HELLO.len())],
        );
    }

    #[test]
    fn broken_request_lines_still_count() {
        // Request lines servers answer with 400/405 (as in zeek's methods.pcap).
        const NO_TARGET: &[u8] = b"OPTIONS HTTP/1.1\r\nHost: www.google.com\r\n\r\n";
        const BAD_VERSION: &[u8] = b"HEAD / HTTP/1.\r\nHost: www.google.com\r\n\r\n";
        const NO_SPACE: &[u8] = b"GET/HTTP/1.1\r\nHost: www.google.com\r\n\r\n";
        const ANS_400: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad";
        check(
            &[Op::D(S, NO_TARGET), Op::D(C, ANS_400)],
            &[
                anomaly(Anomaly::Malformed),
                req("OPTIONS", "OPTIONS", NO_TARGET.len()),
                resp("400", ANS_400.len()),
            ],
        );
        // The server could not see HEAD in a broken line: its answer has a body.
        check(
            &[
                Op::D(S, BAD_VERSION),
                Op::D(C, ANS_400),
                Op::D(S, NO_SPACE),
                Op::D(C, ANS_400),
            ],
            &[
                anomaly(Anomaly::Malformed),
                req("HEAD /", "HEAD /", BAD_VERSION.len()),
                resp("400", ANS_400.len()),
                anomaly(Anomaly::Malformed),
                req("GET /HTTP/1.1", "GET /HTTP/1.1", NO_SPACE.len()),
                resp("400", ANS_400.len()),
            ],
        );
        // A broken line with a Content-Length body.
        const POST: &[u8] = b"POST /x HTTP/1.\r\nContent-Length: 4\r\n\r\nbody";
        check(
            &[Op::D(S, POST), Op::D(S, GET)],
            &[
                anomaly(Anomaly::Malformed),
                req("POST /x", "POST /x", POST.len()),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
        // Lower-case or binary starts are not requests.
        check(
            &[Op::D(S, b"hello there\r\n\r\n"), Op::D(S, GET)],
            &[
                anomaly(Anomaly::Malformed),
                req("GET /index.html", "GET /index.html", GET.len()),
            ],
        );
    }

    #[test]
    fn heads_cut_by_the_close() {
        // The capture (or the connection) ends inside a head whose start line is complete.
        const REQ_START: &[u8] = b"POST /biz?channel=web HTTP/1.1\r\nhost: a\r\ncontent-len";
        const RESP_START: &[u8] = b"HTTP/1.0 200 OK\r\n";
        check(
            &[
                Op::D(S, REQ_START),
                Op::D(C, RESP_START),
                Op::Close(S),
                Op::Close(C),
            ],
            &[
                req("POST /biz", "POST /biz?channel=", REQ_START.len()),
                resp("200", RESP_START.len()),
            ],
        );
        // Without a complete start line, or with an interim status, nothing is reported.
        check(
            &[
                Op::D(S, b"POST /biz?chan"),
                Op::D(C, b"HTTP/1.1 100 Continue\r\n"),
                Op::Close(S),
                Op::Close(C),
            ],
            &[],
        );
    }

    #[test]
    fn resync_keeps_a_straddling_method() {
        let mut s = HttpSession::new(&Limits::default());
        let mut ev = Vec::new();
        s.gap(S);
        // The first line is not a request line: skipped; "GE" after the newline could be a
        // method: kept.
        let data = b"tail of something lost\r\nGE";
        let n = s.feed(S, data, &mut ev);
        assert_eq!(n, data.len() - 2);
        assert!(ev.is_empty());
        // The caller re-feeds "GE" with what follows: the whole GET.
        let n = s.feed(S, GET, &mut ev);
        assert_eq!(n, GET.len());
        assert_eq!(ev, [req("GET /index.html", "GET /index.html", GET.len())]);
        // Nothing plausible at all: everything is consumed (no stall).
        s.gap(S);
        let junk = [0xffu8; 5000];
        assert_eq!(s.feed(S, &junk, &mut ev), junk.len());
    }

    #[test]
    fn gap_mid_body_reports_the_cut_message() {
        const HEAD: &[u8] = b"POST /up HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
        let mut c = Caller::new(&Limits::default());
        c.data(S, HEAD);
        c.data(S, &[b'x'; 100]);
        assert!(c.s.in_message(S));
        c.s.gap(S);
        assert!(c.s.in_message(S));
        c.data(S, &[b'y'; 50]);
        c.data(S, GET);
        assert_eq!(
            c.ev,
            [
                req("POST /up", "POST /up", HEAD.len() + 100),
                req("GET /index.html", "GET /index.html", GET.len())
            ]
        );
        // A close-delimited body survives a gap.
        let mut c = Caller::new(&Limits::default());
        c.data(S, GET);
        c.data(C, b"HTTP/1.0 200 OK\r\n\r\nabc");
        c.s.gap(C);
        c.data(C, b"def");
        c.s.close(C, &mut c.ev);
        assert_eq!(
            c.ev,
            [
                req("GET /index.html", "GET /index.html", GET.len()),
                resp("200", 25)
            ]
        );
    }

    #[test]
    fn close_mid_body_reports_truncated_response() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        check(
            &[Op::D(C, HEAD), Op::D(C, b"0123456789"), Op::Close(C)],
            &[resp("200", HEAD.len() + 10)],
        );
    }

    #[test]
    fn trailer_limit() {
        let limits = Limits {
            max_http_headers: 2,
            ..Limits::default()
        };
        const MSG: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        // Head (47) + last chunk (3) + two trailers (12) reported, then the limit.
        check_with(
            &[Op::D(C, MSG), Op::D(C, OK_HELLO)],
            &limits,
            &[
                resp("200", 62),
                anomaly(Anomaly::LimitExceeded),
                resp("200", OK_HELLO.len()),
            ],
        );
    }

    #[test]
    fn lenient_line_endings_and_leading_crlf() {
        const LF: &[u8] = b"GET /lf HTTP/1.1\nHost: a\n\n";
        const POST: &[u8] = b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nab";
        // Old clients add a CRLF after a POST body; it is skipped with the next head.
        const NEXT: &[u8] = b"\r\nGET /n HTTP/1.1\r\n\r\n";
        check(
            &[Op::D(S, LF), Op::D(S, POST), Op::D(S, NEXT)],
            &[
                req("GET /lf", "GET /lf", LF.len()),
                req("POST /p", "POST /p", POST.len()),
                req("GET /n", "GET /n", NEXT.len()),
            ],
        );
    }

    #[test]
    fn in_message_tracks_partial_heads_and_bodies() {
        let mut c = Caller::new(&Limits::default());
        assert!(!c.s.in_message(S));
        c.data(S, &GET[..10]);
        assert!(c.s.in_message(S));
        c.data(S, &GET[10..]);
        assert!(!c.s.in_message(S));
        c.data(
            C,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        );
        assert!(c.s.in_message(C));
        c.data(C, b"cde\r\n0\r\n\r\n");
        assert!(!c.s.in_message(C));
        assert_eq!(c.ev.len(), 2);
    }

    #[test]
    fn pending_ring_is_bounded() {
        let limits = Limits {
            max_pending: 4,
            ..Limits::default()
        };
        let mut c = Caller::new(&limits);
        for _ in 0..10 {
            c.data(S, GET);
        }
        assert_eq!(c.s.pending.len(), 4);
        let limits = Limits {
            max_pending: 0,
            ..Limits::default()
        };
        let mut c = Caller::new(&limits);
        c.data(S, b"HEAD / HTTP/1.1\r\n\r\n");
        // No method memory: the response is assumed not to answer HEAD.
        c.data(C, OK_HELLO);
        assert_eq!(c.ev.len(), 2);
        assert!(c.buf[1].is_empty());
    }

    #[test]
    fn split_target_forms() {
        assert_eq!(split_target("/a/b?c=d"), ("/a/b", Some("c=d")));
        assert_eq!(split_target("/a#frag?x"), ("/a", None));
        assert_eq!(split_target("http://h:80"), ("/", None));
        assert_eq!(split_target("HTTP://h/x?"), ("/x", Some("")));
        assert_eq!(split_target("h:443"), ("h:443", None));
        assert_eq!(split_target("/x://y"), ("/x://y", None));
    }

    /// A 60 KB head (request and response) fed one byte per segment, as the pipeline
    /// re-feeds it (the caller keeps the unconsumed bytes): the work done on it is
    /// linear in its size. Parsing it again from its start on each feed would look at
    /// about n²/2 = 1.8 × 10⁹ bytes.
    #[test]
    fn a_head_arriving_a_byte_at_a_time_costs_linear_work() {
        let mut head = b"GET /slow?q=1 HTTP/1.1\r\n".to_vec();
        let mut answer = b"HTTP/1.1 404 Not Found\r\n".to_vec();
        for i in 0..200 {
            for h in [&mut head, &mut answer] {
                h.extend_from_slice(format!("X-Pad-{i}: ").as_bytes());
                h.extend(std::iter::repeat_n(b'p', 290));
                h.extend_from_slice(b"\r\n");
            }
        }
        head.extend_from_slice(b"\r\n");
        answer.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert!(head.len() > 60_000 && head.len() < Limits::default().max_buffered);
        let mut c = Caller::new(&Limits::default());
        for b in &head {
            c.data(S, core::slice::from_ref(b));
        }
        for b in &answer {
            c.data(C, core::slice::from_ref(b));
        }
        assert_eq!(
            c.ev,
            [
                req("GET /slow", "GET /slow?q=", head.len()),
                resp("404", answer.len())
            ]
        );
        assert_eq!(c.gaps, 0);
        let n = (head.len() + answer.len()) as u64;
        // Each byte scanned once, each head parsed a handful of times (first byte, end of
        // the start line, max_line, the end).
        assert!(
            c.s.head_work <= 6 * n,
            "{} bytes of work for {n} bytes of heads",
            c.s.head_work
        );
        println!("head work: {} bytes for {n} bytes of heads", c.s.head_work);
    }

    /// A head with more header lines than allowed, arriving a byte at a time, is still
    /// refused as soon as the extra line ends (not only once it is complete).
    #[test]
    fn too_many_headers_found_while_the_head_is_partial() {
        let limits = Limits {
            max_http_headers: 4,
            ..Limits::default()
        };
        let mut c = Caller::new(&limits);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..6 {
            head.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        for b in &head {
            c.data(S, core::slice::from_ref(b));
        }
        // Never completed, but the limit is seen: the anomaly, then nothing at the close.
        c.op(Op::Close(S));
        assert_eq!(c.ev, [anomaly(Anomaly::LimitExceeded)]);
    }

    /// After unparsable bytes, a 60 KB request line arriving a byte per segment is probed
    /// as a resync candidate with linear work, then counted.
    #[test]
    fn a_resync_candidate_arriving_a_byte_at_a_time_costs_linear_work() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'A', 60_000));
        line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let mut c = Caller::new(&Limits::default());
        c.data(S, b"\x01\x02 not http\r\n");
        for b in &line {
            c.data(S, core::slice::from_ref(b));
        }
        assert_eq!(c.gaps, 0);
        assert_eq!(c.ev.first(), Some(&anomaly(Anomaly::Malformed)));
        match c.ev.get(1) {
            Some(Event::Request(r)) => assert_eq!(r.bytes, line.len() as u64),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.ev.len(), 2);
        let n = line.len() as u64;
        // A constant number of whole passes: the line is probed again from its start for
        // each byte of " HTTP/1.1" (the target has ended), then parsed as a head. Probing it
        // again for every byte of the target would be about n²/2 = 1.8 × 10⁹.
        assert!(
            c.s.head_work <= 20 * n,
            "{} bytes of work for {n}",
            c.s.head_work
        );
    }
}
