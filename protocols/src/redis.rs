//! Redis: RESP2 and RESP3 over one TCP connection, both directions, streaming.
//!
//! * Client → server: each command is a RESP array of bulk strings (`*<n>` then `$<len>`
//!   elements) or an inline line (text up to `\n` or `\r\n`; blank lines are not commands).
//!   It becomes one `Event::Request` once consumed, with `resource` = the command name
//!   uppercased and `text` = the name and its arguments separated by spaces, each argument
//!   cut to 32 bytes (marked `...`), binary bytes shown as `?`, and secrets replaced by `?`:
//!   every `AUTH` argument, `HELLO … AUTH <user> <pass>`, `CONFIG SET requirepass|masterauth|
//!   tls-key-file-pass|tls-client-key-file-pass <v>`, `MIGRATE … AUTH <pw>` / `AUTH2 <user>
//!   <pw>`, `ACL SETUSER` password rules (`>pw`, `<pw`, `#hash`, `!hash`) and `SENTINEL …
//!   auth-pass|sentinel-pass <pw>`.
//! * Server → client: each complete top-level reply becomes one `Event::Response` with
//!   `kind` = its type ("simple", "error", "integer", "bulk", "nil", "array", "map", "set",
//!   "double", "boolean", "bignum", "verbatim", "push"), `code` = "OK", or for an error reply
//!   (`-…` or a `!` blob error) the first word of the message ("ERR", "WRONGTYPE") with
//!   `error = true`. RESP3 attributes (`|`) only decorate the reply that follows them; their
//!   bytes count in that reply's `bytes`.
//! * Pub/sub: a (P|S)(UN)SUBSCRIBE command is one request answered by one response, the
//!   first confirmation; the other confirmations (one per channel, or for an argument-less
//!   UNSUBSCRIBE one per channel then subscribed, learnt from the counts in confirmations)
//!   are consumed silently, as are published messages (`message`, `pmessage`, `smessage`
//!   arrays while subscribed) and every RESP3 push (`>`) that is not a confirmation.
//!
//! The value reader ([`Reader`]) is iterative: nesting is an explicit stack of remaining
//! element counts bounded by `Limits::max_resp_depth`, declared counts are checked against
//! `Limits::max_resp_elements` and never allocate. It is incremental: only one header line
//! (at most `Limits::max_buffered` bytes) is ever needed; bulk strings of any size are
//! consumed piece by piece. Streamed strings (`$?` with `;` chunks) and streamed aggregates
//! (`*?` … `.`) are followed. Anomalies (`LimitExceeded`, `Malformed`) are reported once per
//! bad stretch and followed by resynchronisation: to the server on a line beginning
//! `*<digits>\r\n$`, to the client on a line beginning with a RESP type byte and a
//! well-formed header.
//!
//! The commonest messages skip the line-by-line walk when all of one is buffered
//! (`Reader::whole_message`: a command of up to 16 arguments, a scalar or bulk reply): the
//! same visitor calls and the same end state, with a quarter less work a command. Debug
//! builds and this crate's tests check that equivalence on every feed.

use smallvec::SmallVec;

use crate::detect::{Probe, Role};
use crate::event::{Code, RequestText, Resource};
use crate::queue::InlineQueue;
use crate::{Anomaly, Direction, Event, Events, Limits, Request, Response, Session};

/// Largest bulk string (or streamed-string chunk) followed: Redis' default
/// `proto-max-bulk-len` (512 MiB).
pub const MAX_BULK: u64 = 512 * 1024 * 1024;
/// Bytes of each argument shown in `Request.text`.
const ARG_KEEP: usize = 32;
/// Longest header line a resynchronising reader (or the probe) examines.
const CANDIDATE_LINE: usize = 512;
/// Bytes of a reply's first element kept to recognise pub/sub arrays.
const WORD: usize = 16;
/// Longest error code kept (the capacity of `Code`).
const CODE_KEEP: usize = 32;
/// Longest command name the probe accepts as the first bulk string of a command.
const PROBE_MAX_NAME: i64 = 64;
/// Bytes the probe looks at for the end of an inline line.
const PROBE_LINE: usize = 1024;

// ---------------------------------------------------------------------------------------
// Header lines (pure)

/// What a RESP header line carries after its type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val<'a> {
    /// Simple string, simple error, double or big number text.
    Line(&'a [u8]),
    /// `:` integer.
    Int(i64),
    /// Declared length (bulk, verbatim, blob error) or count (aggregates; pairs for maps and
    /// attributes); -1 is the RESP2 null bulk / null array.
    Len(i64),
    /// `?`: a streamed string or aggregate follows.
    Streamed,
    /// `#t` / `#f`.
    Bool(bool),
    /// `_`.
    Null,
    /// `.`: end of a streamed aggregate.
    End,
    /// `;<len>`: one chunk of a streamed string (0 ends it).
    Chunk(u64),
}

/// One parsed header line: type byte and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub ty: u8,
    pub val: Val<'a>,
}

fn is_aggregate(ty: u8) -> bool {
    matches!(ty, b'*' | b'%' | b'~' | b'>' | b'|')
}

/// Type bytes that may begin a value.
fn is_value_type(ty: u8) -> bool {
    matches!(
        ty,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b'#'
            | b','
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'>'
            | b'|'
    )
}

/// A signed decimal as Redis writes it (`-` allowed, no `+`, at most 19 digits).
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v
            .checked_mul(10)?
            .checked_add(i64::from(d.wrapping_sub(b'0')))?;
    }
    if neg {
        v.checked_neg()
    } else {
        Some(v)
    }
}

/// Parse one header line (type byte and content, without the CRLF).
pub fn parse_header(line: &[u8]) -> Result<Header<'_>, Anomaly> {
    let bad = Anomaly::Malformed;
    let (&ty, content) = line.split_first().ok_or(bad)?;
    let val = match ty {
        b'+' | b'-' => Val::Line(content),
        b':' => Val::Int(parse_i64(content).ok_or(bad)?),
        b'$' | b'=' | b'!' | b'*' | b'%' | b'~' | b'>' | b'|' => {
            if content == b"?" {
                if matches!(ty, b'=' | b'!') {
                    return Err(bad);
                }
                Val::Streamed
            } else {
                let n = parse_i64(content).ok_or(bad)?;
                if n < -1 || (n == -1 && !matches!(ty, b'$' | b'*')) {
                    return Err(bad);
                }
                Val::Len(n)
            }
        }
        b'_' if content.is_empty() => Val::Null,
        b'#' => match content {
            b"t" => Val::Bool(true),
            b"f" => Val::Bool(false),
            _ => return Err(bad),
        },
        b',' if !content.is_empty()
            && content
                .iter()
                .all(|c| c.is_ascii_digit() || b".eE+-infa".contains(c)) =>
        {
            Val::Line(content)
        }
        b'(' if parse_bignum(content) => Val::Line(content),
        b'.' if content.is_empty() => Val::End,
        b';' => {
            let n = parse_i64(content).ok_or(bad)?;
            Val::Chunk(u64::try_from(n).map_err(|_| bad)?)
        }
        _ => return Err(bad),
    };
    Ok(Header { ty, val })
}

fn parse_bignum(b: &[u8]) -> bool {
    let digits = match b.split_first() {
        Some((b'-' | b'+', rest)) => rest,
        _ => b,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Where the first line of `buf` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineEnd {
    /// `\n` at this index.
    At(usize),
    /// No `\n` yet, fewer than `max` bytes.
    Incomplete,
    /// No `\n` within `max` bytes.
    TooLong,
}

fn find_line(buf: &[u8], max: usize) -> LineEnd {
    let window = buf.get(..max.min(buf.len())).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => LineEnd::At(i),
        None if buf.len() >= max => LineEnd::TooLong,
        None => LineEnd::Incomplete,
    }
}

/// The header line ending at `nl` (a `\n` index): content without the CRLF, if CR precedes.
fn crlf_line(buf: &[u8], nl: usize) -> Option<&[u8]> {
    let cr = nl.checked_sub(1)?;
    if buf.get(cr) != Some(&b'\r') {
        return None;
    }
    buf.get(..cr)
}

/// A bulk string's declared length, when it is one the reader follows (0 to [`MAX_BULK`]).
fn bulk_len(content: &[u8]) -> Option<usize> {
    let n = parse_i64(content).filter(|n| *n >= 0 && n.unsigned_abs() <= MAX_BULK)?;
    usize::try_from(n).ok()
}

/// Where the bulk payload of `len` bytes at `payload` and its CRLF end, if all are in `buf`.
fn bulk_end(buf: &[u8], payload: usize, len: usize) -> Option<usize> {
    let crlf = payload.checked_add(len)?;
    let end = crlf.checked_add(2)?;
    (buf.get(crlf..end)? == b"\r\n").then_some(end)
}

/// Three-valued answer of the candidate checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    Yes,
    Maybe,
    No,
}

