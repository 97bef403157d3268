//! MySQL client/server protocol, both directions, streaming.
//!
//! Framing: every packet is a 3-byte little-endian payload length, a sequence id and the
//! payload; a payload of exactly 0xFFFFFF bytes continues in the next packet (one logical
//! message). The session needs only a packet header and a small head of each logical
//! message (the whole of a small packet, up to [`QUERY_HEAD`] bytes of SQL); the rest of
//! every payload (rows, long SQL, LOCAL INFILE data) is skipped incrementally, so logical
//! messages of any size are followed without buffering them (bounded by
//! [`Limits::max_mysql_message`]).
//!
//! Events:
//! * the connection phase (greeting, HandshakeResponse, auth switch / more data) yields no
//!   request and never puts login data into events; a login ERR is
//!   [`Event::LoginFailed`] (`"LOGIN ERR 1045"`); an SSLRequest is [`Event::Encrypted`],
//!   after which both directions are consumed silently;
//! * every client command (sequence id 0) is a [`Request`] except COM_QUIT,
//!   COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA, which get no response;
//! * one [`Response`] per command: `"OK"` (kind `"OK"`, or `"resultset"` for result sets,
//!   including ones chained by SERVER_MORE_RESULTS_EXISTS), `"ERR <errno>"` (error).
//!
//! The compressed protocol (CLIENT_COMPRESS negotiated) is inflated incrementally with
//! miniz_oxide into a session-owned buffer of `max_buffered` bytes that the packet parser
//! drains, so frames of any uncompressed size are followed in bounded memory.

mod sql;
mod wire;

#[cfg(test)]
mod tests;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};

use crate::detect::{Probe, Role};
use crate::event::{Code, Request, RequestText, Resource, Response};
use crate::queue::InlineQueue;
use crate::text::Text;
use crate::{Anomaly, Direction, Event, Events, Limits, Session};
use wire::{PacketHeader, FULL_PACKET};

const CLIENT_COMPRESS: u32 = 0x20;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 0x0200_0000;
const CLIENT_ZSTD_COMPRESSION: u32 = 0x0400_0000;
const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_CREATE_DB: u8 = 0x05;
const COM_DROP_DB: u8 = 0x06;
const COM_REFRESH: u8 = 0x07;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_INFO: u8 = 0x0a;
const COM_PROCESS_KILL: u8 = 0x0c;
const COM_DEBUG: u8 = 0x0d;
const COM_PING: u8 = 0x0e;
const COM_CHANGE_USER: u8 = 0x11;
const COM_BINLOG_DUMP: u8 = 0x12;
const COM_REGISTER_SLAVE: u8 = 0x15;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_STMT_FETCH: u8 = 0x1c;
const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
const COM_RESET_CONNECTION: u8 = 0x1f;

/// Command names by command byte (resource `COM_<NAME>` for the ones without a better one).
const COMMANDS: [&str; 0x22] = [
    "SLEEP",
    "QUIT",
    "INIT_DB",
    "QUERY",
    "FIELD_LIST",
    "CREATE_DB",
    "DROP_DB",
    "REFRESH",
    "SHUTDOWN",
    "STATISTICS",
    "PROCESS_INFO",
    "CONNECT",
    "PROCESS_KILL",
    "DEBUG",
    "PING",
    "TIME",
    "DELAYED_INSERT",
    "CHANGE_USER",
    "BINLOG_DUMP",
    "TABLE_DUMP",
    "CONNECT_OUT",
    "REGISTER_SLAVE",
    "STMT_PREPARE",
    "STMT_EXECUTE",
    "STMT_SEND_LONG_DATA",
    "STMT_CLOSE",
    "STMT_RESET",
    "SET_OPTION",
    "STMT_FETCH",
    "DAEMON",
    "BINLOG_DUMP_GTID",
    "RESET_CONNECTION",
    "CLONE",
    "SUBSCRIBE_GROUP_REPLICATION_STREAM",
];

/// Bytes of SQL read for the resource and the request text.
pub const QUERY_HEAD: usize = 2048;
/// Bytes read of other client messages (command byte, statement id, capabilities).
const CLIENT_HEAD: usize = 16;
const FIELD_LIST_HEAD: usize = 256;
/// Bytes read of server messages (OK/ERR/EOF fields, column count, PREPARE OK).
const SERVER_HEAD: usize = 32;
const GREETING_HEAD: usize = 512;
/// Largest column count believed (MySQL's limit is 4096 columns per table).
const MAX_COLUMNS: u64 = 65_535;
/// Prepared statements remembered for EXECUTE's resource.
const STMT_SLOTS: usize = 32;
/// Most commands waiting for a response (MySQL clients rarely pipeline).
const MAX_PENDING: usize = 256;
/// Bytes of a compressed frame header.
const FRAME_HEADER: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server greeting (server side only).
    Greeting,
    /// Connection phase: login and auth exchange.
    Login,
    Command,
}

/// Where the server side is within a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resp {
    /// Expecting the first packet of a response, or of the next result of a chained one.
    Idle,
    /// Column definitions still to come.
    Columns(u64),
    /// After the column definitions: the EOF (EOF mode), or detect the mode.
    ColumnsEnd,
    Rows,
    /// COM_FIELD_LIST: column definitions until EOF.
    FieldList,
    /// COM_STMT_PREPARE: `left` definitions in this block, then `next` in the next one.
    PrepareDefs {
        left: u16,
        next: u16,
    },
    /// After a block of PREPARE definitions: EOF (or, mode unknown, maybe none).
    PrepareEof {
        next: u16,
    },
    /// Binlog events after COM_BINLOG_DUMP: consumed silently.
    Replication,
}

/// Packet framing state of one direction.
#[derive(Clone, Copy, Debug, Default)]
struct Framer {
    /// Payload bytes of the current packet not consumed yet.
    pkt_left: u32,
    /// The current logical message continues in the next packet.
    more: bool,
    /// Inside a logical message.
    active: bool,
    /// Wire bytes of the current logical message so far.
    msg_bytes: u64,
    /// Wire bytes toward the current request or response event.
    acc: u64,
    /// Scanning for a plausible message start.
    resync: bool,
}

/// The client command being read.
#[derive(Clone, Copy, Debug)]
struct ReqInfo {
    cmd: u8,
    resource: Resource,
}

/// A command waiting for its response.
#[derive(Clone, Copy, Debug)]
struct Pending {
    cmd: u8,
    /// The SQL resource of a COM_STMT_PREPARE (remembered under the statement id).
    resource: Resource,
}

/// Compressed-protocol state of one direction.
struct Zdir {
    /// Compressed payload bytes of the current frame not consumed yet.
    frame_left: u32,
    /// The current frame's payload is sent uncompressed.
    raw: bool,
    /// The inflater may still produce output for the current frame.
    inflating: bool,
    /// Skipping the rest of a bad frame.
    skip: bool,
    /// Uncompressed bytes the frame header announced and not produced yet.
    out_left: u64,
    /// Scanning for a plausible frame header.
    resync: bool,
    /// Inflated bytes not yet consumed by the packet parser (capacity fixed).
    plain: Vec<u8>,
    inflater: Box<InflateState>,
}

