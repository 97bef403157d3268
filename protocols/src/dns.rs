//! DNS over UDP and TCP (RFC 1035; RFC 2136 UPDATE; RFC 6891 EDNS; RFC 7766 TCP framing).
//!
//! Pure parsers first ([`parse_header`], [`parse_name`], [`parse_question`],
//! [`parse_message`]), then the stateful [`DnsSession`] that drives them:
//!
//! * UDP: every `feed` is one whole datagram and is consumed whole. A query (QR=0) yields
//!   [`Event::Request`] with resource and text `"<qname> <QTYPE>"` (`"example.com A"`, the
//!   name lower-cased without its trailing dot, the root as `"."`) and the transaction id; a
//!   response (QR=1) yields [`Event::Response`] with the rcode name as code and kind. The
//!   QR bit decides, not the direction (both ends may use port 53).
//! * TCP: a 2-byte big-endian length prefix, then one message. Only whole messages are
//!   consumed; a message longer than [`Limits::max_buffered`] is reported
//!   ([`Anomaly::LimitExceeded`], after its event when its question could be read) and
//!   skipped incrementally. After [`Session::gap`] the session scans forward for an offset
//!   where a plausible prefix, header and question start.
//!
//! Names are followed iteratively through compression pointers: at most
//! [`Limits::max_dns_pointers`] jumps and [`Limits::max_dns_name`] octets (wire form), so a
//! pointer loop can never hang. Forward pointers are accepted (they occur, rarely); a
//! pointer to itself, or a run out of jumps after a non-backward pointer, is a loop and
//! reported as [`Anomaly::Malformed`]. Label types 0x40 and 0x80 are malformed.
//!
//! No allocation: names are rendered into fixed inline buffers and events are inline.

use core::fmt;

use nom::number::complete::be_u16;
use nom::{IResult, Parser};

use crate::detect::{Probe, Role};
use crate::event::{Anomaly, Code, Event, Request, RequestText, Resource, Response};
use crate::text::Text;
use crate::{Direction, Events, Limits, Session, Transport};

/// Size of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Size of the TCP length prefix.
const PREFIX_LEN: usize = 2;
/// Capacity of a rendered name (presentation form of a 255-octet wire name fits).
const NAME_BUF: usize = 255;
/// Counts above this make a header implausible for probing and resynchronisation.
const PROBE_MAX_COUNT: u16 = 1000;
/// Resource record type of the EDNS OPT pseudo-record.
const TYPE_OPT: u16 = 41;

/// Opcodes a session accepts: QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO.
const fn opcode_known(opcode: u8) -> bool {
    matches!(opcode, 0 | 1 | 2 | 4 | 5 | 6)
}

/// Opcodes accepted when probing or resynchronising (strict: no DSO, which has no question).
const fn opcode_probe(opcode: u8) -> bool {
    matches!(opcode, 0 | 1 | 2 | 4 | 5)
}

/// Classes accepted when probing: IN, CH, HS, NONE, ANY (mDNS's unicast-response bit,
/// the top bit, is ignored).
const fn class_known(class: u16) -> bool {
    matches!(class & 0x7fff, 1 | 3 | 4 | 254 | 255)
}

// ---------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------

/// The fixed 12-byte message header (RFC 1035 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR: false for a query, true for a response.
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    /// The header's 4-bit rcode (see [`Message::rcode`] for the EDNS-extended one).
    pub rcode: u8,
    /// QDCOUNT (ZOCOUNT for UPDATE).
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    fn from_words(id: u16, flags: u16, counts: [u16; 4]) -> Self {
        let [qdcount, ancount, nscount, arcount] = counts;
        Header {
            id,
            qr: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0x0f) as u8,
            aa: flags & 0x0400 != 0,
            tc: flags & 0x0200 != 0,
            rd: flags & 0x0100 != 0,
            ra: flags & 0x0080 != 0,
            rcode: (flags & 0x000f) as u8,
            qdcount,
            ancount,
            nscount,
            arcount,
        }
    }
}

/// Parse the 12-byte header (complete parser).
pub fn parse_header(i: &[u8]) -> IResult<&[u8], Header> {
    let (rest, (id, flags, qd, an, ns, ar)) =
        (be_u16, be_u16, be_u16, be_u16, be_u16, be_u16).parse(i)?;
    Ok((rest, Header::from_words(id, flags, [qd, an, ns, ar])))
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// A domain name in presentation form, lower-cased (ASCII), without the trailing dot.
/// Rendered inline; a name longer than the buffer (only possible with a raised
/// `max_dns_name`) is cut and marked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    buf: [u8; NAME_BUF],
    len: usize,
    labels: usize,
    wire_len: usize,
    cut: bool,
}

impl Name {
    const fn empty() -> Self {
        Name {
            buf: [0; NAME_BUF],
            len: 0,
            labels: 0,
            wire_len: 0,
            cut: false,
        }
    }

    /// The name's bytes: labels joined by `.`, lower-cased; `.` for the root. Label bytes
    /// are kept raw (they may be any octet); render with [`Text::push_bytes_lossy`].
    pub fn as_bytes(&self) -> &[u8] {
        if self.labels == 0 {
            b"."
        } else {
            self.buf.get(..self.len).unwrap_or(&[])
        }
    }

    /// Number of labels (0 for the root).
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// Length of the uncompressed wire form, length octets and root label included.
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// True if the rendering did not fit the inline buffer.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    fn push_byte(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len = self.len.saturating_add(1);
            }
            None => self.cut = true,
        }
    }

    fn push_label(&mut self, label: &[u8]) {
        if self.labels > 0 {
            self.push_byte(b'.');
        }
        for &b in label {
            self.push_byte(b.to_ascii_lowercase());
        }
        self.labels = self.labels.saturating_add(1);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(
            Text::<NAME_BUF>::from_bytes_lossy(self.as_bytes()).as_str(),
            f,
        )
    }
}

/// Why a name, question or message did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The bytes ended before the item did (for a whole message: malformed).
    Incomplete,
    /// A label type 0x40/0x80, a compression loop, an unknown opcode: garbage.
    Malformed,
    /// A name over `max_dns_name` octets or over `max_dns_pointers` jumps.
    LimitExceeded,
}

impl DnsError {
    /// The anomaly for an error in a whole message (nothing more will arrive).
    pub fn anomaly(self) -> Anomaly {
        match self {
            DnsError::Incomplete | DnsError::Malformed => Anomaly::Malformed,
            DnsError::LimitExceeded => Anomaly::LimitExceeded,
        }
    }
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    let hi = *data.get(at)?;
    let lo = *data.get(at.checked_add(1)?)?;
    Some(u16::from_be_bytes([hi, lo]))
}