/// Does `buf` begin with `*<digits>\r\n$` (the start of a client command)?
fn command_start(buf: &[u8]) -> Tri {
    let Some((&first, rest)) = buf.split_first() else {
        return Tri::Maybe;
    };
    if first != b'*' {
        return Tri::No;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 20 {
        return Tri::No;
    }
    let Some(tail) = rest.get(digits..) else {
        return Tri::No;
    };
    if tail.is_empty() {
        return Tri::Maybe;
    }
    if digits == 0 {
        return Tri::No;
    }
    let want: &[u8] = b"\r\n$";
    let n = tail.len().min(want.len());
    if tail.get(..n) != want.get(..n) {
        Tri::No
    } else if n < want.len() {
        Tri::Maybe
    } else {
        Tri::Yes
    }
}

/// Does `buf` begin with a value type byte and a well-formed header line (within `max`)?
fn reply_start(buf: &[u8], max: usize) -> Tri {
    let Some(&first) = buf.first() else {
        return Tri::Maybe;
    };
    if !is_value_type(first) {
        return Tri::No;
    }
    match find_line(buf, max) {
        LineEnd::Incomplete => Tri::Maybe,
        LineEnd::TooLong => Tri::No,
        LineEnd::At(nl) => match crlf_line(buf, nl).map(parse_header) {
            Some(Ok(_)) => Tri::Yes,
            _ => Tri::No,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Probe

/// Commands the probe recognises at the start of an inline line.
const INLINE_COMMANDS: &[&[u8]] = &[
    b"PING",
    b"ECHO",
    b"GET",
    b"SET",
    b"DEL",
    b"INCR",
    b"AUTH",
    b"HELLO",
    b"INFO",
    b"KEYS",
    b"EXISTS",
    b"EXPIRE",
    b"TTL",
    b"MGET",
    b"MSET",
    b"HGET",
    b"HSET",
    b"LPUSH",
    b"RPUSH",
    b"LPOP",
    b"RPOP",
    b"LRANGE",
    b"SADD",
    b"SMEMBERS",
    b"ZADD",
    b"ZRANGE",
    b"SUBSCRIBE",
    b"PUBLISH",
    b"SELECT",
    b"QUIT",
    b"COMMAND",
    b"CLIENT",
    b"CONFIG",
    b"XADD",
    b"XRANGE",
    b"SCAN",
    b"TYPE",
    b"DBSIZE",
    b"FLUSHDB",
    b"FLUSHALL",
];

/// Server replies recognisable without a port hint.
const CLEAR_REPLIES: &[&[u8]] = &[b"+OK\r\n", b"+PONG\r\n", b"-ERR "];

/// Is this the first payload of a Redis client (`Match(Request)`) or server
/// (`Match(Response)`)? Commands as RESP arrays are recognised anywhere; inline commands
/// (`GET key`, easily an HTTP/0.9 line or a text protocol) and replies other than `+OK`,
/// `+PONG` and `-ERR ` only with `port_hint` (they are too ambiguous otherwise).
pub fn probe(data: &[u8], port_hint: bool) -> Probe {
    let Some(&first) = data.first() else {
        return Probe::NeedMore;
    };
    if first == b'*' {
        match probe_command_array(data) {
            Tri::Yes => return Probe::Match(Role::Request),
            Tri::Maybe => return Probe::NeedMore,
            Tri::No => {}
        }
    }
    if first.is_ascii_alphabetic() {
        return if port_hint {
            probe_inline(data)
        } else {
            Probe::No
        };
    }
    probe_reply(data, port_hint)
}

/// `*<n>\r\n$<len>\r\n` with n >= 1 and a command-name-sized first element.
fn probe_command_array(data: &[u8]) -> Tri {
    // Each step: (prefix byte, then digits, then CRLF).
    let mut rest = data;
    let mut values = [0i64; 2];
    for (i, lead) in [b'*', b'$'].into_iter().enumerate() {
        let Some((&b, tail)) = rest.split_first() else {
            return Tri::Maybe;
        };
        if b != lead {
            return Tri::No;
        }
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 10 {
            return Tri::No;
        }
        let Some(after) = tail.get(digits..) else {
            return Tri::No;
        };
        if after.is_empty() {
            return Tri::Maybe;
        }
        let Some(n) = tail.get(..digits).and_then(parse_i64) else {
            return Tri::No;
        };
        match after {
            [b'\r'] => return Tri::Maybe,
            [b'\r', b'\n', more @ ..] => rest = more,
            _ => return Tri::No,
        }
        if let Some(slot) = values.get_mut(i) {
            *slot = n;
        }
    }
    let [count, len] = values;
    if count < 1 || !(1..=PROBE_MAX_NAME).contains(&len) {
        return Tri::No;
    }
    // Where the name is already there, it must look like one (a reply's first element,
    // such as a stream id, often does not).
    let name = rest
        .get(..usize::try_from(len).unwrap_or(0).min(rest.len()))
        .unwrap_or(&[]);
    let plausible = name.first().is_none_or(u8::is_ascii_alphabetic)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'|'));
    if plausible {
        Tri::Yes
    } else {
        Tri::No
    }
}

fn probe_inline(data: &[u8]) -> Probe {
    let Some(end) = data
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
    else {
        let partial = INLINE_COMMANDS.iter().any(|c| {
            c.get(..data.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(data))
        });
        return if partial { Probe::NeedMore } else { Probe::No };
    };
    let word = data.get(..end).unwrap_or(&[]);
    if !INLINE_COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(word)) {
        return Probe::No;
    }
    let after = data.get(end..).unwrap_or(&[]);
    match after {
        [b'\r'] => return Probe::NeedMore,
        [b'\r', b'\n', ..] | [b'\n', ..] => return Probe::Match(Role::Request),
        [b' ', ..] => {}
        _ => return Probe::No,
    }
    match find_line(data, PROBE_LINE) {
        LineEnd::At(nl) => {
            let line = data.get(..nl).unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if is_http_request_line(line) {
                Probe::No
            } else {
                Probe::Match(Role::Request)
            }
        }
        LineEnd::TooLong => {
            if data.windows(6).any(|w| w == b" HTTP/") {
                Probe::No
            } else {
                Probe::Match(Role::Request)
            }
        }
        LineEnd::Incomplete => {
            // "GET /path HTTP/1.1" is HTTP: wait for the line end before deciding.
            let arg = after.get(1..).unwrap_or(&[]);
            if word.eq_ignore_ascii_case(b"GET") || arg.first() == Some(&b'/') {
                Probe::NeedMore
            } else {
                Probe::Match(Role::Request)
            }
        }
    }
}

/// A line ending with " HTTP/1.x".
fn is_http_request_line(line: &[u8]) -> bool {
    let n = line.len();
    match (n.checked_sub(9).and_then(|s| line.get(s..)), line.last()) {
        (Some(tail), Some(last)) => tail.starts_with(b" HTTP/1.") && last.is_ascii_digit(),
        _ => false,
    }
}

fn probe_reply(data: &[u8], port_hint: bool) -> Probe {
    if CLEAR_REPLIES.iter().any(|p| data.starts_with(p)) {
        return Probe::Match(Role::Response);
    }
    let could_be_clear = CLEAR_REPLIES.iter().any(|p| p.starts_with(data));
    if port_hint {
        match reply_start(data, CANDIDATE_LINE) {
            Tri::Yes => return Probe::Match(Role::Response),
            Tri::Maybe => return Probe::NeedMore,
            Tri::No => {}
        }
    }
    if could_be_clear {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

// ---------------------------------------------------------------------------------------
// The value reader

/// Where a value sits: nesting depth (0 = top level), its index in the parent aggregate,
/// and whether it is inside an attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ctx {
    depth: usize,
    index: u64,
    in_attr: bool,
}

/// What a direction does with the values the reader finds.
trait Visit {
    /// A top-level message (possibly an attribute before a reply) begins.
    fn begin(&mut self);
    /// A value header; an error rejects it (the reader reports it and resynchronises).
    fn header(&mut self, ctx: Ctx, h: &Header<'_>) -> Result<(), Anomaly>;
    /// A piece of the payload of the bulk-like value begun at `ctx`.
    fn data(&mut self, ctx: Ctx, chunk: &[u8]);
    /// The value at `ctx` (scalar or aggregate) is complete.
    fn end(&mut self, ctx: Ctx);
    /// The top-level message is complete; `bytes` is its size on the wire.
    fn top(&mut self, bytes: u64, out: &mut Events);
}

/// One open aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    /// Elements still to come (maps and attributes count keys and values).
    remaining: u64,
    /// Elements seen so far.
    index: u64,
    ty: u8,
    /// `*?`-style: ends with `.` rather than a count.
    streamed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Expecting a header line.
    Header,
    /// Inside a streamed string: expecting a `;<len>` line.
    Chunk,
    /// Payload bytes of a bulk value (or chunk) still to come.
    Body(u64),
    /// The CRLF after a payload (how many of its bytes were seen).
    Crlf(u8),
    /// Discarding until a message start (`true`: the next byte starts a line).
    Resync(bool),
}

/// Most elements of an array [`Reader::whole_message`] takes (commands rarely have more).
const WHOLE_ELEMENTS: usize = 16;

/// Incremental, iterative RESP reader for one direction.
#[derive(Clone, Debug, PartialEq)]
struct Reader {
    st: St,
    /// Open aggregates, innermost last. Commands and most replies nest one level, so the
    /// first frame is held inline (it was an allocation per connection).
    stack: SmallVec<[Frame; 1]>,
    /// Attribute frames on the stack.
    attrs: usize,
    /// The bulk value whose payload is being read.
    cur: Ctx,
    cur_chunked: bool,
    /// A top-level message is partly consumed.
    started: bool,
    bytes: u64,
    /// An anomaly was reported and no message completed since: stay silent.
    quiet: bool,
    /// Resynchronise on command starts (client direction) rather than reply starts.
    client: bool,
    max_depth: usize,
    max_elems: u64,
    max_line: usize,
    /// The caller's buffer starts with at least this many bytes of a line holding no
    /// newline (seen by the last call, which found the line incomplete): the caller feeds a
    /// partial line again from its start, and scanning it again each time would make a
    /// line arriving a byte per segment cost the square of its length.
    no_newline: usize,
    /// Bytes looked at while searching for line ends (tests show it grows linearly).
    scanned: u64,
}

impl Reader {
    fn new(client: bool, limits: &Limits) -> Self {
        Reader {
            st: St::Header,
            stack: SmallVec::new(),
            attrs: 0,
            cur: Ctx::default(),
            cur_chunked: false,
            started: false,
            bytes: 0,
            quiet: false,
            client,
            max_depth: limits.max_resp_depth,
            max_elems: limits.max_resp_elements,
            max_line: limits.max_buffered.max(16),
            no_newline: 0,
            scanned: 0,
        }
    }

    /// At a top-level message boundary, nothing pending.
    fn idle(&self) -> bool {
        self.st == St::Header && !self.started
    }

    fn clear(&mut self) {
        self.no_newline = 0;
        self.stack.clear();
        self.attrs = 0;
        self.started = false;
        self.bytes = 0;
        self.cur_chunked = false;
    }

    /// Report `a` (once per bad stretch) and resynchronise after the current line.
    fn fail(&mut self, a: Anomaly, out: &mut Events) {
        if !self.quiet {
            out.push(Event::Anomaly(a));
            self.quiet = true;
        }
        self.clear();
        self.st = St::Resync(false);
    }

    /// Bytes were lost: resynchronise, the next byte may start a line.
    fn gap(&mut self) {
        self.clear();
        self.no_newline = 0;
        self.quiet = false;
        self.st = St::Resync(true);
    }

    /// One unit of work on `rest` (non-empty): bytes consumed, and whether to go on.
    fn step<V: Visit>(&mut self, rest: &[u8], v: &mut V, out: &mut Events) -> (usize, bool) {
        match self.st {
            St::Resync(line_start) => self.resync(rest, line_start),
            St::Body(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                v.data(self.cur, rest.get(..n).unwrap_or(&[]));
                let n64 = n as u64;
                let left = left.saturating_sub(n64);
                self.bytes = self.bytes.saturating_add(n64);
                self.st = if left == 0 {
                    St::Crlf(0)
                } else {
                    St::Body(left)
                };
                (n, true)
            }
            St::Crlf(seen) => {
                let want: &[u8] = if seen == 0 { b"\r\n" } else { b"\n" };
                let n = want.len().min(rest.len());
                if rest.get(..n) != want.get(..n) {
                    self.fail(Anomaly::Malformed, out);
                    return (0, true);
                }
                self.bytes = self.bytes.saturating_add(n as u64);
                if n < want.len() {
                    self.st = St::Crlf(1);
                    return (n, true);
                }
                if self.cur_chunked {
                    self.st = St::Chunk;
                } else {
                    self.st = St::Header;
                    self.value_done(v, out);
                }
                (n, true)
            }
            St::Header | St::Chunk => self.line(rest, v, out),
        }
    }

    /// [`find_line`] over `rest` (within `max_line`), skipping what an earlier call on the
    /// same partial line already scanned.
    fn find_line_again(&mut self, rest: &[u8]) -> LineEnd {
        let max = self.max_line;
        let end = max.min(rest.len());
        let from = self.no_newline.min(end);
        let window = rest.get(from..end).unwrap_or(&[]);
        self.scanned = self.scanned.saturating_add(window.len() as u64);
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.no_newline = 0;
                LineEnd::At(from.saturating_add(i))
            }
            None if rest.len() >= max => {
                self.no_newline = 0;
                LineEnd::TooLong
            }
            None => {
                self.no_newline = rest.len();
                LineEnd::Incomplete
            }
        }
    }

    /// The header line starting at `at` in `rest`, as [`Reader::line`] would find it:
    /// (type byte, content without the CRLF, where the next line starts). `None` if it is
    /// incomplete, too long or not CRLF-terminated (all left to `line`).
    fn whole_line<'r>(&self, rest: &'r [u8], at: usize) -> Option<(u8, &'r [u8], usize)> {
        let line = rest.get(at..)?;
        let LineEnd::At(nl) = find_line(line, self.max_line) else {
            return None;
        };
        let (&ty, content) = crlf_line(line, nl)?.split_first()?;
        Some((ty, content, at.checked_add(nl)?.checked_add(1)?))
    }

    /// What [`Reader::find_line_again`] adds to `scanned` for the line starting at `at`.
    fn line_scan(&self, rest: &[u8], at: usize) -> u64 {
        let end = self.max_line.min(rest.len().saturating_sub(at));
        let from = if at == 0 { self.no_newline.min(end) } else { 0 };
        end.saturating_sub(from) as u64
    }

    /// The commonest messages in one go, when the reader is idle and all of one is in
    /// `rest`: an array of up to [`WHOLE_ELEMENTS`] bulk strings (every command, and many
    /// replies) and, for replies, a simple string, error, integer or bulk string. It makes
    /// the visitor calls and leaves the state (`scanned` included) that [`Reader::step`]
    /// would, a line at a time, at a fraction of the work: debug builds and tests check
    /// that on every feed (`RedisSession::feed`). `None`: anything else, nothing touched;
    /// `step` takes it.
    fn whole_message<V: Visit>(
        &mut self,
        rest: &[u8],
        v: &mut V,
        out: &mut Events,
    ) -> Option<usize> {
        if !self.idle() || self.attrs != 0 || self.max_depth == 0 {
            return None;
        }
        let (ty, content, first_end) = self.whole_line(rest, 0)?;
        match ty {
            b'*' => self.whole_array(rest, parse_i64(content)?, first_end, v, out),
            b'+' | b'-' | b':' | b'$' if !self.client => {
                self.whole_scalar(rest, ty, content, first_end, v, out)
            }
            _ => None,
        }
    }

    fn whole_array<V: Visit>(
        &mut self,
        rest: &[u8],
        count: i64,
        first_end: usize,
        v: &mut V,
        out: &mut Events,
    ) -> Option<usize> {
        let n = usize::try_from(count)
            .ok()
            .filter(|n| (1..=WHOLE_ELEMENTS).contains(n))?;
        if count.unsigned_abs() > self.max_elems {
            return None;
        }
        // First pass, nothing changed: every element a complete bulk string within limits.
        // (line start, payload start, payload length) of each.
        let mut bulks = [(0usize, 0usize, 0usize); WHOLE_ELEMENTS];
        let mut at = first_end;
        for bulk in bulks.iter_mut().take(n) {
            let (ty, content, payload) = self.whole_line(rest, at)?;
            let len = (ty == b'$').then(|| bulk_len(content)).flatten()?;
            *bulk = (at, payload, len);
            at = bulk_end(rest, payload, len)?;
        }
        // Second pass: what `on_header`, `step` and `value_done` do, line by line.
        let h = Header {
            ty: b'*',
            val: Val::Len(count),
        };
        if !self.whole_top(rest, &h, first_end, v, out) {
            return Some(0);
        }
        self.push(b'*', n as u64, false);
        for (index, &(start, payload, len)) in bulks.iter().take(n).enumerate() {
            self.scanned = self.scanned.saturating_add(self.line_scan(rest, start));
            let ctx = Ctx {
                depth: 1,
                index: index as u64,
                in_attr: false,
            };
            let h = Header {
                ty: b'$',
                val: Val::Len(len as i64),
            };
            if let Err(a) = v.header(ctx, &h) {
                self.fail(a, out);
                return Some(start);
            }
            let header = payload.saturating_sub(start) as u64;
            self.bytes = self.bytes.saturating_add(header);
            self.whole_bulk(ctx, rest, payload, len, v, out);
        }
        Some(at)
    }

    fn whole_scalar<'r, V: Visit>(
        &mut self,
        rest: &'r [u8],
        ty: u8,
        content: &'r [u8],
        first_end: usize,
        v: &mut V,
        out: &mut Events,
    ) -> Option<usize> {
        let (val, bulk) = match (ty, parse_i64(content)) {
            (b'+' | b'-', _) => (Val::Line(content), None),
            (b':', Some(i)) => (Val::Int(i), None),
            (b'$', Some(-1)) => (Val::Len(-1), None),
            (b'$', _) => {
                let len = bulk_len(content)?;
                let end = bulk_end(rest, first_end, len)?;
                (Val::Len(len as i64), Some((len, end)))
            }
            _ => return None,
        };
        if !self.whole_top(rest, &Header { ty, val }, first_end, v, out) {
            return Some(0);
        }
        match bulk {
            Some((len, end)) => {
                self.whole_bulk(Ctx::default(), rest, first_end, len, v, out);
                Some(end)
            }
            None => {
                self.value_done(v, out);
                Some(first_end)
            }
        }
    }

    /// A whole message's first line, `h`, ending at `first_end`: what `on_header` does for
    /// a top-level header. False if the visitor refused it (reported, as `line` would).
    fn whole_top<V: Visit>(
        &mut self,
        rest: &[u8],
        h: &Header<'_>,
        first_end: usize,
        v: &mut V,
        out: &mut Events,
    ) -> bool {
        v.begin();
        self.scanned = self.scanned.saturating_add(self.line_scan(rest, 0));
        self.no_newline = 0;
        if let Err(a) = v.header(Ctx::default(), h) {
            self.fail(a, out);
            return false;
        }
        self.started = true;
        self.bytes = first_end as u64;
        true
    }

    /// A bulk value at `ctx` whose header was taken: its `len` payload bytes at `payload`
    /// and the CRLF after them (`Body`, `Crlf` and `value_done`).
    fn whole_bulk<V: Visit>(
        &mut self,
        ctx: Ctx,
        rest: &[u8],
        payload: usize,
        len: usize,
        v: &mut V,
        out: &mut Events,
    ) {
        self.cur = ctx;
        self.cur_chunked = false;
        if len > 0 {
            let data = rest.get(payload..payload.saturating_add(len));
            v.data(ctx, data.unwrap_or(&[]));
        }
        let wire = len.saturating_add(2) as u64;
        self.bytes = self.bytes.saturating_add(wire);
        self.value_done(v, out);
    }

    fn line<V: Visit>(&mut self, rest: &[u8], v: &mut V, out: &mut Events) -> (usize, bool) {
        let nl = match self.find_line_again(rest) {
            LineEnd::At(nl) => nl,
            LineEnd::Incomplete => return (0, false),
            LineEnd::TooLong => {
                self.fail(Anomaly::LimitExceeded, out);
                return (0, true);
            }
        };
        let Some(content) = crlf_line(rest, nl) else {
            self.fail(Anomaly::Malformed, out);
            return (0, true);
        };
        let len = nl.saturating_add(1);
        match parse_header(content).and_then(|h| self.on_header(h, len as u64, v, out)) {
            Ok(()) => (len, true),
            Err(a) => {
                self.fail(a, out);
                (0, true)
            }
        }
    }

    fn push(&mut self, ty: u8, remaining: u64, streamed: bool) {
        self.stack.push(Frame {
            remaining,
            index: 0,
            ty,
            streamed,
        });
        if ty == b'|' {
            self.attrs = self.attrs.saturating_add(1);
        }
    }

    /// Apply one parsed header line of `len` bytes. Validates before changing anything.
    fn on_header<V: Visit>(
        &mut self,
        h: Header<'_>,
        len: u64,
        v: &mut V,
        out: &mut Events,
    ) -> Result<(), Anomaly> {
        if self.st == St::Chunk {
            let Val::Chunk(n) = h.val else {
                return Err(Anomaly::Malformed);
            };
            if n > MAX_BULK {
                return Err(Anomaly::LimitExceeded);
            }
            self.bytes = self.bytes.saturating_add(len);
            if n == 0 {
                self.st = St::Header;
                self.value_done(v, out);
            } else {
                self.st = St::Body(n);
            }
            return Ok(());
        }
        let depth = self.stack.len();
        let (index, parent_streamed) = self
            .stack
            .last()
            .map_or((0, false), |f| (f.index, f.streamed));
        match h.val {
            Val::Chunk(_) => return Err(Anomaly::Malformed),
            Val::End => {
                if !parent_streamed {
                    return Err(Anomaly::Malformed);
                }
                self.bytes = self.bytes.saturating_add(len);
                if self.stack.pop().map(|f| f.ty) == Some(b'|') {
                    self.attrs = self.attrs.saturating_sub(1);
                } else {
                    self.value_done(v, out);
                }
                return Ok(());
            }
            _ => {}
        }
        if parent_streamed && index >= self.max_elems.saturating_mul(2) {
            return Err(Anomaly::LimitExceeded);
        }
        let aggregate = is_aggregate(h.ty);
        let over = match h.val {
            Val::Len(n) if aggregate => {
                n > 0 && (n.unsigned_abs() > self.max_elems || depth >= self.max_depth)
            }
            Val::Len(n) => n > 0 && n.unsigned_abs() > MAX_BULK,
            Val::Streamed => aggregate && depth >= self.max_depth,
            _ => false,
        };
        if over {
            return Err(Anomaly::LimitExceeded);
        }
        let ctx = Ctx {
            depth,
            index,
            in_attr: self.attrs > 0,
        };
        if !self.started {
            v.begin();
        }
        v.header(ctx, &h)?;
        if !self.started {
            self.started = true;
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(len);
        match h.val {
            Val::Len(n) if aggregate => {
                if n > 0 {
                    let n = n.unsigned_abs();
                    let remaining = if matches!(h.ty, b'%' | b'|') {
                        n.saturating_mul(2)
                    } else {
                        n
                    };
                    self.push(h.ty, remaining, false);
                } else if h.ty != b'|' {
                    self.value_done(v, out);
                }
            }
            Val::Streamed if aggregate => self.push(h.ty, 0, true),
            Val::Len(n) => {
                if n < 0 {
                    self.value_done(v, out);
                } else {
                    self.cur = ctx;
                    self.cur_chunked = false;
                    self.st = if n == 0 {
                        St::Crlf(0)
                    } else {
                        St::Body(n.unsigned_abs())
                    };
                }
            }
            Val::Streamed => {
                self.cur = ctx;
                self.cur_chunked = true;
                self.st = St::Chunk;
            }
            _ => self.value_done(v, out),
        }
        Ok(())
    }

    /// A value completed: count it in its parent, closing aggregates that become complete,
    /// iteratively up to the top level.
    fn value_done<V: Visit>(&mut self, v: &mut V, out: &mut Events) {
        loop {
            let depth = self.stack.len();
            let index = self.stack.last().map_or(0, |f| f.index);
            v.end(Ctx {
                depth,
                index,
                in_attr: self.attrs > 0,
            });
            let Some(f) = self.stack.last_mut() else {
                let bytes = self.bytes;
                self.started = false;
                self.bytes = 0;
                self.quiet = false;
                v.top(bytes, out);
                return;
            };
            f.index = f.index.saturating_add(1);
            if f.streamed {
                return;
            }
            f.remaining = f.remaining.saturating_sub(1);
            if f.remaining > 0 {
                return;
            }
            let ty = f.ty;
            self.stack.pop();
            if ty == b'|' {
                // An attribute is not a value: the value it decorates comes next.
                self.attrs = self.attrs.saturating_sub(1);
                return;
            }
        }
    }

    /// Discard up to the next line that starts a message.
    fn resync(&mut self, rest: &[u8], line_start: bool) -> (usize, bool) {
        let mut i = 0usize;
        let mut at_start = line_start;
        loop {
            let tail = rest.get(i..).unwrap_or(&[]);
            if at_start {
                let c = if self.client {
                    command_start(tail)
                } else {
                    reply_start(tail, CANDIDATE_LINE.min(self.max_line))
                };
                match c {
                    Tri::Yes => {
                        self.st = St::Header;
                        return (i, true);
                    }
                    Tri::Maybe => {
                        self.st = St::Resync(true);
                        return (i, false);
                    }
                    Tri::No => {}
                }
            }
            match tail.iter().position(|&b| b == b'\n') {
                Some(k) => {
                    i = i.saturating_add(k).saturating_add(1);
                    at_start = true;
                }
                None => {
                    self.st = St::Resync(false);
                    return (rest.len(), false);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client direction: commands

/// Pub/sub commands whose replies are confirmations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubKind {
    Subscribe,
    PSubscribe,
    SSubscribe,
    Unsubscribe,
    PUnsubscribe,
    SUnsubscribe,
}

impl SubKind {
    /// From a command name or a confirmation's first element (any case).
    fn from_word(w: &[u8]) -> Option<SubKind> {
        const ALL: [(&[u8], SubKind); 6] = [
            (b"subscribe", SubKind::Subscribe),
            (b"psubscribe", SubKind::PSubscribe),
            (b"ssubscribe", SubKind::SSubscribe),
            (b"unsubscribe", SubKind::Unsubscribe),
            (b"punsubscribe", SubKind::PUnsubscribe),
            (b"sunsubscribe", SubKind::SUnsubscribe),
        ];
        ALL.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(w))
            .map(|(_, k)| *k)
    }

    fn is_unsubscribe(self) -> bool {
        matches!(
            self,
            SubKind::Unsubscribe | SubKind::PUnsubscribe | SubKind::SUnsubscribe
        )
    }
}

/// Which arguments of the current command are secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scrub {
    None,
    /// `AUTH`: every argument.
    All,
    /// `HELLO`: the two after `AUTH`.
    Hello,
    Config,
    /// `CONFIG SET`: values of secret parameters.
    ConfigSet,
    /// `MIGRATE`: after `AUTH` (one) / `AUTH2` (two), in the options (index 6 on).
    Migrate,
    Acl,
    /// `ACL SETUSER`: password rules.
    AclSetuser,
    /// `SENTINEL`: after `auth-pass` / `sentinel-pass`.
    Sentinel,
}

/// `CONFIG SET` parameters whose values are secrets.
const SECRET_PARAMS: &[&[u8]] = &[
    b"requirepass",
    b"masterauth",
    b"tls-key-file-pass",
    b"tls-client-key-file-pass",
];

/// The command being read.
#[derive(Clone, Debug, PartialEq)]
struct Cmd {
    argc: u64,
    arg: [u8; ARG_KEEP],
    arg_len: usize,
    arg_total: u64,
    resource: Resource,
    /// The record text: only when records are written (without it only the name is looked
    /// at, and an open connection does not hold 256 bytes for it).
    text: Option<Box<RequestText>>,
    scrub: Scrub,
    hide_next: u8,
    sub: Option<SubKind>,
}

impl Cmd {
    fn new(want_text: bool) -> Self {
        Cmd {
            argc: 0,
            arg: [0; ARG_KEEP],
            arg_len: 0,
            arg_total: 0,
            resource: Resource::new(),
            text: want_text.then(|| Box::new(RequestText::new())),
            scrub: Scrub::None,
            hide_next: 0,
            sub: None,
        }
    }

    fn begin(&mut self) {
        self.argc = 0;
        self.arg_len = 0;
        self.arg_total = 0;
        // `Text` equality and hashing look at the stored text only, so clearing is enough.
        self.resource.clear();
        if let Some(t) = self.text.as_deref_mut() {
            t.clear();
        }
        self.scrub = Scrub::None;
        self.hide_next = 0;
        self.sub = None;
    }

    fn start_arg(&mut self, total: u64) {
        self.arg_len = 0;
        self.arg_total = total;
    }

    fn arg_data(&mut self, chunk: &[u8]) {
        // Without text only the command name (argument 0) is needed.
        if self.text.is_none() && self.argc > 0 {
            return;
        }
        let start = self.arg_len;
        if let Some(dst) = self.arg.get_mut(start..) {
            let n = dst.len().min(chunk.len());
            if let (Some(d), Some(s)) = (dst.get_mut(..n), chunk.get(..n)) {
                d.copy_from_slice(s);
                self.arg_len = start.saturating_add(n);
            }
        }
    }

    fn finish_arg(&mut self) {
        let arg = self.arg;
        let n = self.arg_len.min(ARG_KEEP);
        self.push_arg(arg.get(..n).unwrap_or(&[]), self.arg_total);
    }

    /// One argument (its first bytes and full length), in order.
    fn push_arg(&mut self, arg: &[u8], total: u64) {
        let arg = arg.get(..arg.len().min(ARG_KEEP)).unwrap_or(&[]);
        let idx = self.argc;
        self.argc = self.argc.saturating_add(1);
        let cut = total > arg.len() as u64;
        if idx == 0 {
            let mut up = [0u8; ARG_KEEP];
            for (d, s) in up.iter_mut().zip(arg) {
                *d = s.to_ascii_uppercase();
            }
            let name = up.get(..arg.len()).unwrap_or(&[]);
            self.resource.clear();
            self.resource.push_bytes_lossy(name);
            if let Some(t) = self.text.as_deref_mut() {
                t.push_bytes_lossy(name);
                if cut {
                    t.push_str("...");
                }
            }
            self.scrub = match name {
                b"AUTH" => Scrub::All,
                b"HELLO" => Scrub::Hello,
                b"CONFIG" => Scrub::Config,
                b"MIGRATE" => Scrub::Migrate,
                b"ACL" => Scrub::Acl,
                b"SENTINEL" => Scrub::Sentinel,
                _ => Scrub::None,
            };
            self.sub = if cut { None } else { SubKind::from_word(name) };
            return;
        }
        if self.text.is_none() {
            // Scrubbing state only decides what the text shows.
            return;
        }
        let hide = self.hide(idx, arg, cut);
        let Some(text) = self.text.as_deref_mut() else {
            return;
        };
        if text.is_cut() {
            return;
        }
        text.push_char(' ');
        if hide {
            text.push_char('?');
        } else {
            text.push_bytes_lossy(arg);
            if cut {
                text.push_str("...");
            }
        }
    }

    /// Is argument `idx` (>= 1) a secret? Also advances the scrubbing state.
    fn hide(&mut self, idx: u64, arg: &[u8], cut: bool) -> bool {
        if self.hide_next > 0 {
            self.hide_next = self.hide_next.saturating_sub(1);
            return true;
        }
        let is = |w: &[u8]| !cut && arg.eq_ignore_ascii_case(w);
        match self.scrub {
            Scrub::None => false,
            Scrub::All => true,
            Scrub::Hello => {
                if is(b"AUTH") {
                    self.hide_next = 2;
                }
                false
            }
            Scrub::Config => {
                if idx == 1 && is(b"SET") {
                    self.scrub = Scrub::ConfigSet;
                }
                false
            }
            Scrub::ConfigSet => {
                if idx.is_multiple_of(2) && SECRET_PARAMS.iter().any(|p| is(p)) {
                    self.hide_next = 1;
                }
                false
            }
            Scrub::Migrate => {
                if idx >= 6 {
                    if is(b"AUTH") {
                        self.hide_next = 1;
                    } else if is(b"AUTH2") {
                        self.hide_next = 2;
                    } else if is(b"KEYS") {
                        self.scrub = Scrub::None;
                    }
                }
                false
            }
            Scrub::Acl => {
                if idx == 1 && is(b"SETUSER") {
                    self.scrub = Scrub::AclSetuser;
                }
                false
            }
            Scrub::AclSetuser => idx >= 3 && matches!(arg.first(), Some(b'>' | b'<' | b'#' | b'!')),
            Scrub::Sentinel => {
                if is(b"auth-pass") || is(b"sentinel-pass") {
                    self.hide_next = 1;
                }
                false
            }
        }
    }
}

/// Emit the command just read (if it has a name) and note what its replies will be.
fn emit_request(cmd: &Cmd, subs: &mut Subs, bytes: u64, out: &mut Events) {
    if cmd.argc == 0 {
        return;
    }
    out.push(Event::Request(Request {
        resource: cmd.resource,
        text: cmd.text.as_deref().copied().unwrap_or_default(),
        id: None,
        bytes,
    }));
    subs.on_request(cmd.sub, cmd.argc.saturating_sub(1), out);
}

struct ClientVisit<'a> {
    cmd: &'a mut Cmd,
    subs: &'a mut Subs,
}

impl Visit for ClientVisit<'_> {
    fn begin(&mut self) {
        self.cmd.begin();
    }

    fn header(&mut self, ctx: Ctx, h: &Header<'_>) -> Result<(), Anomaly> {
        // Redis accepts exactly an array of bulk strings (a null or empty array is ignored).
        match (ctx.depth, h.ty, h.val) {
            (0, b'*', Val::Len(_)) => Ok(()),
            (1, b'$', Val::Len(n)) if n >= 0 => {
                self.cmd.start_arg(n.unsigned_abs());
                Ok(())
            }
            _ => Err(Anomaly::Malformed),
        }
    }

    fn data(&mut self, ctx: Ctx, chunk: &[u8]) {
        if ctx.depth == 1 {
            self.cmd.arg_data(chunk);
        }
    }

    fn end(&mut self, ctx: Ctx) {
        if ctx.depth == 1 {
            self.cmd.finish_arg();
        }
    }

    fn top(&mut self, bytes: u64, out: &mut Events) {
        emit_request(self.cmd, self.subs, bytes, out);
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Split an inline command line like Redis' `sdssplitargs`: whitespace-separated, `"…"`
/// (with `\` escapes) and `'…'` quoting. Tokens are raw (escapes not decoded).
fn split_inline(line: &[u8], mut f: impl FnMut(&[u8])) {
    let mut i = 0usize;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i = i.saturating_add(1);
        }
        let Some(&q) = line.get(i) else {
            return;
        };
        let start = i;
        if q == b'"' || q == b'\'' {
            let mut j = i.saturating_add(1);
            loop {
                match line.get(j) {
                    None => {
                        f(line.get(start.saturating_add(1)..).unwrap_or(&[]));
                        return;
                    }
                    Some(b'\\') => j = j.saturating_add(2),
                    Some(&c) if c == q => {
                        f(line.get(start.saturating_add(1)..j).unwrap_or(&[]));
                        i = j.saturating_add(1);
                        break;
                    }
                    Some(_) => j = j.saturating_add(1),
                }
            }
        } else {
            while line.get(i).is_some_and(|&b| !is_space(b)) {
                i = i.saturating_add(1);
            }
            f(line.get(start..i).unwrap_or(&[]));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server direction: replies and pub/sub bookkeeping

/// What a pending request expects from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// This many ordinary requests, one reply each.
    Normal(u32),
    /// A pub/sub command: `left` confirmations (None: an argument-less unsubscribe, until
    /// no channel of its family is left), `answered` once the first one was emitted.
    Sub {
        kind: SubKind,
        left: Option<u64>,
        answered: bool,
    },
}

/// Requests awaiting replies (consecutive ordinary ones merged) and subscription counts.
#[derive(Clone, Debug, PartialEq)]
struct Subs {
    queue: InlineQueue<Pending, 2>,
    max: usize,
    channels: u64,
    patterns: u64,
    shard: u64,
}

impl Subs {
    fn new(limits: &Limits) -> Self {
        Subs {
            queue: InlineQueue::default(),
            max: limits.max_pending.max(1),
            channels: 0,
            patterns: 0,
            shard: 0,
        }
    }

    fn on_request(&mut self, kind: Option<SubKind>, nargs: u64, out: &mut Events) {
        let entry = match kind {
            Some(kind) if nargs > 0 => Pending::Sub {
                kind,
                left: Some(nargs),
                answered: false,
            },
            Some(kind) if kind.is_unsubscribe() => Pending::Sub {
                kind,
                left: None,
                answered: false,
            },
            _ => {
                if let Some(Pending::Normal(n)) = self.queue.back_mut() {
                    *n = n.saturating_add(1);
                    return;
                }
                Pending::Normal(1)
            }
        };
        if self.queue.len() >= self.max {
            out.push(Event::Anomaly(Anomaly::LimitExceeded));
            self.queue.pop_front();
        }
        self.queue.push_back(entry);
    }

    /// An ordinary reply arrived: it answers the oldest pending request.
    fn answered(&mut self) {
        while let Some(front) = self.queue.front_mut() {
            match front {
                Pending::Normal(n) => {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.queue.pop_front();
                    }
                    return;
                }
                Pending::Sub {
                    answered: false, ..
                } => {
                    // The pub/sub command was refused (an error reply).
                    self.queue.pop_front();
                    return;
                }
                Pending::Sub { answered: true, .. } => {
                    // Its confirmations are over.
                    self.queue.pop_front();
                }
            }
        }
    }

    /// A confirmation arrived; true if it is the response to a pending command.
    fn confirmation(&mut self, kind: SubKind, count: i64, nil_channel: bool) -> bool {
        let c = count.max(0).unsigned_abs();
        match kind {
            SubKind::Subscribe | SubKind::Unsubscribe => {
                self.channels = c.saturating_sub(self.patterns)
            }
            SubKind::PSubscribe | SubKind::PUnsubscribe => {
                self.patterns = c.saturating_sub(self.channels)
            }
            SubKind::SSubscribe | SubKind::SUnsubscribe => self.shard = c,
        }
        let family_left = match kind {
            SubKind::Subscribe | SubKind::Unsubscribe => self.channels,
            SubKind::PSubscribe | SubKind::PUnsubscribe => self.patterns,
            SubKind::SSubscribe | SubKind::SUnsubscribe => self.shard,
        };
        let Some(pos) = self
            .queue
            .iter()
            .position(|p| matches!(p, Pending::Sub { kind: k, .. } if *k == kind))
        else {
            // Unsolicited (server-side unsubscribe) or its command was not seen.
            return false;
        };
        // Entries before it were answered by replies that were lost.
        self.queue.drop_front(pos);
        let Some(Pending::Sub { left, answered, .. }) = self.queue.front_mut() else {
            return false;
        };
        let emit = !*answered;
        *answered = true;
        let done = match left {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => nil_channel || family_left == 0,
        };
        if done {
            self.queue.pop_front();
        }
        emit
    }

    /// Are published messages expected (subscribed, subscribing, or nothing outstanding)?
    fn listening(&self) -> bool {
        self.channels > 0
            || self.patterns > 0
            || self.shard > 0
            || self.queue.is_empty()
            || self.queue.iter().any(|p| matches!(p, Pending::Sub { .. }))
    }

    fn reset_counts(&mut self) {
        self.channels = 0;
        self.patterns = 0;
        self.shard = 0;
    }
}

/// What is known of the reply being read.
#[derive(Clone, Debug, PartialEq)]
struct Reply {
    ty: u8,
    kind: &'static str,
    error: bool,
    code: [u8; CODE_KEEP],
    code_len: usize,
    code_done: bool,
    /// Declared top-level element count (-1 null, -2 streamed).
    count: i64,
    /// First element, when a short string.
    word: [u8; WORD],
    word_len: usize,
    word_ok: bool,
    /// Second element is null (an unsubscribe confirmation with no channel).
    e1_nil: bool,
    /// Third element, when an integer (a confirmation's subscription count).
    e2: Option<i64>,
    /// `+RESET`.
    reset: bool,
}

impl Reply {
    fn new() -> Self {
        Reply {
            ty: 0,
            kind: "",
            error: false,
            code: [0; CODE_KEEP],
            code_len: 0,
            code_done: false,
            count: 0,
            word: [0; WORD],
            word_len: 0,
            word_ok: false,
            e1_nil: false,
            e2: None,
            reset: false,
        }
    }

    fn code_push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.code_done {
                return;
            }
            if is_space(b) {
                self.code_done = true;
                return;
            }
            match self.code.get_mut(self.code_len) {
                Some(slot) => {
                    *slot = b;
                    self.code_len = self.code_len.saturating_add(1);
                }
                None => self.code_done = true,
            }
        }
    }

    fn word(&self) -> &[u8] {
        if self.word_ok {
            self.word.get(..self.word_len).unwrap_or(&[])
        } else {
            &[]
        }
    }

    fn code(&self) -> Code {
        if !self.error {
            return Code::from_str_lossy("OK");
        }
        match self.code.get(..self.code_len) {
            Some(c) if !c.is_empty() => Code::from_bytes_lossy(c),
            _ => Code::from_str_lossy("ERR"),
        }
    }

    /// `[subscribe|…, channel, count]`.
    fn confirmation(&self) -> Option<SubKind> {
        if self.count == 3 && self.e2.is_some() {
            SubKind::from_word(self.word())
        } else {
            None
        }
    }

    /// `[message, channel, payload]`, `[pmessage, pattern, channel, payload]`,
    /// `[smessage, channel, payload]`.
    fn is_message(&self) -> bool {
        matches!(
            (self.word(), self.count),
            (b"message", 3) | (b"pmessage", 4) | (b"smessage", 3)
        )
    }
}