impl Zdir {
    fn new(cap: usize) -> Self {
        Zdir {
            frame_left: 0,
            raw: true,
            inflating: false,
            skip: false,
            out_left: 0,
            resync: false,
            plain: Vec::with_capacity(cap),
            inflater: InflateState::new_boxed(DataFormat::Zlib),
        }
    }
}

/// What one step of the compressed layer asks the driver to do.
enum Zstep {
    Continue,
    Return,
    /// The inner packet stream lost bytes: report and resynchronise it.
    Gap(Anomaly),
}

/// MySQL session (one TCP connection, both directions).
pub struct MysqlSession {
    max_buffered: usize,
    max_message: u64,
    pending_cap: usize,
    /// Fill `Request::text` (records are written).
    want_text: bool,

    client_phase: Phase,
    server_phase: Phase,
    /// SSL (or an undecodable compression): consume everything silently.
    opaque: bool,
    compressed: bool,
    /// Switch to the compressed protocol when the current server message ends.
    compress_at_end: bool,
    client_caps: Option<u32>,
    server_caps: Option<u32>,
    login_seen: bool,
    /// true: EOF packets; false: CLIENT_DEPRECATE_EOF; None: not known (mid-stream).
    eof_mode: Option<bool>,
    meta_optional: bool,
    /// Negotiated capabilities (client's and server's), when the login was seen.
    caps: Option<u32>,
    /// The start was not seen: the first command found tells whether frames are compressed.
    detect_compression: bool,

    fr: [Framer; 2],

    // Client side.
    req: Option<ReqInfo>,
    /// Its record text: only when records are written (else empty, so not kept: an open
    /// connection then does not hold 256 bytes for it).
    req_text: Option<Box<RequestText>>,
    pending: InlineQueue<Pending, 1>,
    stmts: Vec<(u32, Resource)>,
    stmt_next: usize,

    // Server side.
    resp: Resp,
    /// A response has started and not ended.
    resp_active: bool,
    resp_cmd: u8,
    resp_resource: Resource,
    /// Result sets in the current response.
    resp_sets: u32,
    /// The current response answers no known command: parse it, report no Response.
    resp_unsolicited: bool,
    /// EOF mode of the current result set.
    rs_eof: Option<bool>,
    rs_binary: bool,
    /// A PREPARE response complete unless an EOF follows (EOF mode not known yet).
    deferred: Option<Response>,
    /// Server bytes are discarded until the client's next command (mid-stream, after a gap).
    server_wait_cmd: bool,

    z: Option<Box<[Zdir; 2]>>,
    /// Per direction: wire bytes and inflated bytes of the current compressed frame, to
    /// turn inflated message sizes into (approximate) sizes on the wire.
    ratio: [(u64, u64); 2],
    /// Per direction: wire bytes of compressed frames begun since the last event.
    zwire: [u64; 2],
}

fn push_num<const N: usize>(t: &mut Text<N>, v: u64) {
    let mut digits = [0u8; 20];
    let mut n = v;
    let mut i = digits.len();
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = digits.get_mut(i) {
            *d = b'0'.saturating_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    t.push_bytes_lossy(digits.get(i..).unwrap_or(&[]));
}

fn err_code(prefix: &str, head: &[u8]) -> Code {
    let mut c = Code::from_str_lossy(prefix);
    if let Ok((_, n)) = wire::parse_err_code(head) {
        c.push_char(' ');
        push_num(&mut c, u64::from(n));
    }
    c
}

fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// SQL text looks like text (printable, whitespace or UTF-8).
fn text_plausible(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .take(32)
            .all(|&b| b >= 0x20 && b != 0x7f || b.is_ascii_whitespace())
}

/// Could `w` start with a client command packet? None: too few bytes to say.
fn plausible_command(w: &[u8]) -> Option<bool> {
    let h = wire::parse_packet_header(w).ok()?.1;
    if h.seq != 0 {
        return Some(false);
    }
    let cmd = *w.get(4)?;
    let len = h.len;
    let ok = match cmd {
        COM_QUIT | COM_STATISTICS | COM_PROCESS_INFO | COM_DEBUG | COM_PING
        | COM_RESET_CONNECTION => len == 1,
        COM_INIT_DB | COM_CREATE_DB | COM_DROP_DB => (2..=257).contains(&len),
        COM_QUERY | COM_STMT_PREPARE => len >= 2 && text_plausible(w.get(5..6)?),
        COM_FIELD_LIST => (2..=1024).contains(&len),
        COM_REFRESH => len == 2,
        COM_PROCESS_KILL | COM_STMT_CLOSE | COM_STMT_RESET => len == 5,
        COM_STMT_EXECUTE => len >= 10,
        COM_STMT_SEND_LONG_DATA => len >= 7,
        COM_STMT_FETCH => len == 9,
        COM_SET_OPTION => len == 3,
        COM_CHANGE_USER => (2..4096).contains(&len),
        COM_BINLOG_DUMP | COM_BINLOG_DUMP_GTID | COM_REGISTER_SLAVE => (7..4096).contains(&len),
        _ => false,
    };
    Some(ok)
}

/// Could `w` start with the first packet of a response to `cmd`? None: need more bytes.
fn plausible_response(w: &[u8], cmd: Option<u8>) -> Option<bool> {
    let h = wire::parse_packet_header(w).ok()?.1;
    if h.seq != 1 {
        return Some(false);
    }
    let first = *w.get(4)?;
    let len = h.len;
    let ok = match first {
        0x00 => (7..0x1_0000).contains(&len),
        0xFF => (3..0x1_0000).contains(&len),
        0xFE | 0xFB => len < 0x1_0000,
        0x01..=0xFA => len <= 2 || matches!(cmd, Some(COM_STATISTICS | COM_FIELD_LIST)),
        0xFC => len == 3 || len == 4,
        0xFD => len == 4 || len == 5,
    };
    Some(ok)
}

/// Mid-stream: a plain command packet or a compressed frame (holding one)?
fn command_or_frame(w: &[u8]) -> Option<bool> {
    match (
        plausible_command(w),
        plausible_frame(w, Direction::ToServer),
    ) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (None, _) | (_, None) => None,
        _ => Some(false),
    }
}

/// Scan `data` for the first offset where `f` says yes. Returns (bytes that cannot start
/// a message, found).
fn scan(data: &[u8], f: impl Fn(&[u8]) -> Option<bool>) -> (usize, bool) {
    let mut off = 0usize;
    while let Some(w) = data.get(off..) {
        match f(w) {
            None => return (off, false),
            Some(true) => return (off, true),
            Some(false) => off = off.saturating_add(1),
        }
    }
    (data.len(), false)
}