/// Parse the name starting at `start` in `msg` (the whole message, or its first bytes),
/// following compression pointers iteratively. Returns the name and the offset just after
/// the name at its original position (after the first pointer, if any).
///
/// Bounds: at most `limits.max_dns_pointers` jumps, at most `limits.max_dns_name` octets of
/// uncompressed wire form. A pointer to itself, or running out of jumps after following a
/// pointer that did not point strictly backwards, is a loop: [`DnsError::Malformed`].
/// A pointer or label past the end of `msg` is [`DnsError::Incomplete`].
pub fn parse_name(msg: &[u8], start: usize, limits: &Limits) -> Result<(Name, usize), DnsError> {
    let mut name = Name::empty();
    let mut pos = start;
    let mut end: Option<usize> = None;
    let mut jumps = 0usize;
    let mut non_backward = false;
    loop {
        let b = *msg.get(pos).ok_or(DnsError::Incomplete)?;
        match b & 0xc0 {
            0x00 => {
                let label_len = usize::from(b);
                name.wire_len = name.wire_len.saturating_add(label_len).saturating_add(1);
                if name.wire_len > limits.max_dns_name {
                    return Err(DnsError::LimitExceeded);
                }
                let label_start = pos.saturating_add(1);
                if label_len == 0 {
                    return Ok((name, end.unwrap_or(label_start)));
                }
                let label_end = label_start.saturating_add(label_len);
                let label = msg
                    .get(label_start..label_end)
                    .ok_or(DnsError::Incomplete)?;
                name.push_label(label);
                pos = label_end;
            }
            0xc0 => {
                let target = usize::from(read_u16(msg, pos).ok_or(DnsError::Incomplete)? & 0x3fff);
                if end.is_none() {
                    end = Some(pos.saturating_add(2));
                }
                if target == pos {
                    return Err(DnsError::Malformed);
                }
                if target > pos {
                    non_backward = true;
                }
                jumps = jumps.saturating_add(1);
                if jumps > limits.max_dns_pointers {
                    return Err(if non_backward {
                        DnsError::Malformed
                    } else {
                        DnsError::LimitExceeded
                    });
                }
                pos = target;
            }
            // 0x40 (extended label types, RFC 6891 deprecated them) and 0x80 (reserved).
            _ => return Err(DnsError::Malformed),
        }
    }
}

/// Skip a name without following pointers (for walking records); `None` if it is cut or
/// uses a reserved label type. Bounded by the message length.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let b = *msg.get(pos)?;
        match b & 0xc0 {
            0x00 if b == 0 => return pos.checked_add(1),
            0x00 => pos = pos.checked_add(usize::from(b))?.checked_add(1)?,
            0xc0 => {
                msg.get(pos.checked_add(1)?)?;
                return pos.checked_add(2);
            }
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Question and message
// ---------------------------------------------------------------------------------------

/// One entry of the question section (the zone section for UPDATE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// Parse the question at `start` in `msg`; returns it and the offset after it.
pub fn parse_question(
    msg: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<(Question, usize), DnsError> {
    let (name, after_name) = parse_name(msg, start, limits)?;
    let rest = msg.get(after_name..).ok_or(DnsError::Incomplete)?;
    let (_, (qtype, qclass)) = (be_u16::<_, nom::error::Error<&[u8]>>, be_u16)
        .parse(rest)
        .map_err(|_| DnsError::Incomplete)?;
    Ok((
        Question {
            name,
            qtype,
            qclass,
        },
        after_name.saturating_add(4),
    ))
}

/// What a session reports of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// The first question, if QDCOUNT > 0.
    pub question: Option<Question>,
    /// The full rcode: the header's 4 bits, extended by an OPT record's upper 8 bits
    /// (responses whose records can be walked; otherwise the header's rcode).
    pub rcode: u16,
}

/// Parse a message's header and first question; for a response also look for the OPT
/// record's extended rcode. `msg` is the message without any TCP length prefix; when it is
/// only the message's first bytes, [`DnsError::Incomplete`] says more are needed.
pub fn parse_message(msg: &[u8], limits: &Limits) -> Result<Message, DnsError> {
    let (_, header) = parse_header(msg).map_err(|_| DnsError::Incomplete)?;
    if !opcode_known(header.opcode) {
        return Err(DnsError::Malformed);
    }
    let mut rcode = u16::from(header.rcode);
    let question = if header.qdcount > 0 {
        let (q, after) = parse_question(msg, HEADER_LEN, limits)?;
        if header.qr {
            if let Some(ext) = extended_rcode(msg, &header, after) {
                rcode |= u16::from(ext) << 4;
            }
        }
        Some(q)
    } else {
        if header.qr {
            if let Some(ext) = extended_rcode(msg, &header, HEADER_LEN) {
                rcode |= u16::from(ext) << 4;
            }
        }
        None
    };
    Ok(Message {
        header,
        question,
        rcode,
    })
}

/// Walk the remaining questions and all records (skipping names, never following
/// pointers) to the OPT record; its TTL's top byte is the extended rcode. `None` if there
/// is no OPT record or the records do not walk cleanly. Each step advances at least one
/// byte, so the walk is bounded by the message length.
fn extended_rcode(msg: &[u8], header: &Header, after_first_question: usize) -> Option<u8> {
    if header.arcount == 0 {
        return None;
    }
    let mut pos = after_first_question;
    for _ in 1..header.qdcount {
        pos = skip_name(msg, pos)?.checked_add(4)?;
    }
    let first_additional = u32::from(header.ancount).saturating_add(u32::from(header.nscount));
    let records = first_additional.saturating_add(u32::from(header.arcount));
    for n in 0..records {
        pos = skip_name(msg, pos)?;
        let rtype = read_u16(msg, pos)?;
        let ttl_hi = *msg.get(pos.checked_add(4)?)?;
        let rdlen = read_u16(msg, pos.checked_add(8)?)?;
        let next = pos.checked_add(10)?.checked_add(usize::from(rdlen))?;
        if next > msg.len() {
            return None;
        }
        if n >= first_additional && rtype == TYPE_OPT {
            return Some(ttl_hi);
        }
        pos = next;
    }
    None
}

// ---------------------------------------------------------------------------------------
// Names of types, rcodes and opcodes
// ---------------------------------------------------------------------------------------

/// Mnemonic of a QTYPE, if it is one wiremap names.
pub fn qtype_name(qtype: u16) -> Option<&'static str> {
    Some(match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return None,
    })
}

/// Mnemonic of an rcode, if it is one wiremap names.
pub fn rcode_name(rcode: u16) -> Option<&'static str> {
    Some(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return None,
    })
}

/// Name of an opcode (used as the resource of a message without a question).
pub fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        0 => "QUERY",
        1 => "IQUERY",
        2 => "STATUS",
        4 => "NOTIFY",
        5 => "UPDATE",
        6 => "DSO",
        _ => "OPCODE",
    }
}

fn push_decimal<const N: usize>(t: &mut Text<N>, n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0usize;
    let mut v = n;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0'.saturating_add((v % 10) as u8);
        }
        len = len.saturating_add(1);
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for d in digits.get(..len).unwrap_or(&[]).iter().rev() {
        t.push_char(char::from(*d));
    }
}