fn kind_of(ty: u8, val: &Val<'_>) -> &'static str {
    match (ty, val) {
        (b'$' | b'*', Val::Len(-1)) | (b'_', _) => "nil",
        (b'+', _) => "simple",
        (b'-' | b'!', _) => "error",
        (b':', _) => "integer",
        (b'$', _) => "bulk",
        (b'*', _) => "array",
        (b'#', _) => "boolean",
        (b',', _) => "double",
        (b'(', _) => "bignum",
        (b'=', _) => "verbatim",
        (b'%', _) => "map",
        (b'~', _) => "set",
        (b'>', _) => "push",
        _ => "attribute",
    }
}

struct ServerVisit<'a> {
    reply: &'a mut Reply,
    subs: &'a mut Subs,
}

impl Visit for ServerVisit<'_> {
    fn begin(&mut self) {
        *self.reply = Reply::new();
    }

    fn header(&mut self, ctx: Ctx, h: &Header<'_>) -> Result<(), Anomaly> {
        if ctx.in_attr || h.ty == b'|' {
            return Ok(());
        }
        let r = &mut *self.reply;
        match ctx.depth {
            0 => {
                r.ty = h.ty;
                r.kind = kind_of(h.ty, &h.val);
                match (h.ty, h.val) {
                    (b'-', Val::Line(t)) => {
                        r.error = true;
                        r.code_push(t);
                        r.code_done = true;
                    }
                    (b'!', _) => r.error = true,
                    (b'*' | b'>', Val::Len(n)) => r.count = n,
                    (b'*' | b'>', Val::Streamed) => r.count = -2,
                    (b'+', Val::Line(t)) => r.reset = t == b"RESET",
                    _ => {}
                }
            }
            1 => match (ctx.index, h.ty, h.val) {
                (0, b'$', Val::Len(n)) if (0..=WORD as i64).contains(&n) => {
                    r.word_ok = true;
                    r.word_len = 0;
                }
                (0, b'+', Val::Line(t)) if t.len() <= WORD => {
                    r.word_ok = true;
                    r.word_len = t.len();
                    if let Some(d) = r.word.get_mut(..t.len()) {
                        d.copy_from_slice(t);
                    }
                }
                (1, _, Val::Len(-1) | Val::Null) => r.e1_nil = true,
                (2, b':', Val::Int(i)) => r.e2 = Some(i),
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn data(&mut self, ctx: Ctx, chunk: &[u8]) {
        if ctx.in_attr {
            return;
        }
        let r = &mut *self.reply;
        if ctx.depth == 0 && r.ty == b'!' {
            r.code_push(chunk);
        } else if ctx.depth == 1 && ctx.index == 0 && r.word_ok {
            let start = r.word_len;
            if let Some(dst) = r.word.get_mut(start..) {
                let n = dst.len().min(chunk.len());
                if let (Some(d), Some(s)) = (dst.get_mut(..n), chunk.get(..n)) {
                    d.copy_from_slice(s);
                    r.word_len = start.saturating_add(n);
                }
            }
        }
    }

    fn end(&mut self, _ctx: Ctx) {}

    fn top(&mut self, bytes: u64, out: &mut Events) {
        let r = &*self.reply;
        let confirmation = match r.ty {
            b'>' | b'*' => r.confirmation(),
            _ => None,
        };
        if let Some(kind) = confirmation {
            if self.subs.confirmation(kind, r.e2.unwrap_or(0), r.e1_nil) {
                out.push(Event::Response(Response {
                    code: Code::from_str_lossy("OK"),
                    error: false,
                    kind: Code::from_str_lossy(r.kind),
                    id: None,
                    bytes,
                }));
            }
            return;
        }
        if r.ty == b'>' || (r.ty == b'*' && r.is_message() && self.subs.listening()) {
            // Out-of-band data, not a response.
            return;
        }
        if r.reset {
            self.subs.reset_counts();
        }
        self.subs.answered();
        out.push(Event::Response(Response {
            code: r.code(),
            error: r.error,
            kind: Code::from_str_lossy(r.kind),
            id: None,
            bytes,
        }));
    }
}

// ---------------------------------------------------------------------------------------
// Session

/// Redis session for one connection (both directions).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSession {
    client: Reader,
    server: Reader,
    cmd: Cmd,
    reply: Reply,
    subs: Subs,
}

impl RedisSession {
    pub fn new(limits: &Limits) -> Self {
        RedisSession {
            client: Reader::new(true, limits),
            server: Reader::new(false, limits),
            cmd: Cmd::new(limits.request_text),
            reply: Reply::new(),
            subs: Subs::new(limits),
        }
    }

    /// An inline command at the start of `rest`: consumed whole once its line is complete.
    fn inline(&mut self, rest: &[u8], out: &mut Events) -> (usize, bool) {
        let nl = match self.client.find_line_again(rest) {
            LineEnd::At(nl) => nl,
            LineEnd::Incomplete => return (0, false),
            LineEnd::TooLong => {
                self.client.fail(Anomaly::LimitExceeded, out);
                return (0, true);
            }
        };
        let line = rest.get(..nl).unwrap_or(&[]);
        let cmd = &mut self.cmd;
        cmd.begin();
        split_inline(line, |tok| cmd.push_arg(tok, tok.len() as u64));
        let len = nl.saturating_add(1);
        if cmd.argc > 0 {
            self.client.quiet = false;
        }
        emit_request(cmd, &mut self.subs, len as u64, out);
        (len, true)
    }
}

impl RedisSession {
    /// [`Session::feed`]; `whole` lets whole messages skip the line-by-line reader.
    fn feed_with(&mut self, dir: Direction, data: &[u8], out: &mut Events, whole: bool) -> usize {
        let mut pos = 0usize;
        let mut idle_steps = 0u32;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            let (n, more) = match dir {
                Direction::ToServer => {
                    if self.client.idle() && rest.first() != Some(&b'*') {
                        self.inline(rest, out)
                    } else {
                        let mut v = ClientVisit {
                            cmd: &mut self.cmd,
                            subs: &mut self.subs,
                        };
                        match whole.then(|| self.client.whole_message(rest, &mut v, out)) {
                            Some(Some(n)) => (n, true),
                            _ => self.client.step(rest, &mut v, out),
                        }
                    }
                }
                Direction::ToClient => {
                    let mut v = ServerVisit {
                        reply: &mut self.reply,
                        subs: &mut self.subs,
                    };
                    match whole.then(|| self.server.whole_message(rest, &mut v, out)) {
                        Some(Some(n)) => (n, true),
                        _ => self.server.step(rest, &mut v, out),
                    }
                }
            };
            pos = pos.saturating_add(n).min(data.len());
            // Steps that consume nothing only change state; a few in a row cannot happen,
            // but never spin.
            idle_steps = if n == 0 {
                idle_steps.saturating_add(1)
            } else {
                0
            };
            if !more || idle_steps > 4 {
                break;
            }
        }
        pos
    }
}