/// Could `w` start with a compressed frame header (of `dir`)? None: need more bytes.
fn plausible_frame(w: &[u8], dir: Direction) -> Option<bool> {
    let h = wire::parse_frame_header(w).ok()?.1;
    if h.compressed_len == 0 {
        return Some(false);
    }
    let payload = w.get(FRAME_HEADER..)?;
    if h.uncompressed_len == 0 {
        let inner = wire::parse_packet_header(payload).ok()?.1;
        if inner.len.saturating_add(4) > h.compressed_len {
            return Some(false);
        }
        return match dir {
            Direction::ToServer => plausible_command(payload),
            Direction::ToClient => Some(inner.seq >= 1),
        };
    }
    let cmf = *payload.first()?;
    let flg = *payload.get(1)?;
    Some(
        h.compressed_len <= h.uncompressed_len.saturating_add(64)
            && cmf == 0x78
            && ((u32::from(cmf) << 8) | u32::from(flg)) % 31 == 0,
    )
}

impl MysqlSession {
    pub fn new(mid_stream: bool, limits: &Limits) -> Self {
        let mut s = MysqlSession {
            max_buffered: limits.max_buffered.max(64),
            max_message: limits.max_mysql_message,
            pending_cap: limits.max_pending.clamp(1, MAX_PENDING),
            want_text: limits.request_text,
            client_phase: Phase::Login,
            server_phase: Phase::Greeting,
            opaque: false,
            compressed: false,
            compress_at_end: false,
            client_caps: None,
            server_caps: None,
            login_seen: false,
            eof_mode: None,
            meta_optional: false,
            caps: None,
            detect_compression: mid_stream,
            fr: [Framer::default(); 2],
            req: None,
            req_text: limits.request_text.then(|| Box::new(RequestText::new())),
            // Grown on first use: most connections never prepare a statement and have one
            // command in flight, and 100 k open connections pay for every byte reserved here.
            pending: InlineQueue::default(),
            stmts: Vec::new(),
            stmt_next: 0,
            resp: Resp::Idle,
            resp_active: false,
            resp_cmd: COM_QUERY,
            resp_resource: Resource::new(),
            resp_sets: 0,
            resp_unsolicited: false,
            rs_eof: None,
            rs_binary: false,
            deferred: None,
            server_wait_cmd: false,
            z: None,
            ratio: [(1, 1); 2],
            zwire: [0; 2],
        };
        if mid_stream {
            s.client_phase = Phase::Command;
            s.server_phase = Phase::Command;
            s.fr[0].resync = true;
            s.server_wait_cmd = true;
        }
        s
    }

    /// Wire size of a message of `logical` (inflated) bytes of `dir` that ends now. When
    /// compressed: the frames begun since the previous event (a frame counts toward the
    /// message its first byte belongs to); for further messages inside an already counted
    /// frame, their share of that frame.
    fn wire_size(&mut self, dir: Direction, logical: u64) -> u64 {
        if !self.compressed {
            return logical;
        }
        let zwire = match dir {
            Direction::ToServer => &mut self.zwire[0],
            Direction::ToClient => &mut self.zwire[1],
        };
        let w = std::mem::take(zwire);
        if w > 0 {
            return w;
        }
        let (num, den) = self.ratio.get(dir.index()).copied().unwrap_or((1, 1));
        let v = u128::from(logical)
            .saturating_mul(u128::from(num))
            .checked_div(u128::from(den))
            .unwrap_or(0);
        u64::try_from(v).unwrap_or(u64::MAX).max(1)
    }

    fn framer(&mut self, dir: Direction) -> &mut Framer {
        match dir {
            Direction::ToServer => &mut self.fr[0],
            Direction::ToClient => &mut self.fr[1],
        }
    }

    /// Head bytes wanted of a new logical message of `dir` (`w` starts at its header).
    fn head_cap(&self, dir: Direction, hdr: PacketHeader, w: &[u8]) -> usize {
        let cap = match dir {
            Direction::ToServer => match (hdr.seq, w.get(4).copied()) {
                (0, Some(COM_QUERY | COM_STMT_PREPARE)) => QUERY_HEAD,
                (0, Some(COM_FIELD_LIST)) => FIELD_LIST_HEAD,
                _ => CLIENT_HEAD,
            },
            Direction::ToClient if self.server_phase == Phase::Greeting => GREETING_HEAD,
            Direction::ToClient => SERVER_HEAD,
        };
        cap.min(usize_of(hdr.len))
            .min(self.max_buffered.saturating_sub(4))
    }