/// "A", "AAAA", … or "TYPE<n>".
pub fn qtype_text(qtype: u16) -> Text<16> {
    let mut t = Text::new();
    match qtype_name(qtype) {
        Some(s) => t.push_str(s),
        None => {
            t.push_str("TYPE");
            push_decimal(&mut t, u32::from(qtype));
        }
    }
    t
}

/// "NOERROR", "NXDOMAIN", … or "RCODE<n>".
pub fn rcode_text(rcode: u16) -> Code {
    let mut t = Code::new();
    match rcode_name(rcode) {
        Some(s) => t.push_str(s),
        None => {
            t.push_str("RCODE");
            push_decimal(&mut t, u32::from(rcode));
        }
    }
    t
}

/// `"<name> <type>"` into `t`, cutting the name (never the type) if it does not fit.
fn fill_name_type<const N: usize>(t: &mut Text<N>, name: &str, qtype: &str) {
    let reserve = qtype.len().saturating_add(1);
    for ch in name.chars() {
        if t.len()
            .saturating_add(ch.len_utf8())
            .saturating_add(reserve)
            > N
        {
            break;
        }
        t.push_char(ch);
    }
    t.push_char(' ');
    t.push_str(qtype);
}

/// The event for one parsed message of `bytes` bytes on the wire.
/// `want_text`: fill the request's record text (else it stays empty).
pub fn message_event(m: &Message, bytes: usize, want_text: bool) -> Event {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    let id = Some(u32::from(m.header.id));
    if m.header.qr {
        let code = rcode_text(m.rcode);
        Event::Response(Response {
            code,
            error: m.rcode != 0,
            kind: code,
            id,
            bytes,
        })
    } else {
        let mut resource = Resource::new();
        let mut text = RequestText::new();
        match &m.question {
            Some(q) => {
                let name = Text::<NAME_BUF>::from_bytes_lossy(q.name.as_bytes());
                let qtype = qtype_text(q.qtype);
                fill_name_type(&mut resource, name.as_str(), qtype.as_str());
                if want_text {
                    fill_name_type(&mut text, name.as_str(), qtype.as_str());
                }
            }
            None => {
                resource.push_str(opcode_name(m.header.opcode));
                if want_text {
                    text.push_str(opcode_name(m.header.opcode));
                }
            }
        }
        Event::Request(Request {
            resource,
            text,
            id,
            bytes,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------------------

/// Strict plausibility of (possibly the first bytes of) a header: probe opcodes, exactly one
/// question, other counts under 1000. `NeedMore` if the bytes end before a verdict.
fn probe_header(h: &[u8]) -> Probe {
    if let Some(flags) = read_u16(h, 2) {
        if !opcode_probe(((flags >> 11) & 0x0f) as u8) {
            return Probe::No;
        }
    }
    if let Some(qd) = read_u16(h, 4) {
        if qd != 1 {
            return Probe::No;
        }
    }
    for at in [6, 8, 10] {
        if let Some(count) = read_u16(h, at) {
            if count >= PROBE_MAX_COUNT {
                return Probe::No;
            }
        }
    }
    match h.get(2) {
        Some(b) if h.len() >= HEADER_LEN => Probe::Match(if b & 0x80 != 0 {
            Role::Response
        } else {
            Role::Request
        }),
        _ => Probe::NeedMore,
    }
}

/// Probe one message (without prefix); `complete` says whether `msg` is all of it.
fn probe_message(msg: &[u8], complete: bool, limits: &Limits) -> Probe {
    let role = match probe_header(msg) {
        Probe::Match(role) => role,
        Probe::NeedMore if complete => return Probe::No,
        other => return other,
    };
    match parse_question(msg, HEADER_LEN, limits) {
        Ok((q, _)) if q.qtype != 0 && class_known(q.qclass) => Probe::Match(role),
        Ok(_) => Probe::No,
        Err(DnsError::Incomplete) if !complete => Probe::NeedMore,
        Err(_) => Probe::No,
    }
}

/// Probe a length-prefixed message at the start of `data`.
fn probe_tcp(data: &[u8], limits: &Limits) -> Probe {
    let Some(len) = read_u16(data, 0) else {
        // Not even the prefix: cannot tell yet.
        return Probe::NeedMore;
    };
    let len = usize::from(len);
    if len < HEADER_LEN {
        return Probe::No;
    }
    let end = PREFIX_LEN.saturating_add(len).min(data.len());
    let msg = data.get(PREFIX_LEN..end).unwrap_or(&[]);
    probe_message(msg, msg.len() == len, limits)
}

/// Does `data` (a UDP datagram, or the first bytes of a TCP direction) start a DNS
/// message? Strict: a known opcode (not DSO), exactly one question with a known class and
/// a non-zero type, other counts under 1000; over TCP a length prefix of at least 12.
/// `Match(Request)` for QR=0, `Match(Response)` for QR=1. Over TCP, `NeedMore` while the
/// bytes end before a verdict (fewer than 2 bytes, or a plausible header or question cut
/// short); a UDP datagram is whole, so a short one is `No`.
pub fn probe(transport: Transport, data: &[u8]) -> Probe {
    let limits = Limits::default();
    match transport {
        Transport::Udp => probe_message(data, true, &limits),
        Transport::Tcp => probe_tcp(data, &limits),
    }
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct DirState {
    /// Bytes of an over-limit message still to discard.
    skip: usize,
    /// After a gap or garbage: scanning for a plausible message start.
    resync: bool,
    /// The last feed left bytes unconsumed (a partial message).
    pending: bool,
}

/// Where a resynchronisation scan stopped.
enum Scan {
    /// A plausible message starts at this offset.
    Found(usize),
    /// Nothing before this offset can start a message; the rest needs more bytes.
    Wait(usize),
}

/// One DNS flow: a UDP 5-tuple or a TCP connection.
pub struct DnsSession {
    transport: Transport,
    limits: Limits,
    to_server: DirState,
    to_client: DirState,
}

impl DnsSession {
    pub fn new(transport: Transport, limits: &Limits) -> Self {
        DnsSession {
            transport,
            limits: limits.clone(),
            to_server: DirState::default(),
            to_client: DirState::default(),
        }
    }

    fn state(&self, dir: Direction) -> &DirState {
        match dir {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Most bytes a first question can need (prefix, header, uncompressed name, type and
    /// class): a resync candidate still undecided after this many bytes is rejected.
    fn question_span(&self) -> usize {
        (PREFIX_LEN + HEADER_LEN + 4).saturating_add(self.limits.max_dns_name)
    }

    /// Scan `data` for the first offset where a plausible prefix, header and question start.
    /// Work per offset is a few header comparisons, and for the rare offsets that pass
    /// them one bounded name parse.
    fn resync_scan(&self, data: &[u8]) -> Scan {
        let span = self.question_span().min(self.limits.max_buffered);
        let mut off = 0usize;
        while let Some(cand) = data.get(off..) {
            if cand.is_empty() {
                break;
            }
            match probe_tcp(cand, &self.limits) {
                Probe::Match(_) => return Scan::Found(off),
                Probe::NeedMore if cand.len() < span => return Scan::Wait(off),
                Probe::NeedMore | Probe::No => {}
            }
            off = off.saturating_add(1);
        }
        Scan::Wait(data.len())
    }

    fn feed_udp(&self, data: &[u8], out: &mut Events) -> usize {
        match parse_message(data, &self.limits) {
            Ok(m) => out.push(message_event(&m, data.len(), self.limits.request_text)),
            Err(e) => out.push(Event::Anomaly(e.anomaly())),
        }
        data.len()
    }

    fn feed_tcp(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        let mut st = *self.state(dir);
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..) {
            if rest.is_empty() {
                break;
            }
            if st.skip > 0 {
                let n = st.skip.min(rest.len());
                st.skip = st.skip.saturating_sub(n);
                pos = pos.saturating_add(n);
                continue;
            }
            if st.resync {
                match self.resync_scan(rest) {
                    Scan::Found(off) => {
                        st.resync = false;
                        pos = pos.saturating_add(off);
                        continue;
                    }
                    Scan::Wait(off) => {
                        pos = pos.saturating_add(off);
                        break;
                    }
                }
            }
            let Some(len) = read_u16(rest, 0) else { break };
            let len = usize::from(len);
            if len < HEADER_LEN {
                out.push(Event::Anomaly(Anomaly::Malformed));
                st.resync = true;
                continue;
            }
            let Some(flags) = read_u16(rest, PREFIX_LEN + 2) else {
                break;
            };
            if !opcode_known(((flags >> 11) & 0x0f) as u8) {
                out.push(Event::Anomaly(Anomaly::Malformed));
                st.resync = true;
                continue;
            }
            let total = len.saturating_add(PREFIX_LEN);
            let msg = rest.get(PREFIX_LEN..total.min(rest.len())).unwrap_or(&[]);
            if total > self.limits.max_buffered {
                // Too long to wait for: report what the first bytes say, then skip it.
                match parse_message(msg, &self.limits) {
                    Ok(m) => out.push(message_event(&m, total, self.limits.request_text)),
                    Err(DnsError::Incomplete)
                        if rest.len() < self.question_span().min(self.limits.max_buffered) =>
                    {
                        break;
                    }
                    Err(DnsError::Incomplete) => {}
                    Err(e) => out.push(Event::Anomaly(e.anomaly())),
                }
                out.push(Event::Anomaly(Anomaly::LimitExceeded));
                st.skip = total;
                continue;
            }
            if rest.len() < total {
                break;
            }
            match parse_message(msg, &self.limits) {
                Ok(m) => out.push(message_event(&m, total, self.limits.request_text)),
                Err(e) => out.push(Event::Anomaly(e.anomaly())),
            }
            pos = pos.saturating_add(total);
        }
        st.pending = pos < data.len();
        match dir {
            Direction::ToServer => self.to_server = st,
            Direction::ToClient => self.to_client = st,
        }
        pos
    }
}

impl Session for DnsSession {
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        match self.transport {
            Transport::Udp => self.feed_udp(data, out),
            Transport::Tcp => self.feed_tcp(dir, data, out),
        }
    }

    fn gap(&mut self, dir: Direction) {
        if self.transport == Transport::Udp {
            return;
        }
        let st = DirState {
            skip: 0,
            resync: true,
            pending: false,
        };
        match dir {
            Direction::ToServer => self.to_server = st,
            Direction::ToClient => self.to_client = st,
        }
    }

    fn close(&mut self, dir: Direction, _out: &mut Events) {
        // A message cut by the close never completes; nothing is delimited by it in DNS.
        let st = DirState::default();
        match dir {
            Direction::ToServer => self.to_server = st,
            Direction::ToClient => self.to_client = st,
        }
    }

    fn in_message(&self, dir: Direction) -> bool {
        let st = self.state(dir);
        self.transport == Transport::Tcp && (st.pending || st.skip > 0)
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

    // ----- hand-built messages (RFC 1035 4.1) -----

    /// A message: id, flags, section counts (qd, an, ns, ar), then the raw rest
    /// (question name, type and class, records).
    fn msg(id: u16, flags: u16, counts: [u16; 4], rest: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [id, flags].into_iter().chain(counts) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for part in rest {
            v.extend_from_slice(part);
        }
        v
    }

    const EXAMPLE_COM: &[u8] = b"\x07example\x03com\x00";
    const A_IN: &[u8] = &[0x00, 0x01, 0x00, 0x01];
    const SOA_IN: &[u8] = &[0x00, 0x06, 0x00, 0x01];

    /// Query id 0x1234, RD, one question example.com A IN (29 bytes).
    fn query_example_a() -> Vec<u8> {
        msg(0x1234, 0x0100, [1, 0, 0, 0], &[EXAMPLE_COM, A_IN])
    }

    /// Its answer: QR RD RA (0x8180), NOERROR, one A record whose name is the pointer c0 0c.
    fn response_example_a() -> Vec<u8> {
        // answer: name c0 0c, A, IN, TTL 3600, rdlength 4, 93.184.216.34
        let answer = [
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x04, 0x5d, 0xb8,
            0xd8, 0x22,
        ];
        msg(0x1234, 0x8180, [1, 1, 0, 0], &[EXAMPLE_COM, A_IN, &answer])
    }

    /// NXDOMAIN for nonexist.example.com A, id 0xbeef (flags 0x8183), 38 bytes.
    fn response_nxdomain() -> Vec<u8> {
        let name = b"\x08nonexist\x07example\x03com\x00";
        msg(0xbeef, 0x8183, [1, 0, 0, 0], &[name, A_IN])
    }

    /// Query id 0x0102 for "WWW.Example.COM" AAAA (mixed case).
    fn query_mixed_case_aaaa() -> Vec<u8> {
        let name = b"\x03WWW\x07Example\x03COM\x00";
        msg(
            0x0102,
            0x0100,
            [1, 0, 0, 0],
            &[name, &[0x00, 0x1c, 0x00, 0x01]],
        )
    }

    /// RFC 2136 UPDATE (opcode 5: flags 0x2800), id 0x4d2a, zone example.com SOA IN,
    /// one update RR www.example.com A 10.0.0.1 (name compressed to the zone).
    fn update_request() -> Vec<u8> {
        let rr = [
            0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x04, 0x0a, 0x00, 0x00, 0x01,
        ];
        let owner = b"\x03www\xc0\x0c";
        msg(
            0x4d2a,
            0x2800,
            [1, 0, 1, 0],
            &[EXAMPLE_COM, SOA_IN, owner, &rr],
        )
    }

    /// Its REFUSED answer: flags 0x8000 | 0x2800 | 5 = 0xa805.
    fn update_refused() -> Vec<u8> {
        msg(0x4d2a, 0xa805, [1, 0, 0, 0], &[EXAMPLE_COM, SOA_IN])
    }

    fn tcp(msg: &[u8]) -> Vec<u8> {
        let mut v = (msg.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(msg);
        v
    }

    fn req(resource: &str, id: u16, bytes: u64) -> Event {
        Event::Request(Request {
            resource: Resource::from_str_lossy(resource),
            text: RequestText::from_str_lossy(resource),
            id: Some(u32::from(id)),
            bytes,
        })
    }

    fn resp(code: &str, id: u16, bytes: u64) -> Event {
        Event::Response(Response {
            code: Code::from_str_lossy(code),
            error: code != "NOERROR",
            kind: Code::from_str_lossy(code),
            id: Some(u32::from(id)),
            bytes,
        })
    }

    fn udp(msg: &[u8]) -> Events {
        let mut s = DnsSession::new(Transport::Udp, &Limits::default());
        let mut out = Events::new();
        assert_eq!(s.feed(Direction::ToServer, msg, &mut out), msg.len());
        assert!(!s.in_message(Direction::ToServer));
        out
    }

    /// The caller: keeps unconsumed bytes and re-feeds them with each new chunk.
    struct Caller {
        s: DnsSession,
        buf: Vec<u8>,
        out: Events,
    }

    impl Caller {
        fn new(limits: &Limits) -> Self {
            Caller {
                s: DnsSession::new(Transport::Tcp, limits),
                buf: Vec::new(),
                out: Events::new(),
            }
        }
        fn push(&mut self, dir: Direction, chunk: &[u8]) {
            self.buf.extend_from_slice(chunk);
            let n = self.s.feed(dir, &self.buf, &mut self.out);
            assert!(n <= self.buf.len());
            self.buf.drain(..n);
        }
        fn gap(&mut self, dir: Direction) {
            self.buf.clear();
            self.s.gap(dir);
        }
    }

    fn tcp_chunks(stream: &[u8], chunk: usize) -> (Events, usize) {
        let mut c = Caller::new(&Limits::default());
        for part in stream.chunks(chunk) {
            c.push(Direction::ToServer, part);
        }
        (c.out, c.buf.len())
    }

    // ----- pure parsers -----

    #[test]
    fn header_fields() {
        let msg = response_nxdomain();
        let (rest, h) = parse_header(&msg).unwrap();
        assert_eq!(rest.len(), 26);
        assert_eq!(
            h,
            Header {
                id: 0xbeef,
                qr: true,
                opcode: 0,
                aa: false,
                tc: false,
                rd: true,
                ra: true,
                rcode: 3,
                qdcount: 1,
                ancount: 0,
                nscount: 0,
                arcount: 0
            }
        );
        // 0x2e00: opcode 5, TC; 0x8400: QR AA.
        let (_, h) = parse_header(&[0, 0, 0x2e, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(h.tc && !h.qr && !h.rd && h.opcode == 5);
        let (_, h) = parse_header(&[0, 0, 0x84, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(h.qr && h.aa && !h.tc && h.opcode == 0);
        assert!(parse_header(&[0; 11]).is_err());
    }

    #[test]
    fn name_with_pointers() {
        let limits = Limits::default();
        let msg = response_example_a();
        let (q, end) = parse_question(&msg, 12, &limits).unwrap();
        assert_eq!(q.name.as_bytes(), b"example.com");
        assert_eq!(q.name.wire_len(), 13);
        assert_eq!((q.qtype, q.qclass, end), (1, 1, 29));
        // The answer's name is the pointer c0 0c at offset 29: ends at 31.
        let (n, end) = parse_name(&msg, 29, &limits).unwrap();
        assert_eq!((n.as_bytes(), end), (&b"example.com"[..], 31));
        // "www" + pointer to the zone, as in the UPDATE message at offset 29.
        let up = update_request();
        let (n, end) = parse_name(&up, 29, &limits).unwrap();
        assert_eq!(
            (n.as_bytes(), end, n.labels()),
            (&b"www.example.com"[..], 35, 3)
        );
        // Root.
        let (n, end) = parse_name(&[0], 0, &limits).unwrap();
        assert_eq!((n.as_bytes(), end, n.wire_len()), (&b"."[..], 1, 1));
    }

    #[test]
    fn pointer_chain_jump_limit() {
        // offset 0: "a" root; 3: ptr->0; 5: ptr->3; 7: ptr->5 (all backwards).
        let msg = [1, b'a', 0, 0xc0, 0, 0xc0, 3, 0xc0, 5];
        let mut limits = Limits::default();
        let (n, end) = parse_name(&msg, 7, &limits).unwrap();
        assert_eq!((n.as_bytes(), end), (&b"a"[..], 9));
        limits.max_dns_pointers = 2;
        assert_eq!(parse_name(&msg, 7, &limits), Err(DnsError::LimitExceeded));
        limits.max_dns_pointers = 3;
        assert!(parse_name(&msg, 7, &limits).is_ok());
    }

    #[test]
    fn pointer_loops_are_malformed_and_terminate() {
        let limits = Limits::default();
        // Question name pointing at itself.
        let mut msg = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(parse_name(&msg, 12, &limits), Err(DnsError::Malformed));
        assert_eq!(udp(&msg), vec![Event::Anomaly(Anomaly::Malformed)]);
        // Two-node loop: 12 -> 18 (forward) -> 12.
        let mut msg = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&[0xc0, 0x12, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c]);
        assert_eq!(parse_name(&msg, 12, &limits), Err(DnsError::Malformed));
        assert_eq!(udp(&msg), vec![Event::Anomaly(Anomaly::Malformed)]);
        // A label then a pointer back to it: grows past 255 octets, stops as a limit.
        let mut msg = vec![0x3f];
        msg.extend_from_slice(&[b'x'; 63]);
        msg.extend_from_slice(&[0xc0, 0x00]);
        assert_eq!(parse_name(&msg, 0, &limits), Err(DnsError::LimitExceeded));
        // Pointer past the end of the message.
        assert_eq!(
            parse_name(&[0xc0, 0x05, 0], 0, &limits),
            Err(DnsError::Incomplete)
        );
    }

    #[test]
    fn label_types_and_lengths() {
        let limits = Limits::default();
        // 0x40 (a "64-byte label": extended label type) and 0x80 are malformed.
        let mut long = vec![0x40];
        long.extend_from_slice(&[b'a'; 64]);
        long.push(0);
        assert_eq!(parse_name(&long, 0, &limits), Err(DnsError::Malformed));
        assert_eq!(
            parse_name(&[0x80, 0, 0], 0, &limits),
            Err(DnsError::Malformed)
        );
        // Three 63-octet labels and one of 61: 3*64 + 62 + 1 = 255 octets: allowed.
        let mut name = Vec::new();
        for len in [63u8, 63, 63, 61] {
            name.push(len);
            name.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        name.push(0);
        assert_eq!(name.len(), 255);
        let (n, end) = parse_name(&name, 0, &limits).unwrap();
        assert_eq!(
            (n.wire_len(), end, n.as_bytes().len(), n.is_cut()),
            (255, 255, 253, false)
        );
        // One more octet in the last label: 256 > 255.
        let mut over = Vec::new();
        for len in [63u8, 63, 63, 62] {
            over.push(len);
            over.extend(std::iter::repeat_n(b'a', usize::from(len)));
        }
        over.push(0);
        assert_eq!(parse_name(&over, 0, &limits), Err(DnsError::LimitExceeded));
        // In a datagram: LimitExceeded, datagram consumed.
        let mut msg = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&over);
        msg.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(udp(&msg), vec![Event::Anomaly(Anomaly::LimitExceeded)]);
        // Truncated label.
        assert_eq!(
            parse_name(b"\x07exam", 0, &limits),
            Err(DnsError::Incomplete)
        );
    }

    #[test]
    fn names_of_types_and_rcodes() {
        assert_eq!(qtype_text(1).as_str(), "A");
        assert_eq!(qtype_text(65).as_str(), "HTTPS");
        assert_eq!(qtype_text(257).as_str(), "CAA");
        assert_eq!(qtype_text(250).as_str(), "TYPE250");
        assert_eq!(qtype_text(0).as_str(), "TYPE0");
        assert_eq!(qtype_text(65535).as_str(), "TYPE65535");
        assert_eq!(rcode_text(3).as_str(), "NXDOMAIN");
        assert_eq!(rcode_text(10).as_str(), "NOTZONE");
        assert_eq!(rcode_text(11).as_str(), "RCODE11");
        assert_eq!(rcode_text(4095).as_str(), "RCODE4095");
    }

    // ----- UDP session -----

    #[test]
    fn udp_query_and_response() {
        assert_eq!(
            udp(&query_example_a()),
            vec![req("example.com A", 0x1234, 29)]
        );
        assert_eq!(
            udp(&response_example_a()),
            vec![resp("NOERROR", 0x1234, 45)]
        );
        assert_eq!(
            udp(&response_nxdomain()),
            vec![resp("NXDOMAIN", 0xbeef, 38)]
        );
        assert_eq!(
            udp(&query_mixed_case_aaaa()),
            vec![req("www.example.com AAAA", 0x0102, 33)]
        );
    }

    #[test]
    fn udp_direction_comes_from_qr() {
        let mut s = DnsSession::new(Transport::Udp, &Limits::default());
        let mut out = Events::new();
        s.feed(Direction::ToServer, &response_example_a(), &mut out);
        s.feed(Direction::ToClient, &query_example_a(), &mut out);
        assert_eq!(
            out,
            vec![
                resp("NOERROR", 0x1234, 45),
                req("example.com A", 0x1234, 29)
            ]
        );
    }

    #[test]
    fn udp_root_and_unknown_type() {
        // id 0x0007, ". NS"
        let q = [
            0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x02, 0x00, 0x01,
        ];
        assert_eq!(udp(&q), vec![req(". NS", 7, 17)]);
        // id 0x0008, "a.b" TYPE 250 (TSIG, not in wiremap's list)
        let q = [
            0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 1, b'a', 1, b'b', 0, 0x00, 0xfa,
            0x00, 0x01,
        ];
        assert_eq!(udp(&q), vec![req("a.b TYPE250", 8, 21)]);
    }

    #[test]
    fn udp_response_without_question_and_odd_rcode() {
        // FORMERR with QDCOUNT 0, id 0xffff.
        let r = [0xff, 0xff, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(udp(&r), vec![resp("FORMERR", 0xffff, 12)]);
        // rcode 11 (unassigned in the header's 4 bits).
        let r = [0x00, 0x01, 0x80, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(udp(&r), vec![resp("RCODE11", 1, 12)]);
        // A query without question: resource is the opcode name.
        let q = [0x00, 0x02, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(udp(&q), vec![req("QUERY", 2, 12)]);
    }

    #[test]
    fn udp_edns_extended_rcode() {
        // Response NOERROR in the header, OPT with extended rcode 1 => 16 (BADVERS).
        let mut r = response_example_a();
        r[11] = 1; // ARCOUNT 1
        r.extend_from_slice(&[
            0x00, 0x00, 0x29, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        ]);
        assert_eq!(udp(&r), vec![resp("RCODE16", 0x1234, 56)]);
        // Same OPT with extended rcode 0: plain NOERROR.
        // The OPT record starts at 45: name 45, type 46, class 48, TTL 50 (extended rcode).
        r[50] = 0;
        assert_eq!(udp(&r), vec![resp("NOERROR", 0x1234, 56)]);
        // Records that do not walk (ARCOUNT says 2, one present): header rcode kept.
        r[50] = 1;
        r[11] = 2;
        r[7] = 2;
        assert_eq!(udp(&r), vec![resp("NOERROR", 0x1234, 56)]);
    }

    #[test]
    fn udp_update() {
        assert_eq!(
            udp(&update_request()),
            vec![req("example.com SOA", 0x4d2a, 49)]
        );
        assert_eq!(udp(&update_refused()), vec![resp("REFUSED", 0x4d2a, 29)]);
    }

    #[test]
    fn udp_garbage() {
        assert_eq!(udp(b"hello"), vec![Event::Anomaly(Anomaly::Malformed)]);
        assert_eq!(udp(b""), vec![Event::Anomaly(Anomaly::Malformed)]);
        // Opcode 3 (unassigned).
        assert_eq!(
            udp(&[0, 1, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            vec![Event::Anomaly(Anomaly::Malformed)]
        );
        // Question cut short.
        let q = query_example_a();
        assert_eq!(udp(&q[..27]), vec![Event::Anomaly(Anomaly::Malformed)]);
        assert_eq!(udp(&q[..20]), vec![Event::Anomaly(Anomaly::Malformed)]);
    }

    #[test]
    fn long_name_is_cut_but_keeps_type() {
        // Four labels of 60 'a': name of 243 characters.
        let mut q = vec![0x00, 0x09, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        for _ in 0..4 {
            q.push(60);
            q.extend_from_slice(&[b'A'; 60]);
        }
        q.extend_from_slice(&[0, 0x00, 0x10, 0x00, 0x01]);
        let out = udp(&q);
        let Event::Request(r) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(r.resource.len(), 96);
        assert!(
            r.resource.as_str().starts_with("aaaa") && r.resource.as_str().ends_with("aaa TXT")
        );
        assert_eq!(r.text.len(), 243 + 4);
        let label = "a".repeat(60);
        assert_eq!(
            r.text.as_str(),
            format!("{label}.{label}.{label}.{label} TXT")
        );
        assert!(!r.text.is_cut());
        assert_eq!(r.bytes, 12 + 245 + 4);
    }

    #[test]
    fn control_bytes_in_labels_are_rendered_safely() {
        let q = [
            0x00, 0x03, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 3, b'a', b'\n', 0xff, 0, 0, 1, 0,
            1,
        ];
        assert_eq!(udp(&q), vec![req("a?? A", 3, 21)]);
    }

    // ----- TCP session -----

    #[test]
    fn tcp_two_messages_in_one_buffer() {
        let stream = [tcp(&query_example_a()), tcp(&query_mixed_case_aaaa())].concat();
        let (out, left) = tcp_chunks(&stream, stream.len());
        assert_eq!(
            out,
            vec![
                req("example.com A", 0x1234, 31),
                req("www.example.com AAAA", 0x0102, 35)
            ]
        );
        assert_eq!(left, 0);
    }

    #[test]
    fn tcp_split_at_every_byte_boundary() {
        let stream = [
            tcp(&response_example_a()),
            tcp(&response_nxdomain()),
            tcp(&update_refused()),
        ]
        .concat();
        let expected = vec![
            resp("NOERROR", 0x1234, 47),
            resp("NXDOMAIN", 0xbeef, 40),
            resp("REFUSED", 0x4d2a, 31),
        ];
        let (all, _) = tcp_chunks(&stream, stream.len());
        assert_eq!(all, expected);
        for k in 0..=stream.len() {
            let mut c = Caller::new(&Limits::default());
            c.push(Direction::ToClient, &stream[..k]);
            c.push(Direction::ToClient, &stream[k..]);
            assert_eq!(c.out, expected, "split at {k}");
            assert!(c.buf.is_empty());
            assert!(!c.s.in_message(Direction::ToClient));
        }
        let (bytewise, left) = tcp_chunks(&stream, 1);
        assert_eq!((bytewise, left), (expected, 0));
    }

    #[test]
    fn tcp_in_message_tracks_partial_messages() {
        let m = tcp(&query_example_a());
        let mut c = Caller::new(&Limits::default());
        assert!(!c.s.in_message(Direction::ToServer));
        c.push(Direction::ToServer, &m[..1]);
        assert!(c.s.in_message(Direction::ToServer));
        assert!(!c.s.in_message(Direction::ToClient));
        c.push(Direction::ToServer, &m[1..20]);
        assert!(c.s.in_message(Direction::ToServer));
        assert!(c.out.is_empty());
        c.push(Direction::ToServer, &m[20..]);
        assert!(!c.s.in_message(Direction::ToServer));
        assert_eq!(c.out, vec![req("example.com A", 0x1234, 31)]);
    }

    #[test]
    fn tcp_gap_then_resync() {
        let q1 = tcp(&query_example_a());
        let q2 = tcp(&query_mixed_case_aaaa());
        let q3 = tcp(&update_request());
        // Mid-message loss of q1: the tail of q1 must not be taken for a message.
        for cut in 1..q1.len() {
            let mut c = Caller::new(&Limits::default());
            c.push(Direction::ToServer, &q1[..cut]);
            c.gap(Direction::ToServer);
            assert!(!c.s.in_message(Direction::ToServer));
            c.push(
                Direction::ToServer,
                &[&q1[cut..], &q2[..], &q3[..]].concat(),
            );
            assert_eq!(
                c.out,
                vec![
                    req("www.example.com AAAA", 0x0102, 35),
                    req("example.com SOA", 0x4d2a, 51)
                ],
                "cut at {cut}"
            );
            assert!(c.buf.is_empty());
        }
        // Same, byte by byte after the gap.
        let mut c = Caller::new(&Limits::default());
        c.push(Direction::ToServer, &q1[..9]);
        c.gap(Direction::ToServer);
        for b in [&q1[9..], &q2[..], &q3[..]].concat() {
            c.push(Direction::ToServer, &[b]);
        }
        assert_eq!(
            c.out,
            vec![
                req("www.example.com AAAA", 0x0102, 35),
                req("example.com SOA", 0x4d2a, 51)
            ]
        );
        // Gap on a message boundary: the next message is found at once.
        let mut c = Caller::new(&Limits::default());
        c.push(Direction::ToServer, &q1);
        c.gap(Direction::ToServer);
        c.push(Direction::ToServer, &q2);
        assert_eq!(
            c.out,
            vec![
                req("example.com A", 0x1234, 31),
                req("www.example.com AAAA", 0x0102, 35)
            ]
        );
    }

    #[test]
    fn tcp_resync_skips_garbage_without_blowup() {
        // 64 KiB of bytes that pass the cheap header test nowhere, then a query.
        let mut garbage = vec![0x41u8; 65536];
        garbage.extend_from_slice(&tcp(&query_example_a()));
        let mut c = Caller::new(&Limits::default());
        c.gap(Direction::ToServer);
        for part in garbage.chunks(1448) {
            c.push(Direction::ToServer, part);
        }
        assert_eq!(c.out, vec![req("example.com A", 0x1234, 31)]);
        assert!(c.buf.is_empty());
    }

    #[test]
    fn tcp_garbage_frame_reports_and_resyncs() {
        // Length 5 (< header) => malformed, then resync onto the next real message.
        let stream = [&[0x00, 0x05, 1, 2, 3, 4, 5][..], &tcp(&query_example_a())].concat();
        let (out, left) = tcp_chunks(&stream, stream.len());
        assert_eq!(
            out,
            vec![
                Event::Anomaly(Anomaly::Malformed),
                req("example.com A", 0x1234, 31)
            ]
        );
        assert_eq!(left, 0);
        // A well-framed message whose question is a pointer loop: malformed, framing kept.
        let mut bad = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
        let stream = [tcp(&bad), tcp(&query_example_a())].concat();
        for chunk in [1, 2, 7, stream.len()] {
            let (out, left) = tcp_chunks(&stream, chunk);
            assert_eq!(
                out,
                vec![
                    Event::Anomaly(Anomaly::Malformed),
                    req("example.com A", 0x1234, 31)
                ]
            );
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn tcp_message_over_max_buffered_is_skipped_incrementally() {
        let limits = Limits {
            max_buffered: 64,
            ..Limits::default()
        };
        // A response with one TXT answer of 100 bytes: 29 + 12 + 100 = 141 bytes.
        let mut big = response_example_a();
        big[29 + 3] = 0x10; // answer type TXT
        big[29 + 10] = 0x00;
        big[29 + 11] = 100; // rdlength 100
        big.truncate(29 + 12);
        big.extend_from_slice(&[b't'; 100]);
        assert_eq!(big.len(), 141);
        let stream = [tcp(&big), tcp(&response_nxdomain())].concat();
        for chunk in [1, 5, 30, 64] {
            let mut c = Caller::new(&limits);
            for part in stream.chunks(chunk) {
                c.push(Direction::ToClient, part);
                assert!(c.buf.len() < 64, "chunk {chunk}: buffer {}", c.buf.len());
            }
            assert_eq!(
                c.out,
                vec![
                    resp("NOERROR", 0x1234, 143),
                    Event::Anomaly(Anomaly::LimitExceeded),
                    resp("NXDOMAIN", 0xbeef, 40)
                ],
                "chunk {chunk}"
            );
            assert!(!c.s.in_message(Direction::ToClient));
        }
        // Mid-skip the session says it is inside a message.
        let mut c = Caller::new(&limits);
        c.push(Direction::ToClient, &stream[..80]);
        assert!(c.s.in_message(Direction::ToClient));
    }

    #[test]
    fn tcp_close_and_udp_gap_are_harmless() {
        let mut c = Caller::new(&Limits::default());
        c.push(Direction::ToServer, &tcp(&query_example_a())[..10]);
        let mut out = Events::new();
        c.s.close(Direction::ToServer, &mut out);
        assert!(out.is_empty());
        assert!(!c.s.in_message(Direction::ToServer));
        let mut s = DnsSession::new(Transport::Udp, &Limits::default());
        s.gap(Direction::ToServer);
        s.feed(Direction::ToServer, &query_example_a(), &mut out);
        assert_eq!(out, vec![req("example.com A", 0x1234, 29)]);
    }

    // ----- probe -----

    #[test]
    fn probe_udp() {
        assert_eq!(
            probe(Transport::Udp, &query_example_a()),
            Probe::Match(Role::Request)
        );
        assert_eq!(
            probe(Transport::Udp, &response_example_a()),
            Probe::Match(Role::Response)
        );
        assert_eq!(
            probe(Transport::Udp, &response_nxdomain()),
            Probe::Match(Role::Response)
        );
        assert_eq!(
            probe(Transport::Udp, &update_request()),
            Probe::Match(Role::Request)
        );
        assert_eq!(
            probe(Transport::Udp, &update_refused()),
            Probe::Match(Role::Response)
        );
        // Whole datagrams: short means no.
        assert_eq!(probe(Transport::Udp, &query_example_a()[..20]), Probe::No);
        assert_eq!(probe(Transport::Udp, &[]), Probe::No);
        assert_eq!(
            probe(Transport::Udp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Probe::No
        );
        // QDCOUNT 0 / 2, ANCOUNT 1000, opcode 3, opcode 6: no.
        let mut q = query_example_a();
        q[5] = 0;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        q[5] = 2;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        let mut q = query_example_a();
        q[6] = 0x03;
        q[7] = 0xe8;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        q[7] = 0xe7; // 999
        assert_eq!(probe(Transport::Udp, &q), Probe::Match(Role::Request));
        let mut q = query_example_a();
        q[2] = 0x18;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        q[2] = 0x30;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        // Unknown class 2 (CSNET... unassigned in practice), type 0: no; CH and mDNS QU IN: yes.
        let mut q = query_example_a();
        q[28] = 2;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        q[28] = 3;
        assert_eq!(probe(Transport::Udp, &q), Probe::Match(Role::Request));
        q[27] = 0x80;
        q[28] = 1;
        assert_eq!(probe(Transport::Udp, &q), Probe::Match(Role::Request));
        q[26] = 0;
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
        // Looping question name.
        let mut q = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(probe(Transport::Udp, &q), Probe::No);
    }

    #[test]
    fn probe_tcp_cases() {
        let m = tcp(&query_example_a());
        assert_eq!(probe(Transport::Tcp, &m), Probe::Match(Role::Request));
        assert_eq!(
            probe(Transport::Tcp, &tcp(&response_example_a())),
            Probe::Match(Role::Response)
        );
        for k in 0..m.len() {
            assert_eq!(
                probe(Transport::Tcp, &m[..k]),
                Probe::NeedMore,
                "prefix of {k}"
            );
        }
        // Followed by more bytes (a second message): still a match.
        let two = [m.clone(), m.clone()].concat();
        assert_eq!(probe(Transport::Tcp, &two), Probe::Match(Role::Request));
        // Length below a header, implausible header.
        assert_eq!(probe(Transport::Tcp, &[0x00, 0x0b, 0, 0, 0, 0]), Probe::No);
        assert_eq!(probe(Transport::Tcp, b"GET / HTTP/1.1\r\n\r\n"), Probe::No);
        assert_eq!(probe(Transport::Tcp, b"*1\r\n$4\r\nPING\r\n"), Probe::No);
        assert_eq!(
            probe(
                Transport::Tcp,
                &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]
            ),
            Probe::No
        );
        // The prefix says the question ends after the message: no.
        let mut short = m.clone();
        short[1] = 27;
        assert_eq!(probe(Transport::Tcp, &short), Probe::No);
        // Early verdict on a partial header: opcode 3 after 4 header bytes.
        assert_eq!(
            probe(Transport::Tcp, &[0x00, 0x1d, 0x12, 0x34, 0x18, 0x00]),
            Probe::No
        );
    }

    /// Mutated messages and random bytes: never a panic, TCP always makes progress or
    /// waits within max_buffered, and UDP always consumes the datagram.
    #[test]
    fn mutations_never_panic_or_stall() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = [
            query_example_a(),
            response_example_a(),
            response_nxdomain(),
            update_request(),
            update_refused(),
            query_mixed_case_aaaa(),
        ];
        let limits = Limits {
            max_buffered: 512,
            ..Limits::default()
        };
        for round in 0..3000 {
            let mut m = base[round % base.len()].clone();
            for _ in 0..(rnd() % 4 + 1) {
                let at = (rnd() as usize) % m.len();
                m[at] = rnd() as u8;
            }
            if round % 7 == 0 {
                m.truncate((rnd() as usize) % m.len());
            }
            let mut out = Events::new();
            let mut s = DnsSession::new(Transport::Udp, &limits);
            assert_eq!(s.feed(Direction::ToServer, &m, &mut out), m.len());
            assert_eq!(out.len(), 1);
            let _ = probe(Transport::Udp, &m);
            // TCP: a mutated framed message followed by a good one, fed in random chunks.
            let mut stream = [tcp(&m), tcp(&query_example_a())].concat();
            if round % 3 == 0 {
                let garbage: Vec<u8> = (0..(rnd() % 600)).map(|_| rnd() as u8).collect();
                stream.splice(0..0, garbage);
            }
            let _ = probe(Transport::Tcp, &stream);
            let mut c = Caller::new(&limits);
            let mut at = 0;
            while at < stream.len() {
                let n = ((rnd() as usize) % 9 + 1).min(stream.len() - at);
                c.push(Direction::ToServer, &stream[at..at + n]);
                at += n;
                assert!(c.buf.len() <= limits.max_buffered);
            }
            if round % 5 == 0 {
                c.gap(Direction::ToServer);
                c.push(Direction::ToServer, &tcp(&query_example_a()));
                assert_eq!(
                    c.out.last(),
                    Some(&req("example.com A", 0x1234, 31)),
                    "round {round}"
                );
            }
        }
    }
}