impl Session for RedisSession {
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        // Debug builds and this crate's tests (`cargo test --release` too): whole messages
        // change nothing but the work done.
        #[cfg(any(debug_assertions, test))]
        let (mut slow, mut slow_out) = (self.clone(), out.clone());
        let n = self.feed_with(dir, data, out, true);
        #[cfg(any(debug_assertions, test))]
        {
            let slow_n = slow.feed_with(dir, data, &mut slow_out, false);
            assert_eq!((slow_n, &slow_out, &slow), (n, &*out, &*self), "{data:?}");
        }
        n
    }

    fn gap(&mut self, dir: Direction) {
        match dir {
            Direction::ToServer => self.client.gap(),
            Direction::ToClient => self.server.gap(),
        }
    }

    fn close(&mut self, _dir: Direction, _out: &mut Events) {
        // RESP is self-delimiting: nothing ends with the connection.
    }

    fn in_message(&self, dir: Direction) -> bool {
        match dir {
            Direction::ToServer => self.client.started,
            Direction::ToClient => self.server.started,
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

    const C: Direction = Direction::ToServer;
    const S: Direction = Direction::ToClient;

    /// Simulates the caller: keeps each direction's unconsumed bytes and re-feeds them
    /// together with what arrives next.
    struct Harness {
        s: RedisSession,
        held: [Vec<u8>; 2],
        out: Events,
        /// Most unconsumed bytes held after a feed.
        max_held: usize,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(&Limits::default())
        }
        fn with(limits: &Limits) -> Self {
            Harness {
                s: RedisSession::new(limits),
                held: [Vec::new(), Vec::new()],
                out: Vec::new(),
                max_held: 0,
            }
        }
        fn push(&mut self, dir: Direction, bytes: &[u8]) {
            let held = &mut self.held[dir.index()];
            held.extend_from_slice(bytes);
            let n = self.s.feed(dir, held, &mut self.out);
            assert!(n <= held.len());
            held.drain(..n);
            self.max_held = self.max_held.max(held.len());
        }
        fn gap(&mut self, dir: Direction) {
            self.held[dir.index()].clear();
            self.s.gap(dir);
        }
    }

    fn at_once(dir: Direction, data: &[u8]) -> Events {
        let mut h = Harness::new();
        h.push(dir, data);
        h.out
    }

    /// Events equal `expected` whether `data` arrives at once, byte by byte, or split in two
    /// at every byte boundary.
    fn check_splits(dir: Direction, data: &[u8], expected: &[Event]) {
        assert_eq!(at_once(dir, data), expected, "all at once");
        let mut h = Harness::new();
        for b in data {
            h.push(dir, std::slice::from_ref(b));
        }
        assert_eq!(h.out, expected, "byte by byte");
        assert!(h.held[dir.index()].is_empty());
        for k in 0..=data.len() {
            let mut h = Harness::new();
            h.push(dir, &data[..k]);
            h.push(dir, &data[k..]);
            assert_eq!(h.out, expected, "split at {k}");
        }
    }

    /// Runs a conversation, both directions, in order.
    fn script(steps: &[(Direction, &[u8])]) -> Events {
        let mut h = Harness::new();
        for (dir, bytes) in steps {
            h.push(*dir, bytes);
        }
        h.out
    }

    fn req(resource: &str, text: &str, bytes: u64) -> Event {
        Event::Request(Request {
            resource: Resource::from_str_lossy(resource),
            text: RequestText::from_str_lossy(text),
            id: None,
            bytes,
        })
    }

    fn resp(code: &str, kind: &str, error: bool, bytes: u64) -> Event {
        Event::Response(Response {
            code: Code::from_str_lossy(code),
            error,
            kind: Code::from_str_lossy(kind),
            id: None,
            bytes,
        })
    }

    fn ok(kind: &str, bytes: u64) -> Event {
        resp("OK", kind, false, bytes)
    }

    fn text_of(e: &Event) -> String {
        match e {
            Event::Request(r) => r.text.as_str().to_string(),
            other => panic!("not a request: {other:?}"),
        }
    }

    /// A RESP command array from its arguments.
    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    // ----- commands -----

    /// Whole messages (`Reader::whole_message`) change nothing but the work: every feed in
    /// this crate's tests (release builds too) also runs the line-by-line reader on a copy
    /// and compares events, bytes consumed and the whole session. Here that check meets
    /// commands and replies of every shape, edited at random (bytes replaced, inserted,
    /// dropped) and split at random.
    #[test]
    fn whole_messages_match_the_line_reader_on_edited_streams() {
        let client: Vec<Vec<u8>> = vec![
            command(&[b"SET", b"key:1", b"v"]),
            command(&[b"GET", b"k\r\nx"]),
            command(&[b"AUTH", b"user", b"secret"]),
            command(&[b"SUBSCRIBE", b"a", b"b"]),
            command(&[b"PING"]),
            b"*0\r\n*-1\r\n*2\r\n$3\r\nGET\r\n$-1\r\n".to_vec(),
            b"PING\r\n".to_vec(),
        ];
        let server: Vec<Vec<u8>> = vec![
            b"+OK\r\n".to_vec(),
            b"-ERR wrong\r\n:42\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n".to_vec(),
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n".to_vec(),
            b"*2\r\n$1\r\nx\r\n*1\r\n:1\r\n%1\r\n+a\r\n+b\r\n|1\r\n+k\r\n+v\r\n+OK\r\n".to_vec(),
            b"$?\r\n;2\r\nab\r\n;0\r\n_\r\n#t\r\n,1.5\r\n".to_vec(),
        ];
        const SPECIAL: &[u8] = b"*$+-:\r\n0123456789?;.|%_";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rng = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..3_000 {
            let mut h = Harness::new();
            for _ in 0..6 {
                let (dir, pool) = if rng(2) == 0 {
                    (C, &client)
                } else {
                    (S, &server)
                };
                let mut bytes = pool[rng(pool.len())].clone();
                for _ in 0..rng(3) {
                    let at = rng(bytes.len() + 1);
                    let b = SPECIAL[rng(SPECIAL.len())];
                    match rng(3) {
                        0 if at < bytes.len() => bytes[at] = b,
                        1 => bytes.insert(at, b),
                        _ if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => {}
                    }
                }
                let cut = rng(bytes.len() + 1);
                h.push(dir, &bytes[..cut]);
                h.push(dir, &bytes[cut..]);
            }
        }
    }

    #[test]
    fn set_get_pipeline_split_everywhere() {
        // 4 + 9 + 7 + 11 = 31; 4 + 9 + 7 = 20; 4 + 9 + 10 = 23.
        let client = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n\
                       *2\r\n$3\r\nGET\r\n$1\r\nk\r\n\
                       *2\r\n$3\r\nget\r\n$4\r\nnone\r\n";
        check_splits(
            C,
            client,
            &[
                req("SET", "SET k hello", 31),
                req("GET", "GET k", 20),
                req("GET", "GET none", 23),
            ],
        );
        // +OK (5), $5 hello (11), null bulk (5).
        let server = b"+OK\r\n$5\r\nhello\r\n$-1\r\n";
        check_splits(S, server, &[ok("simple", 5), ok("bulk", 11), ok("nil", 5)]);
    }

    #[test]
    fn inline_commands() {
        check_splits(C, b"PING\r\n", &[req("PING", "PING", 6)]);
        check_splits(C, b"PING\n", &[req("PING", "PING", 5)]);
        check_splits(C, b"set  k\t v\r\n", &[req("SET", "SET k v", 11)]);
        // Blank lines are not requests; inline and RESP mix on one connection.
        check_splits(
            C,
            b"\r\n\n  \t\r\nping\r\n*1\r\n$4\r\nPING\r\n\n",
            &[req("PING", "PING", 6), req("PING", "PING", 14)],
        );
        // Quoted arguments.
        check_splits(C, b"SET \"a b\" 'c'\r\n", &[req("SET", "SET a b c", 15)]);
    }

    #[test]
    fn empty_and_null_arrays_are_not_requests() {
        check_splits(
            C,
            b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n",
            &[req("PING", "PING", 14)],
        );
    }

    #[test]
    fn long_and_binary_arguments() {
        let value = [b'x'; 100];
        let events = at_once(C, &command(&[b"set", b"a\xffb\x00", &value]));
        let want = format!("SET a?b? {}...", "x".repeat(32));
        assert_eq!(text_of(&events[0]), want);
        // Many arguments: the whole text is cut at the capacity of RequestText (256).
        let args: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
            .chain(std::iter::repeat_n(&value[..], 20))
            .collect();
        let events = at_once(C, &command(&args));
        match &events[0] {
            Event::Request(r) => {
                assert!(r.text.is_cut());
                assert!(r.text.len() <= 256);
                assert_eq!(r.resource.as_str(), "MSET");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_bulk_command_elements_are_malformed_then_resync() {
        // Redis requires bulk strings in a command array.
        check_splits(
            C,
            b"*2\r\n:1\r\n:2\r\n*1\r\n$4\r\nPING\r\n",
            &[Event::Anomaly(Anomaly::Malformed), req("PING", "PING", 14)],
        );
    }

    // ----- secrets -----

    #[test]
    fn auth_and_other_secrets_are_scrubbed() {
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"AUTH", b"s3cret"], "AUTH ?"),
            (&[b"auth", b"alice", b"s3cret"], "AUTH ? ?"),
            (
                &[
                    b"HELLO", b"3", b"AUTH", b"alice", b"s3cret", b"SETNAME", b"app",
                ],
                "HELLO 3 AUTH ? ? SETNAME app",
            ),
            (
                &[b"CONFIG", b"SET", b"requirepass", b"s3cret"],
                "CONFIG SET requirepass ?",
            ),
            (
                &[
                    b"config",
                    b"set",
                    b"maxmemory",
                    b"10mb",
                    b"MASTERAUTH",
                    b"s3cret",
                ],
                "CONFIG set maxmemory 10mb MASTERAUTH ?",
            ),
            (
                &[b"CONFIG", b"GET", b"requirepass"],
                "CONFIG GET requirepass",
            ),
            (
                &[
                    b"MIGRATE",
                    b"10.0.0.1",
                    b"6379",
                    b"",
                    b"0",
                    b"5000",
                    b"AUTH2",
                    b"alice",
                    b"s3cret",
                    b"KEYS",
                    b"a",
                ],
                "MIGRATE 10.0.0.1 6379  0 5000 AUTH2 ? ? KEYS a",
            ),
            // The key may be called AUTH: only options (index 6 on) are looked at.
            (
                &[
                    b"MIGRATE", b"h", b"6379", b"AUTH", b"0", b"5000", b"AUTH", b"s3cret",
                ],
                "MIGRATE h 6379 AUTH 0 5000 AUTH ?",
            ),
            (
                &[
                    b"ACL", b"SETUSER", b"alice", b"on", b">s3cret", b"~*", b"+@all",
                ],
                "ACL SETUSER alice on ? ~* +@all",
            ),
            (
                &[b"SENTINEL", b"SET", b"mymaster", b"auth-pass", b"s3cret"],
                "SENTINEL SET mymaster auth-pass ?",
            ),
        ];
        for (args, want) in cases {
            let events = at_once(C, &command(args));
            assert_eq!(events.len(), 1, "{want}");
            assert_eq!(text_of(&events[0]), *want);
            assert!(!text_of(&events[0]).contains("s3cret"));
        }
        // Inline, with quoting.
        let inline: &[(&[u8], &str)] = &[
            (b"AUTH \"my s3cret\"\r\n", "AUTH ?"),
            (b"AUTH s3cret\r\n", "AUTH ?"),
            (
                b"hello 3 auth alice 's3 cret' setname x\r\n",
                "HELLO 3 auth ? ? setname x",
            ),
            (
                b"CONFIG SET requirepass \"s3\\\"cret\"\r\n",
                "CONFIG SET requirepass ?",
            ),
        ];
        for (line, want) in inline {
            let events = at_once(C, line);
            assert_eq!(events.len(), 1, "{want}");
            assert_eq!(text_of(&events[0]), *want);
            assert!(!text_of(&events[0]).contains("s3"));
        }
        // The resource is the command name.
        match &at_once(C, &command(&[b"hello", b"3", b"AUTH", b"u", b"p"]))[0] {
            Event::Request(r) => assert_eq!(r.resource.as_str(), "HELLO"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_split_everywhere() {
        // 4 + 10 + 9 + 12 = 35.
        let data = b"*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$6\r\ns3cret\r\n";
        check_splits(C, data, &[req("AUTH", "AUTH ? ?", 35)]);
    }

    // ----- replies -----

    #[test]
    fn error_replies() {
        let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"; // 68
        let err = b"-ERR unknown command 'FOO'\r\n"; // 1 + 25 + 2 = 28
        let blob = b"!21\r\nSYNTAX invalid syntax\r\n"; // 5 + 21 + 2 = 28
        let bare = b"-\r\n"; // 3
        let data = [&wrongtype[..], err, blob, bare].concat();
        check_splits(
            S,
            &data,
            &[
                resp("WRONGTYPE", "error", true, 68),
                resp("ERR", "error", true, 28),
                resp("SYNTAX", "error", true, 28),
                resp("ERR", "error", true, 3),
            ],
        );
    }

    #[test]
    fn nested_xrange_reply_split_everywhere() {
        // XRANGE: two entries, each [id, [field, value, ...]].
        let reply: &[u8] = b"*2\r\n\
            *2\r\n$15\r\n1526985054069-0\r\n*4\r\n$8\r\nduration\r\n$4\r\n1532\r\n$10\r\nevent-type\r\n$1\r\n5\r\n\
            *2\r\n$15\r\n1526985054079-0\r\n*2\r\n$8\r\nduration\r\n$3\r\n437\r\n";
        // 4 | 4 + 22 + 4 + 14 + 10 + 17 + 7 = 78 | 4 + 22 + 4 + 14 + 9 = 53  => 135
        let data = [reply, b":7\r\n"].concat();
        check_splits(S, &data, &[ok("array", 135), ok("integer", 4)]);
    }

    #[test]
    fn resp3_types() {
        let map: &[u8] = b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n"; // 4 + 8 + 4 + 9 + 4 = 29
        let set: &[u8] = b"~2\r\n+a\r\n+b\r\n"; // 12
        let push: &[u8] = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"; // not a response
                                                                           // Attribute before the reply it decorates: counted in its bytes (81, see below).
        let attr: &[u8] =
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n\
                            *2\r\n:2039123\r\n:9543892\r\n";
        let double: &[u8] = b",3.14\r\n"; // 7
        let boolean: &[u8] = b"#t\r\n"; // 4
        let null: &[u8] = b"_\r\n"; // 3
        let big: &[u8] = b"(3492890328409238509324850943850943825024385\r\n"; // 1 + 43 + 2 = 46
        let verbatim: &[u8] = b"=15\r\ntxt:Some string\r\n"; // 5 + 15 + 2 = 22
                                                             // Streamed string: 4 + (4+6) + (4+7) + (4+3) + 4 = 36.
        let streamed: &[u8] = b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n";
        // Streamed aggregates: 4 + 4 + 4 + 3 = 15; map 4 + 4 + 4 + 3 = 15.
        let agg: &[u8] = b"*?\r\n:1\r\n:2\r\n.\r\n";
        let smap: &[u8] = b"%?\r\n+a\r\n:1\r\n.\r\n";
        // An attribute inside an array does not count as an element: 4 + 17 + 4 + 4 = 29.
        let inner_attr: &[u8] = b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n";
        let data = [
            map, set, push, attr, double, boolean, null, big, verbatim, streamed, agg, smap,
            inner_attr,
        ]
        .concat();
        check_splits(
            S,
            &data,
            &[
                ok("map", 29),
                ok("set", 12),
                ok("array", 81),
                ok("double", 7),
                ok("boolean", 4),
                ok("nil", 3),
                ok("bignum", 46),
                ok("verbatim", 22),
                ok("bulk", 36),
                ok("array", 15),
                ok("map", 15),
                ok("array", 29),
            ],
        );
    }

    // ----- pub/sub -----

    #[test]
    fn subscribe_is_one_request_one_response_resp2() {
        let sub = command(&[b"SUBSCRIBE", b"a", b"b", b"c"]); // 40 bytes
        let confirmations = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
                              *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
                              *3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:3\r\n"; // 30 each
        let messages = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n\
                         *4\r\n$8\r\npmessage\r\n$2\r\nb*\r\n$1\r\nb\r\n$2\r\nhi\r\n\
                         *3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nbye\r\n";
        let ping = command(&[b"PING"]); // 14
        let pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"; // 4 + 10 + 6 = 20
        let events = script(&[
            (C, &sub),
            (S, confirmations),
            (S, messages),
            (C, &ping),
            (S, pong),
            (S, messages),
        ]);
        assert_eq!(
            events,
            vec![
                req("SUBSCRIBE", "SUBSCRIBE a b c", 40),
                ok("array", 30),
                req("PING", "PING", 14),
                ok("array", 20),
            ]
        );
        // Byte by byte, the same.
        let mut h = Harness::new();
        for (dir, bytes) in [
            (C, &sub[..]),
            (S, &confirmations[..]),
            (S, &messages[..]),
            (C, &ping),
            (S, pong),
        ] {
            for b in bytes {
                h.push(dir, std::slice::from_ref(b));
            }
        }
        assert_eq!(h.out, events);
    }

    #[test]
    fn subscribe_resp3_pushes() {
        let hello = b"HELLO 3\r\n";
        let hello_reply = b"%1\r\n+server\r\n+redis\r\n"; // 4 + 9 + 8 = 21
        let sub = command(&[b"subscribe", b"a", b"b"]); // 4 + 15 + 7 + 7 = 33
        let confirmations =
            b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n";
        let pushes =
            b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n";
        let get = command(&[b"GET", b"k"]); // 20
        let events = script(&[
            (C, hello),
            (S, hello_reply),
            (C, &sub),
            (C, &get),
            (S, confirmations),
            (S, pushes),
            (S, b"$1\r\nv\r\n"),
        ]);
        assert_eq!(
            events,
            vec![
                req("HELLO", "HELLO 3", 9),
                ok("map", 21),
                req("SUBSCRIBE", "SUBSCRIBE a b", 33),
                req("GET", "GET k", 20),
                ok("push", 30),
                ok("bulk", 7),
            ]
        );
    }

    #[test]
    fn unsubscribe_without_arguments() {
        let events = script(&[
            (C, &command(&[b"SUBSCRIBE", b"a", b"b"])),
            (S, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
            // All channels: one confirmation per channel, counts 1 then 0 (28 bytes each).
            (C, &command(&[b"UNSUBSCRIBE"])),
            (S, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"),
            // Again, subscribed to nothing: one confirmation with a nil channel (4+18+5+4 = 31).
            (C, b"UNSUBSCRIBE\r\n"),
            (S, b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            // Not subscribed any more: an array that looks like a message is a reply.
            (C, &command(&[b"LRANGE", b"l", b"0", b"-1"])),
            (S, b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$1\r\ny\r\n"),
        ]);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| match e {
                Event::Request(r) => format!("req {}", r.text),
                Event::Response(r) => format!("resp {} {}", r.kind, r.bytes),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "req SUBSCRIBE a b",
                "resp array 30",
                "req UNSUBSCRIBE",
                "resp array 33",
                "req UNSUBSCRIBE",
                "resp array 31",
                "req LRANGE l 0 -1",
                "resp array 31",
            ]
        );
    }

    #[test]
    fn unsubscribe_all_with_patterns_left() {
        // Counts include patterns: unsubscribing all channels ends at count 1, not 0.
        let events = script(&[
            (C, b"SUBSCRIBE a\r\n"),
            (S, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
            (C, b"PSUBSCRIBE p*\r\n"),
            (S, b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n"),
            (C, b"UNSUBSCRIBE\r\n"),
            (S, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"),
            (C, b"PUNSUBSCRIBE\r\n"),
            (S, b"*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n"),
            (C, b"GET k\r\n"),
            (S, b"$-1\r\n"),
        ]);
        let responses = events
            .iter()
            .filter(|e| matches!(e, Event::Response(_)))
            .count();
        let requests = events
            .iter()
            .filter(|e| matches!(e, Event::Request(_)))
            .count();
        assert_eq!((requests, responses), (5, 5), "{events:?}");
        assert_eq!(events.last(), Some(&ok("nil", 5)));
    }

    #[test]
    fn refused_subscribe_gets_its_error() {
        let events = script(&[
            (C, b"SUBSCRIBE a\r\n"),
            (S, b"-NOAUTH Authentication required.\r\n"),
            (C, b"GET k\r\n"),
            (S, b"$1\r\nv\r\n"),
        ]);
        assert_eq!(
            events,
            vec![
                req("SUBSCRIBE", "SUBSCRIBE a", 13),
                resp("NOAUTH", "error", true, 34),
                req("GET", "GET k", 7),
                ok("bulk", 7),
            ]
        );
    }

    #[test]
    fn messages_mid_stream_are_not_responses() {
        // A subscriber connection whose start was not seen: nothing is outstanding.
        let events = at_once(S, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
        assert!(events.is_empty(), "{events:?}");
    }

    // ----- limits and garbage -----

    #[test]
    fn huge_declared_array_is_a_limit_hit() {
        let mut h = Harness::new();
        h.push(S, b"*2147483648\r\n:1\r\n+OK\r\n");
        assert_eq!(
            h.out,
            vec![
                Event::Anomaly(Anomaly::LimitExceeded),
                ok("integer", 4),
                ok("simple", 5)
            ]
        );
        let mut h = Harness::new();
        h.push(
            C,
            b"*2147483648\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n",
        );
        assert_eq!(
            h.out,
            vec![
                Event::Anomaly(Anomaly::LimitExceeded),
                req("PING", "PING", 14)
            ]
        );
        // With no element limit it is followed without allocating anything for it.
        let limits = Limits {
            max_resp_elements: u64::MAX,
            ..Limits::default()
        };
        let mut h = Harness::with(&limits);
        h.push(S, b"*2147483648\r\n:1\r\n:2\r\n");
        assert!(h.out.is_empty());
        assert!(h.s.in_message(S));
        assert_eq!(h.s.server.stack.len(), 1);
        assert!(h.s.server.stack.capacity() < 64);
    }

    #[test]
    fn deep_nesting_is_a_limit_hit_without_recursion() {
        let data = b"*1\r\n".repeat(100_000);
        let mut h = Harness::new();
        h.push(S, &data);
        assert_eq!(h.out, vec![Event::Anomaly(Anomaly::LimitExceeded)]);
        assert!(h.s.server.stack.len() <= Limits::default().max_resp_depth);
        // Client commands never nest.
        let mut h = Harness::new();
        h.push(C, &data);
        assert_eq!(h.out, vec![Event::Anomaly(Anomaly::Malformed)]);
    }

    #[test]
    fn ten_megabyte_bulk_is_consumed_incrementally() {
        const N: usize = 10 * 1024 * 1024;
        let mut data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10485760\r\n".to_vec();
        data.resize(data.len() + N, b'x');
        data.extend_from_slice(b"\r\n");
        let mut h = Harness::new();
        let mut mid = false;
        for chunk in data.chunks(1448) {
            h.push(C, chunk);
            mid |= h.s.in_message(C);
        }
        assert!(mid);
        assert!(!h.s.in_message(C));
        assert!(h.max_held < 64, "held {}", h.max_held);
        // 4 + 9 + 7 + 11 + 10485760 + 2
        let text = format!("SET k {}...", "x".repeat(32));
        assert_eq!(h.out, vec![req("SET", &text, 10_485_793)]);

        let mut reply = b"$10485760\r\n".to_vec();
        reply.resize(reply.len() + N, b'y');
        reply.extend_from_slice(b"\r\n");
        for chunk in reply.chunks(1448) {
            h.push(S, chunk);
        }
        assert!(h.max_held < 64);
        assert_eq!(h.out.last(), Some(&ok("bulk", 10_485_773)));
    }

    #[test]
    fn overlong_line_is_a_limit_hit() {
        let limits = Limits {
            max_buffered: 64,
            ..Limits::default()
        };
        let mut h = Harness::with(&limits);
        h.push(S, &[b'+'; 100]);
        h.push(S, b"aaa\r\n+OK\r\n");
        assert_eq!(
            h.out,
            vec![Event::Anomaly(Anomaly::LimitExceeded), ok("simple", 5)]
        );
        let mut h = Harness::with(&limits);
        h.push(C, &[b'a'; 100]);
        h.push(C, b"\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            h.out,
            vec![
                Event::Anomaly(Anomaly::LimitExceeded),
                req("PING", "PING", 14)
            ]
        );
    }

    #[test]
    fn garbage_then_resync() {
        check_splits(
            S,
            b"\x00\x01garbage\r\nmore junk\r\n:x\r\n+OK\r\n",
            &[Event::Anomaly(Anomaly::Malformed), ok("simple", 5)],
        );
        // A bulk string whose length lies.
        check_splits(
            S,
            b"$2\r\nabc\r\n-ERR x\r\n",
            &[
                Event::Anomaly(Anomaly::Malformed),
                resp("ERR", "error", true, 8),
            ],
        );
        // A bare LF ends no RESP line.
        check_splits(
            C,
            b"*1\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
            &[Event::Anomaly(Anomaly::Malformed), req("PING", "PING", 14)],
        );
    }

    #[test]
    fn gap_resynchronises() {
        let mut h = Harness::new();
        h.push(S, b"$100\r\nabc");
        assert!(h.s.in_message(S));
        h.gap(S);
        assert!(!h.s.in_message(S));
        h.push(S, b"tail of the value\r\n:5\r\n");
        assert_eq!(h.out, vec![ok("integer", 4)]);

        let mut h = Harness::new();
        h.push(C, b"*2\r\n$3\r\nGET\r\n$100\r\nab");
        h.gap(C);
        h.push(C, b"cd\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(h.out, vec![req("PING", "PING", 14)]);
        // After a gap the first byte may begin a command.
        h.gap(C);
        h.push(C, b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(h.out.len(), 2);
    }

    #[test]
    fn in_message_tracks_partial_messages() {
        let mut h = Harness::new();
        h.push(C, b"*2\r\n$3\r\nGET\r\n");
        assert!(h.s.in_message(C));
        h.push(C, b"$1\r\nk\r\n");
        assert!(!h.s.in_message(C));
        h.push(S, b"*2\r\n:1\r\n");
        assert!(h.s.in_message(S));
        h.push(S, b":2\r\n");
        assert!(!h.s.in_message(S));
        assert_eq!(h.out.len(), 2);
    }

    // ----- probe -----

    #[test]
    fn probe_cases() {
        use Probe::{Match, NeedMore, No};
        let request = Match(Role::Request);
        let response = Match(Role::Response);
        let cases: &[(&[u8], bool, Probe)] = &[
            (b"*1\r\n$4\r\nPING\r\n", false, request),
            (b"*3\r\n$3\r\nSET\r\n", false, request),
            (b"*", false, NeedMore),
            (b"*1\r", false, NeedMore),
            (b"*1\r\n", false, NeedMore),
            (b"*1\r\n$4\r", false, NeedMore),
            (b"*2\r\n$1000\r\n", false, No),
            (b"*2\r\n$15\r\n1526985054069-0\r\n", false, No),
            (b"*2\r\n$15\r\n1526985054069-0\r\n", true, response),
            (b"*2\r\n$8\r\nJSON.GET\r\n", false, request),
            (b"*3\r\n:1\r\n:2\r\n:3\r\n", false, No),
            (b"*3\r\n:1\r\n:2\r\n:3\r\n", true, response),
            // Inline commands only with the port hint: without it "GET /" may be HTTP/0.9.
            (b"PING\r\n", true, request),
            (b"PING\r\n", false, No),
            (b"ping\n", true, request),
            (b"PI", true, NeedMore),
            (b"set k v\r\n", true, request),
            (b"GET foo\r\n", true, request),
            (b"GET /\r\n", false, No),
            (b"GET /index.html HTTP/1.1\r\nHost: x\r\n", true, No),
            (b"GET /index", true, NeedMore),
            (b"HELO mail.example.com\r\n", true, No),
            (b"GETX\r\n", true, No),
            (b"+OK\r\n", false, response),
            (b"+PONG\r\n", false, response),
            (b"-ERR unknown command\r\n", false, response),
            (b"+O", false, NeedMore),
            (b"+QUEUED\r\n", false, No),
            (b"+QUEUED\r\n", true, response),
            (b"$5\r\nhello\r\n", false, No),
            (b"$5\r\nhello\r\n", true, response),
            (b"$5", true, NeedMore),
            (b":1\r\n", true, response),
            (b"%1\r\n+a\r\n:1\r\n", true, response),
            (b"\x16\x03\x01\x02\x00", true, No),
            (b"", false, NeedMore),
        ];
        for (data, hint, want) in cases {
            assert_eq!(
                probe(data, *hint),
                *want,
                "{:?} hint {hint}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn header_parser() {
        assert_eq!(
            parse_header(b"$-1"),
            Ok(Header {
                ty: b'$',
                val: Val::Len(-1)
            })
        );
        assert_eq!(parse_header(b"%-1"), Err(Anomaly::Malformed));
        assert_eq!(
            parse_header(b":-9223372036854775807"),
            Ok(Header {
                ty: b':',
                val: Val::Int(-9_223_372_036_854_775_807)
            })
        );
        assert_eq!(
            parse_header(b":99999999999999999999"),
            Err(Anomaly::Malformed)
        );
        assert_eq!(parse_header(b"#x"), Err(Anomaly::Malformed));
        assert_eq!(parse_header(b"=?"), Err(Anomaly::Malformed));
        assert_eq!(
            parse_header(b"*?"),
            Ok(Header {
                ty: b'*',
                val: Val::Streamed
            })
        );
        assert_eq!(parse_header(b""), Err(Anomaly::Malformed));
        assert_eq!(
            parse_header(b",-inf"),
            Ok(Header {
                ty: b',',
                val: Val::Line(b"-inf")
            })
        );
    }

    /// A 60 KB inline command and a 60 KB RESP header line (a bulk length that never ends)
    /// arriving a byte per segment: each byte is scanned once. Scanning the partial line
    /// again from its start on each feed would look at about n²/2 = 1.8 × 10⁹ bytes.
    #[test]
    fn a_line_arriving_a_byte_at_a_time_is_scanned_once() {
        let mut inline = b"SET k ".to_vec();
        inline.extend(std::iter::repeat_n(b'v', 60_000));
        inline.extend_from_slice(b"\r\n");
        let mut h = Harness::new();
        for b in &inline {
            h.push(C, std::slice::from_ref(b));
        }
        assert_eq!(h.out.len(), 1, "{:?}", h.out);
        assert!(matches!(&h.out[0], Event::Request(r) if r.bytes == inline.len() as u64));
        let n = inline.len() as u64;
        assert!(
            h.s.client.scanned <= 2 * n,
            "{} for {n}",
            h.s.client.scanned
        );

        let mut h = Harness::new();
        let mut header = b"$".to_vec();
        header.extend(std::iter::repeat_n(b'9', 60_000));
        for b in &header {
            h.push(S, std::slice::from_ref(b));
        }
        let n = header.len() as u64;
        assert!(
            h.s.server.scanned <= 2 * n,
            "{} for {n}",
            h.s.server.scanned
        );
        assert_eq!(h.held[1].len(), header.len(), "the line is still waiting");
    }
}