    /// Packet parser over uncompressed bytes. Returns (consumed, mode switched): it stops
    /// right after a message that switched the connection to compression or opacity.
    fn feed_plain(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> (usize, bool) {
        let mut pos = 0usize;
        loop {
            if self.opaque || (dir == Direction::ToClient && self.server_wait_cmd) {
                return (data.len(), false);
            }
            let rest = data.get(pos..).unwrap_or(&[]);
            let fr = *self.framer(dir);
            if fr.pkt_left > 0 {
                let n = usize_of(fr.pkt_left).min(rest.len());
                pos = pos.saturating_add(n);
                let left = fr
                    .pkt_left
                    .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
                self.framer(dir).pkt_left = left;
                if left > 0 {
                    return (pos, false);
                }
                if self.packet_done(dir, out) {
                    return (pos, true);
                }
                continue;
            }
            if fr.resync {
                let cmd = self.pending.front().map(|p| p.cmd);
                let detect =
                    dir == Direction::ToServer && self.detect_compression && self.z.is_none();
                let (skip, found) = match dir {
                    Direction::ToServer if detect => scan(rest, command_or_frame),
                    Direction::ToServer => scan(rest, plausible_command),
                    Direction::ToClient => scan(rest, |w| plausible_response(w, cmd)),
                };
                pos = pos.saturating_add(skip);
                if !found {
                    return (pos, false);
                }
                self.framer(dir).resync = false;
                if detect {
                    self.detect_compression = false;
                    let w = data.get(pos..).unwrap_or(&[]);
                    if plausible_frame(w, Direction::ToServer) == Some(true) {
                        // Compressed frames: from here on both directions are compressed.
                        self.start_compression();
                        return (pos, true);
                    }
                }
                continue;
            }
            let Ok((_, hdr)) = wire::parse_packet_header(rest) else {
                return (pos, false);
            };
            let wire_len = u64::from(hdr.len).saturating_add(4);
            if fr.more {
                // Continuation of a logical message: skip it.
                pos = pos.saturating_add(4);
                let f = self.framer(dir);
                f.msg_bytes = f.msg_bytes.saturating_add(wire_len);
                f.acc = f.acc.saturating_add(wire_len);
                f.pkt_left = hdr.len;
                f.more = hdr.len == FULL_PACKET;
                if f.msg_bytes > self.max_message {
                    out.push(Event::Anomaly(Anomaly::LimitExceeded));
                    self.inner_gap(dir);
                    continue;
                }
                if hdr.len == 0 && self.packet_done(dir, out) {
                    return (pos, true);
                }
                continue;
            }
            if wire_len > self.max_message {
                out.push(Event::Anomaly(Anomaly::LimitExceeded));
                self.inner_gap(dir);
                pos = pos.saturating_add(4);
                continue;
            }
            let want = self.head_cap(dir, hdr, rest);
            let Some(head) = rest.get(4..want.saturating_add(4)) else {
                return (pos, false);
            };
            pos = pos.saturating_add(4).saturating_add(want);
            let f = self.framer(dir);
            f.active = true;
            f.msg_bytes = wire_len;
            f.acc = f.acc.saturating_add(wire_len);
            f.more = hdr.len == FULL_PACKET;
            f.pkt_left = hdr
                .len
                .saturating_sub(u32::try_from(want).unwrap_or(u32::MAX));
            match dir {
                Direction::ToServer => self.client_head(hdr, head, out),
                Direction::ToClient => self.server_head(hdr, head, out),
            }
            let f = *self.framer(dir);
            if f.pkt_left == 0 && !f.resync && self.packet_done(dir, out) {
                return (pos, true);
            }
        }
    }

    /// A packet's payload was consumed; ends the logical message unless it continues.
    fn packet_done(&mut self, dir: Direction, out: &mut Events) -> bool {
        let f = self.framer(dir);
        if f.more {
            return false;
        }
        f.active = false;
        match dir {
            Direction::ToServer => {
                self.client_end(out);
                self.opaque
            }
            Direction::ToClient => {
                if self.compress_at_end {
                    self.compress_at_end = false;
                    self.start_compression();
                    return true;
                }
                self.opaque
            }
        }
    }

    fn start_compression(&mut self) {
        let cap = self.max_buffered;
        self.compressed = true;
        self.z = Some(Box::new([Zdir::new(cap), Zdir::new(cap)]));
    }

    // ----- client side -------------------------------------------------------------

    fn client_head(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        self.req = None;
        if self.client_phase == Phase::Login {
            if hdr.seq == 0 && plausible_command_head(hdr, head) {
                // The login was not seen after all: commands already.
                self.client_phase = Phase::Command;
                if self.server_phase != Phase::Command {
                    self.server_phase = Phase::Command;
                }
            } else {
                if !self.login_seen {
                    self.login_seen = true;
                    let caps = wire::parse_client_capabilities(head).map(|x| x.1).ok();
                    self.client_caps = caps;
                    if hdr.len == 32 && caps.is_some_and(|c| c & CLIENT_SSL != 0) {
                        out.push(Event::Encrypted);
                        self.opaque = true;
                    }
                }
                return;
            }
        }
        if hdr.seq != 0 {
            // LOCAL INFILE data, auth data after COM_CHANGE_USER: not commands.
            return;
        }
        let Some(&cmd) = head.first() else { return };
        let body = head.get(1..).unwrap_or(&[]);
        let Some(name) = COMMANDS.get(usize::from(cmd)) else {
            out.push(Event::Anomaly(Anomaly::Malformed));
            self.inner_gap(Direction::ToServer);
            return;
        };
        let mut resource = Resource::new();
        let mut text = None;
        match cmd {
            COM_QUIT | COM_STMT_SEND_LONG_DATA => return,
            COM_STMT_CLOSE => {
                if let Ok((_, id)) = wire::parse_u32(body) {
                    self.stmts.retain(|(s, _)| *s != id);
                }
                return;
            }
            COM_QUERY => {
                let sql = self.query_sql(body);
                resource = sql::resource(sql);
                text = self.want_text.then(|| sql::scrubbed_text(sql));
            }
            COM_STMT_PREPARE => {
                resource = sql::resource(body);
                text = self.want_text.then(|| sql::scrubbed_text(body));
            }
            COM_INIT_DB => resource.push_str("INIT_DB"),
            COM_CHANGE_USER | COM_RESET_CONNECTION => {
                // The server drops the connection's prepared statements.
                self.stmts.clear();
                resource.push_str("COM_");
                resource.push_str(name);
            }
            COM_PING => resource.push_str("PING"),
            COM_FIELD_LIST => {
                resource.push_str("FIELD_LIST ");
                let table = body.split(|&b| b == 0).next().unwrap_or(&[]);
                resource.push_bytes_lossy(table);
            }
            COM_STMT_EXECUTE => {
                resource.push_str("EXECUTE");
                if let Ok((_, id)) = wire::parse_u32(body) {
                    if let Some((_, r)) = self.stmts.iter().find(|(s, _)| *s == id) {
                        resource.push_char(' ');
                        resource.push_str(r.as_str());
                    }
                }
            }
            _ => {
                resource.push_str("COM_");
                resource.push_str(name);
            }
        }
        if let Some(t) = self.req_text.as_deref_mut() {
            *t = text.unwrap_or_else(|| RequestText::from_str_lossy(resource.as_str()));
        }
        self.req = Some(ReqInfo { cmd, resource });
    }

    /// The SQL of a COM_QUERY: after the query attributes when CLIENT_QUERY_ATTRIBUTES
    /// was negotiated (or, capabilities unknown, when the body starts like them).
    fn query_sql<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        let attrs = match self.caps {
            Some(c) => c & CLIENT_QUERY_ATTRIBUTES != 0,
            None => body
                .first()
                .is_some_and(|&b| b < 0x20 && !b.is_ascii_whitespace()),
        };
        if !attrs {
            return body;
        }
        match wire::skip_query_attributes(body) {
            Some(sql) => sql,
            None if self.caps.is_some() => &[],
            None => body,
        }
    }

    fn client_end(&mut self, out: &mut Events) {
        let logical = std::mem::take(&mut self.fr[0].acc);
        let Some(req) = self.req.take() else { return };
        let bytes = self.wire_size(Direction::ToServer, logical);
        out.push(Event::Request(Request {
            resource: req.resource,
            text: self.req_text.as_deref().copied().unwrap_or_default(),
            id: None,
            bytes,
        }));
        if self.pending.len() >= self.pending_cap {
            self.pending.pop_front();
            out.push(Event::Anomaly(Anomaly::LimitExceeded));
        }
        self.pending.push_back(Pending {
            cmd: req.cmd,
            resource: req.resource,
        });
        if self.server_wait_cmd {
            // The server's next bytes answer this command: find its first packet.
            self.server_wait_cmd = false;
            self.zwire[1] = 0;
            self.fr[1] = Framer {
                resync: true,
                ..Framer::default()
            };
            if let Some(z) = self.z.as_deref_mut() {
                z[1].resync = true;
            }
        }
    }

    fn remember_stmt(&mut self, id: u32, resource: Resource) {
        if let Some(slot) = self.stmts.iter_mut().find(|(s, _)| *s == id) {
            slot.1 = resource;
        } else if self.stmts.len() < STMT_SLOTS {
            self.stmts.push((id, resource));
        } else {
            let i = self.stmt_next % STMT_SLOTS;
            if let Some(slot) = self.stmts.get_mut(i) {
                *slot = (id, resource);
            }
            self.stmt_next = i.saturating_add(1);
        }
    }

    // ----- server side -------------------------------------------------------------

    fn server_head(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        match self.server_phase {
            Phase::Greeting => self.greeting(hdr, head, out),
            Phase::Login => self.login_reply(head, out),
            Phase::Command => self.server_command(hdr, head, out),
        }
    }

    fn greeting(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        match head.first() {
            Some(0x0a) if hdr.seq == 0 => {
                self.server_caps = wire::parse_greeting(head).ok().map(|g| g.1.capabilities);
                self.server_phase = Phase::Login;
            }
            Some(0xFF) if hdr.seq == 0 => {
                // Refused before the greeting ("Too many connections").
                out.push(Event::LoginFailed {
                    code: err_code("LOGIN ERR", head),
                });
                self.server_phase = Phase::Login;
            }
            _ => {
                // Not a greeting: the connection's start was not seen. Commands from now
                // on; this packet answers one we did not see.
                self.server_phase = Phase::Command;
                self.client_phase = Phase::Command;
                self.server_wait_cmd = true;
                self.detect_compression = true;
                let f = &mut self.fr[1];
                f.pkt_left = 0;
                f.more = false;
                f.active = false;
            }
        }
        self.fr[1].acc = 0;
    }

    fn login_reply(&mut self, head: &[u8], out: &mut Events) {
        self.fr[1].acc = 0;
        match head.first() {
            Some(0x00) => {
                self.server_phase = Phase::Command;
                self.client_phase = Phase::Command;
                let caps = match (self.client_caps, self.server_caps) {
                    (Some(c), Some(s)) => Some(c & s),
                    (Some(c), None) => Some(c),
                    _ => None,
                };
                self.caps = caps;
                if let Some(caps) = caps {
                    self.eof_mode = Some(caps & CLIENT_DEPRECATE_EOF == 0);
                    self.meta_optional = caps & CLIENT_OPTIONAL_RESULTSET_METADATA != 0;
                    if caps & CLIENT_COMPRESS != 0 {
                        self.compress_at_end = true;
                    } else if caps & CLIENT_ZSTD_COMPRESSION != 0 {
                        // zstd frames cannot be read here: undecodable from now on.
                        out.push(Event::Anomaly(Anomaly::Malformed));
                        self.opaque = true;
                    }
                }
            }
            Some(0xFF) => out.push(Event::LoginFailed {
                code: err_code("LOGIN ERR", head),
            }),
            // 0xFE auth switch request, 0x01 auth more data: the exchange goes on.
            _ => {}
        }
    }

    fn learn_eof_mode(&mut self, eof: bool) {
        if self.eof_mode.is_none() {
            self.eof_mode = Some(eof);
        }
        if self.rs_eof.is_none() {
            self.rs_eof = Some(eof);
        }
    }

    /// End the current response. Returns the event unless it answers no known command.
    fn finish(&mut self, code: Code, kind: &str, error: bool) -> Option<Response> {
        let logical = std::mem::take(&mut self.fr[1].acc);
        let bytes = self.wire_size(Direction::ToClient, logical);
        self.resp = Resp::Idle;
        self.resp_active = false;
        self.resp_sets = 0;
        if std::mem::take(&mut self.resp_unsolicited) {
            return None;
        }
        Some(Response {
            code,
            error,
            kind: Code::from_str_lossy(kind),
            id: None,
            bytes,
        })
    }

    fn respond(&mut self, code: &str, kind: &str, out: &mut Events) {
        if let Some(r) = self.finish(Code::from_str_lossy(code), kind, false) {
            out.push(Event::Response(r));
        }
    }

    fn respond_ok(&mut self, out: &mut Events) {
        let kind = if self.resp_sets > 0 {
            "resultset"
        } else {
            "OK"
        };
        self.respond("OK", kind, out);
    }

    fn respond_err(&mut self, head: &[u8], out: &mut Events) {
        if let Some(r) = self.finish(err_code("ERR", head), "ERR", true) {
            out.push(Event::Response(r));
        }
    }

    /// A result set ended with these status flags.
    fn end_result_set(&mut self, status: u16, out: &mut Events) {
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            self.resp = Resp::Idle;
        } else {
            self.respond_ok(out);
        }
    }

    fn server_command(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        let first = head.first().copied();
        let len = hdr.len;
        let this = u64::from(len).saturating_add(4);
        if let Some(mut d) = self.deferred.take() {
            if first == Some(0xFE) && len < 9 {
                // The EOF that ends the PREPARE response.
                let logical = std::mem::take(&mut self.fr[1].acc);
                d.bytes = self.wire_size(Direction::ToClient, logical);
                self.learn_eof_mode(true);
                out.push(Event::Response(d));
                return;
            }
            d.bytes = self.wire_size(Direction::ToClient, self.fr[1].acc.saturating_sub(this));
            self.fr[1].acc = this;
            self.learn_eof_mode(false);
            out.push(Event::Response(d));
        }
        match self.resp {
            Resp::Idle => self.response_start(hdr, head, out),
            Resp::Replication => {
                self.fr[1].acc = 0;
                self.zwire[1] = 0;
            }
            Resp::Columns(n) => {
                if first == Some(0xFF) {
                    self.respond_err(head, out);
                } else if n <= 1 {
                    self.resp = self.after_columns();
                } else {
                    self.resp = Resp::Columns(n.saturating_sub(1));
                }
            }
            Resp::ColumnsEnd => {
                if first == Some(0xFE) && len < 9 && (self.rs_eof == Some(true) || len < 7) {
                    // EOF after the column definitions.
                    self.learn_eof_mode(true);
                    let status = wire::parse_eof_status(head).map(|x| x.1).unwrap_or(0);
                    if self.rs_binary && status & SERVER_STATUS_CURSOR_EXISTS != 0 {
                        self.end_result_set(status, out);
                    } else {
                        self.resp = Resp::Rows;
                    }
                } else {
                    // No EOF: CLIENT_DEPRECATE_EOF; this is a row or the terminating OK.
                    if self.rs_eof.is_none() {
                        self.learn_eof_mode(false);
                    }
                    self.resp = Resp::Rows;
                    self.row(hdr, head, out);
                }
            }
            Resp::Rows => self.row(hdr, head, out),
            Resp::FieldList => match first {
                Some(0xFF) => self.respond_err(head, out),
                Some(0xFE) if len < FULL_PACKET => self.respond("OK", "OK", out),
                _ => {}
            },
            Resp::PrepareDefs { left, next } => {
                if first == Some(0xFF) {
                    self.respond_err(head, out);
                } else if left <= 1 {
                    self.after_prepare_block(next, out);
                } else {
                    self.resp = Resp::PrepareDefs {
                        left: left.saturating_sub(1),
                        next,
                    };
                }
            }
            Resp::PrepareEof { next } => {
                if first == Some(0xFE) && len < 9 {
                    self.learn_eof_mode(true);
                    if next > 0 {
                        self.resp = Resp::PrepareDefs {
                            left: next,
                            next: 0,
                        };
                    } else {
                        self.respond("OK", "OK", out);
                    }
                } else if next > 0 {
                    // No EOF between the blocks: CLIENT_DEPRECATE_EOF; a definition.
                    self.learn_eof_mode(false);
                    if next <= 1 {
                        self.after_prepare_block(0, out);
                    } else {
                        self.resp = Resp::PrepareDefs {
                            left: next.saturating_sub(1),
                            next: 0,
                        };
                    }
                } else {
                    self.respond("OK", "OK", out);
                }
            }
        }
    }

    fn after_columns(&self) -> Resp {
        if self.rs_eof == Some(false) {
            Resp::Rows
        } else {
            Resp::ColumnsEnd
        }
    }

    /// A block of PREPARE definitions ended; `next` definitions follow.
    fn after_prepare_block(&mut self, next: u16, out: &mut Events) {
        match (self.eof_mode, next) {
            (Some(true), _) | (None, 1..) => self.resp = Resp::PrepareEof { next },
            (Some(false), 1..) => {
                self.resp = Resp::PrepareDefs {
                    left: next,
                    next: 0,
                }
            }
            (Some(false), 0) => self.respond("OK", "OK", out),
            (None, 0) => {
                // An EOF may follow or not: decide on the next server packet.
                let logical = self.fr[1].acc;
                self.deferred = self.finish(Code::from_str_lossy("OK"), "OK", false);
                // Bytes are counted when it is emitted.
                self.fr[1].acc = logical;
            }
        }
    }

    fn row(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        let len = hdr.len;
        match head.first() {
            Some(0xFF) => self.respond_err(head, out),
            Some(0xFE)
                if (self.rs_eof == Some(true) && len < 9)
                    || (self.rs_eof != Some(true) && len < FULL_PACKET) =>
            {
                let status = if self.rs_eof == Some(true) || len < 7 {
                    wire::parse_eof_status(head).map(|x| x.1).unwrap_or(0)
                } else {
                    wire::parse_ok(head).map(|x| x.1.status).unwrap_or(0)
                };
                self.end_result_set(status, out);
            }
            _ => {}
        }
    }

    fn response_start(&mut self, hdr: PacketHeader, head: &[u8], out: &mut Events) {
        if !self.resp_active {
            match self.pending.pop_front() {
                Some(p) => {
                    self.resp_cmd = p.cmd;
                    self.resp_resource = p.resource;
                    self.resp_unsolicited = false;
                }
                None => {
                    self.resp_cmd = COM_QUERY;
                    self.resp_unsolicited = true;
                    out.push(Event::Anomaly(Anomaly::UnexpectedMessage));
                }
            }
            self.resp_active = true;
            self.resp_sets = 0;
        }
        let cmd = self.resp_cmd;
        let len = hdr.len;
        let Some(first) = head.first().copied() else {
            self.respond("OK", "OK", out);
            return;
        };
        match first {
            _ if cmd == COM_STATISTICS => self.respond("OK", "string", out),
            0xFF => self.respond_err(head, out),
            _ if cmd == COM_BINLOG_DUMP || cmd == COM_BINLOG_DUMP_GTID => {
                self.respond("OK", "OK", out);
                self.resp = Resp::Replication;
            }
            0x00 if cmd == COM_STMT_PREPARE => match wire::parse_prepare_ok(head) {
                Ok((rest, p)) => {
                    let resource = self.resp_resource;
                    self.remember_stmt(p.statement_id, resource);
                    // With optional metadata, a 0 "metadata follows" byte means none.
                    let none = self.meta_optional && rest.get(3) == Some(&0);
                    if none || (p.params == 0 && p.columns == 0) {
                        self.respond("OK", "OK", out);
                    } else if p.params > 0 {
                        self.resp = Resp::PrepareDefs {
                            left: p.params,
                            next: p.columns,
                        };
                    } else {
                        self.resp = Resp::PrepareDefs {
                            left: p.columns,
                            next: 0,
                        };
                    }
                }
                Err(_) => self.respond("OK", "OK", out),
            },
            0x00 => {
                let status = wire::parse_ok(head).map(|x| x.1.status).unwrap_or(0);
                if status & SERVER_MORE_RESULTS_EXISTS == 0 {
                    self.respond_ok(out);
                }
            }
            // Auth switch request / auth more data after COM_CHANGE_USER.
            0xFE | 0x01 if cmd == COM_CHANGE_USER => {}
            0xFE => {
                let status = if len < 9 {
                    wire::parse_eof_status(head).map(|x| x.1).unwrap_or(0)
                } else {
                    wire::parse_ok(head).map(|x| x.1.status).unwrap_or(0)
                };
                if status & SERVER_MORE_RESULTS_EXISTS == 0 {
                    self.respond_ok(out);
                }
            }
            // LOCAL INFILE request: the client sends the file, then OK/ERR follows.
            0xFB => {}
            _ if cmd == COM_FIELD_LIST => self.resp = Resp::FieldList,
            _ if cmd == COM_STMT_FETCH => {
                self.rs_eof = self.eof_mode;
                self.resp = Resp::Rows;
            }
            _ => match wire::lenenc_int(head) {
                Ok((rest, n)) if n > 0 && n <= MAX_COLUMNS => {
                    self.resp_sets = self.resp_sets.saturating_add(1);
                    self.rs_binary = cmd == COM_STMT_EXECUTE;
                    self.rs_eof = self.eof_mode;
                    let none = self.meta_optional && rest.first() == Some(&0);
                    self.resp = if none {
                        self.after_columns()
                    } else {
                        Resp::Columns(n)
                    };
                }
                _ => {
                    out.push(Event::Anomaly(Anomaly::Malformed));
                    self.inner_gap(Direction::ToClient);
                }
            },
        }
    }

    // ----- resynchronisation -------------------------------------------------------

    /// Lost bytes in the packet stream of `dir` (uncompressed, or inside the inflated one).
    fn inner_gap(&mut self, dir: Direction) {
        match dir {
            Direction::ToServer => {
                self.fr[0] = Framer {
                    resync: true,
                    ..Framer::default()
                };
                self.req = None;
            }
            Direction::ToClient => {
                // Wait for the next command and find its response's first packet.
                self.fr[1] = Framer::default();
                self.resp = Resp::Idle;
                self.resp_active = false;
                self.resp_unsolicited = false;
                self.resp_sets = 0;
                self.deferred = None;
                self.pending.clear();
                self.server_wait_cmd = true;
                if self.server_phase != Phase::Command {
                    self.server_phase = Phase::Command;
                }
            }
        }
    }

    // ----- compressed protocol -----------------------------------------------------

    /// Let the packet parser consume the inflated bytes of `dir`.
    fn drain_plain(&mut self, dir: Direction, out: &mut Events) {
        let d = dir.index();
        let Some(mut buf) = self
            .z
            .as_deref_mut()
            .and_then(|z| z.get_mut(d))
            .map(|zd| std::mem::take(&mut zd.plain))
        else {
            return;
        };
        let mut off = 0usize;
        while off < buf.len() {
            let (n, switched) = self.feed_plain(dir, buf.get(off..).unwrap_or(&[]), out);
            off = off.saturating_add(n);
            if !switched {
                break;
            }
        }
        buf.drain(..off.min(buf.len()));
        if let Some(zd) = self.z.as_deref_mut().and_then(|z| z.get_mut(d)) {
            zd.plain = buf;
        }
    }

    fn feed_compressed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        let mut pos = 0usize;
        loop {
            self.drain_plain(dir, out);
            if self.opaque {
                return data.len();
            }
            match self.z_step(dir, data, &mut pos) {
                Zstep::Continue => {}
                Zstep::Return => return pos,
                Zstep::Gap(a) => {
                    out.push(Event::Anomaly(a));
                    self.inner_gap(dir);
                }
            }
        }
    }

    /// One step of the compressed layer: read a frame header or move payload bytes into
    /// the inflated buffer.
    fn z_step(&mut self, dir: Direction, data: &[u8], pos: &mut usize) -> Zstep {
        let cap = self.max_buffered;
        let (ratio, zwire) = match dir {
            Direction::ToServer => (&mut self.ratio[0], &mut self.zwire[0]),
            Direction::ToClient => (&mut self.ratio[1], &mut self.zwire[1]),
        };
        let Some(zd) = self.z.as_deref_mut().and_then(|z| z.get_mut(dir.index())) else {
            *pos = data.len();
            return Zstep::Return;
        };
        let rest = data.get(*pos..).unwrap_or(&[]);
        if zd.frame_left == 0 && !zd.inflating {
            zd.skip = false;
            if zd.resync {
                let (skip, found) = scan(rest, |w| plausible_frame(w, dir));
                *pos = pos.saturating_add(skip);
                if !found {
                    return Zstep::Return;
                }
                zd.resync = false;
            }
            let Ok((_, h)) = wire::parse_frame_header(data.get(*pos..).unwrap_or(&[])) else {
                return Zstep::Return;
            };
            *pos = pos.saturating_add(FRAME_HEADER);
            zd.frame_left = h.compressed_len;
            zd.raw = h.uncompressed_len == 0;
            zd.inflating = !zd.raw && h.compressed_len > 0;
            zd.out_left = u64::from(h.uncompressed_len);
            let wire = u64::from(h.compressed_len).saturating_add(7);
            *zwire = zwire.saturating_add(wire);
            *ratio = if zd.raw {
                (wire, u64::from(h.compressed_len).max(1))
            } else {
                (wire, u64::from(h.uncompressed_len).max(1))
            };
            if zd.inflating {
                zd.inflater.reset(DataFormat::Zlib);
            }
            return Zstep::Continue;
        }
        let take = usize_of(zd.frame_left).min(rest.len());
        let input = rest.get(..take).unwrap_or(&[]);
        if zd.skip {
            *pos = pos.saturating_add(take);
            zd.frame_left = zd
                .frame_left
                .saturating_sub(u32::try_from(take).unwrap_or(u32::MAX));
            if zd.frame_left > 0 {
                return Zstep::Return;
            }
            zd.inflating = false;
            return Zstep::Continue;
        }
        let free = cap.saturating_sub(zd.plain.len());
        if free == 0 {
            // The packet parser cannot progress on a full buffer.
            zd.plain.clear();
            return Zstep::Gap(Anomaly::LimitExceeded);
        }
        if zd.raw {
            if take == 0 {
                return Zstep::Return;
            }
            let n = take.min(free);
            zd.plain.extend_from_slice(input.get(..n).unwrap_or(&[]));
            *pos = pos.saturating_add(n);
            zd.frame_left = zd
                .frame_left
                .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            return Zstep::Continue;
        }
        let old = zd.plain.len();
        zd.plain.resize(old.saturating_add(free), 0);
        let r = inflate(
            &mut zd.inflater,
            input,
            zd.plain.get_mut(old..).unwrap_or(&mut []),
            MZFlush::None,
        );
        zd.plain.truncate(old.saturating_add(r.bytes_written));
        *pos = pos.saturating_add(r.bytes_consumed);
        zd.frame_left = zd
            .frame_left
            .saturating_sub(u32::try_from(r.bytes_consumed).unwrap_or(u32::MAX));
        let written = u64_of(r.bytes_written);
        let progressed = r.bytes_consumed > 0 || r.bytes_written > 0;
        let bomb = written > zd.out_left;
        zd.out_left = zd.out_left.saturating_sub(written);
        let bad = match r.status {
            _ if bomb => true,
            Ok(MZStatus::StreamEnd) => {
                zd.inflating = false;
                // Bytes after the zlib stream: skip them.
                zd.skip = zd.frame_left > 0;
                zd.skip
            }
            Ok(_) if progressed => false,
            Ok(_) | Err(miniz_oxide::MZError::Buf) if input.is_empty() => {
                if zd.frame_left > 0 {
                    return Zstep::Return;
                }
                // The frame ended without the end of its zlib stream.
                zd.inflating = false;
                return Zstep::Continue;
            }
            _ => true,
        };
        if bad {
            zd.skip = true;
            zd.inflating = zd.frame_left > 0;
            zd.plain.clear();
            return Zstep::Gap(Anomaly::Malformed);
        }
        Zstep::Continue
    }
}

/// The head of a seq-0 client packet looks like a command (connection phase check).
fn plausible_command_head(hdr: PacketHeader, head: &[u8]) -> bool {
    let mut w = [0u8; 6];
    let len = hdr.len.to_le_bytes();
    w[0] = len[0];
    w[1] = len[1];
    w[2] = len[2];
    w[3] = hdr.seq;
    let n = head.len().min(2);
    if let (Some(dst), Some(src)) = (w.get_mut(4..4usize.saturating_add(n)), head.get(..n)) {
        dst.copy_from_slice(src);
    }
    plausible_command(w.get(..4usize.saturating_add(n)).unwrap_or(&[])) == Some(true)
}

impl Session for MysqlSession {
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        let mut pos = 0usize;
        loop {
            if self.opaque {
                return data.len();
            }
            let rest = data.get(pos..).unwrap_or(&[]);
            if self.compressed {
                return pos.saturating_add(self.feed_compressed(dir, rest, out));
            }
            let (n, switched) = self.feed_plain(dir, rest, out);
            pos = pos.saturating_add(n);
            if !switched {
                return pos;
            }
        }
    }

    fn gap(&mut self, dir: Direction) {
        if self.opaque {
            return;
        }
        if let Some(zd) = self.z.as_deref_mut().and_then(|z| z.get_mut(dir.index())) {
            zd.frame_left = 0;
            zd.inflating = false;
            zd.skip = false;
            zd.plain.clear();
            zd.resync = true;
        }
        self.inner_gap(dir);
    }

    fn close(&mut self, dir: Direction, out: &mut Events) {
        if dir == Direction::ToClient {
            if let Some(mut d) = self.deferred.take() {
                let logical = std::mem::take(&mut self.fr[1].acc);
                d.bytes = self.wire_size(Direction::ToClient, logical);
                out.push(Event::Response(d));
            }
        }
    }

    fn in_message(&self, dir: Direction) -> bool {
        if self.opaque {
            return false;
        }
        let d = dir.index();
        let f = self.fr.get(d).copied().unwrap_or_default();
        let mut busy = f.active || f.pkt_left > 0;
        if dir == Direction::ToClient {
            busy |= self.resp_active || self.deferred.is_some();
        }
        if let Some(zd) = self.z.as_deref().and_then(|z| z.get(d)) {
            busy |= zd.frame_left > 0 || zd.inflating || !zd.plain.is_empty();
        }
        busy
    }
}

/// Does `data` (the first payload bytes of a direction) look like MySQL?
/// SQL statements a COM_QUERY or COM_STMT_PREPARE usually starts with.
const SQL_KEYWORDS: &[&[u8]] = &[
    b"SELECT",
    b"INSERT",
    b"UPDATE",
    b"DELETE",
    b"REPLACE",
    b"SET",
    b"SHOW",
    b"BEGIN",
    b"START",
    b"COMMIT",
    b"ROLLBACK",
    b"CREATE",
    b"DROP",
    b"ALTER",
    b"TRUNCATE",
    b"USE",
    b"CALL",
    b"WITH",
    b"EXPLAIN",
    b"DESC",
    b"DESCRIBE",
    b"GRANT",
    b"REVOKE",
    b"LOCK",
    b"UNLOCK",
    b"SAVEPOINT",
    b"RELEASE",
    b"PREPARE",
    b"EXECUTE",
    b"DEALLOCATE",
    b"ANALYZE",
    b"OPTIMIZE",
    b"KILL",
    b"FLUSH",
    b"LOAD",
    b"HANDLER",
    b"DO",
    b"XA",
];

fn starts_with_sql_keyword(text: &[u8]) -> bool {
    let t = text
        .get(text.iter().take_while(|b| b.is_ascii_whitespace()).count()..)
        .unwrap_or(&[]);
    if t.starts_with(b"/*") {
        return true;
    }
    SQL_KEYWORDS.iter().any(|k| {
        t.len() > k.len()
            && t.get(..k.len()).is_some_and(|w| w.eq_ignore_ascii_case(k))
            && t.get(k.len())
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'(' || *b == b'`')
    })
}

fn le24(b: &[u8]) -> Option<usize> {
    Some(usize::from(*b.first()?) | usize::from(*b.get(1)?) << 8 | usize::from(*b.get(2)?) << 16)
}

/// A client's command stream on any port: up to four short commands (PING, INIT_DB, ...)
/// then a COM_QUERY or COM_STMT_PREPARE whose text starts like SQL, optionally inside an
/// uncompressed frame of the compressed protocol (uncompressed length 0).
fn sql_command_evidence(data: &[u8]) -> Probe {
    let mut rest = data;
    if let (Some(comp), Some(&cseq), Some(ulen), Some(inner)) = (
        le24(rest),
        rest.get(3),
        rest.get(4..).and_then(le24),
        rest.get(7..).and_then(le24),
    ) {
        if cseq == 0 && ulen == 0 && inner.saturating_add(4) == comp {
            rest = rest.get(7..).unwrap_or(&[]);
        }
    }
    for _ in 0..5 {
        let (Some(len), Some(&seq), Some(&cmd)) = (le24(rest), rest.get(3), rest.get(4)) else {
            return Probe::NeedMore;
        };
        if seq != 0 || len == 0 {
            return Probe::No;
        }
        match cmd {
            COM_QUERY | COM_STMT_PREPARE => {
                let text = rest
                    .get(5..len.saturating_add(4).min(rest.len()))
                    .unwrap_or(&[]);
                return if text.len() < 8 && rest.len() < len.saturating_add(4) {
                    Probe::NeedMore
                } else if starts_with_sql_keyword(text) {
                    Probe::Match(Role::Request)
                } else {
                    Probe::No
                };
            }
            COM_PING | COM_INIT_DB | COM_STMT_EXECUTE | COM_STMT_CLOSE | COM_STMT_RESET
            | COM_STATISTICS
                if len < 4096 =>
            {
                match rest.get(len.saturating_add(4)..) {
                    Some(next) if !next.is_empty() => rest = next,
                    _ => return Probe::NeedMore,
                }
            }
            _ => return Probe::No,
        }
    }
    Probe::No
}

pub fn probe(data: &[u8], port_hint: bool) -> Probe {
    if data.len() < 5 {
        return Probe::NeedMore;
    }
    let Ok((_, h)) = wire::parse_packet_header(data) else {
        return Probe::NeedMore;
    };
    let first = data.get(4).copied().unwrap_or(0);
    if h.seq == 0 && first == 0x0a && (20..=4096).contains(&h.len) {
        let version = data.get(5..).unwrap_or(&[]);
        let window = version.get(..64).unwrap_or(version);
        return match window.iter().position(|&b| b == 0) {
            Some(p)
                if p >= 1
                    && window
                        .iter()
                        .take(p)
                        .all(|b| b.is_ascii_graphic() || *b == b' ') =>
            {
                Probe::Match(Role::Response)
            }
            None if window.len() < 64
                && window.iter().all(|b| b.is_ascii_graphic() || *b == b' ') =>
            {
                Probe::NeedMore
            }
            _ => Probe::No,
        };
    }
    if !port_hint {
        // Without the port hint only strong evidence counts: SQL text in a command.
        return sql_command_evidence(data);
    }
    if h.seq == 0 {
        if first == 0xFF && (3..0x1_0000).contains(&h.len) {
            // A server refusing the connection instead of greeting it.
            return Probe::Match(Role::Response);
        }
        return match plausible_command(data) {
            Some(true) => {
                let text_ok = match first {
                    COM_QUERY | COM_STMT_PREPARE => {
                        let end = usize_of(h.len).saturating_add(4).min(data.len());
                        text_plausible(data.get(5..end).unwrap_or(&[]))
                    }
                    _ => true,
                };
                if text_ok {
                    Probe::Match(Role::Request)
                } else {
                    Probe::No
                }
            }
            Some(false) => Probe::No,
            None => Probe::NeedMore,
        };
    }
    let response = match first {
        0x00 => (7..0x1_0000).contains(&h.len),
        0xFF => {
            (3..0x1_0000).contains(&h.len)
                && (data.len() < 8 || data.get(7) == Some(&b'#') || h.len < 9)
        }
        0x01..=0xFA => h.seq == 1 && h.len <= 2,
        _ => false,
    };
    if response {
        Probe::Match(Role::Response)
    } else {
        Probe::No
    }
}
