//! L7 on one connection: in-order byte delivery (TCP reassembly), protocol detection,
//! the protocol's session from `protocols/`, and request/response pairing with latency.
//!
//! Parsers only report events; this module decides what they mean for the topology:
//! pairing (in order, or by id for DNS), DNS retransmission de-duplication, latency
//! (the response's first packet − the request's last packet, in packet time), tallies and
//! the optional per-exchange records.

mod pairing;
pub mod records;
pub mod stream;

use protocols::{
    AnySession, Detection, Direction, Event, Events, Protocol, Role, Session, Transport as L4,
};

use crate::decode::tcp_flags::{ACK, FIN, SYN};
use crate::decode::Transport;
use crate::flow::{FlowKey, SegmentKind, Side};
use crate::limits::{LimitHits, Limits};
use crate::report::L7Tally;
use pairing::{Pairing, PendingRequest};
pub use records::RecordSink;
pub use stream::{Chunk, Reassembly};

/// How many payload-bearing chunks per direction detection looks at before giving up.
const DETECT_TRIES: u8 = 4;
/// Most bytes held while detection waits for more.
const DETECT_BYTES: usize = 8 * 1024;

/// What every L7 call needs from its worker.
pub struct Ctx<'a> {
    pub limits: &'a Limits,
    pub hits: &'a mut LimitHits,
    pub records: Option<&'a mut RecordSink>,
    pub key: FlowKey,
    /// The worker's scratch buffer for parser events (one per worker, not per connection).
    pub events: &'a mut Events,
    /// The worker's pending requests reached `max_pending_bytes_total`: a connection may
    /// not queue more than it holds (a new request displaces its oldest).
    pub pending_full: bool,
}

enum State {
    Detecting {
        tries: [u8; 2],
    },
    /// The session (boxed inside at its protocol's size).
    Active(AnySession),
    /// Encrypted (TLS, MySQL after SSL): no more parsing.
    Opaque,
    Unknown,
}

pub struct L7Conn {
    tcp: bool,
    state: State,
    protocol: Option<Protocol>,
    /// The side the parser treats as the client.
    client: Option<Side>,
    /// Set when detection (not the handshake) decided which side is the server.
    l7_server: Option<Side>,
    streams: [Reassembly; 2],
    /// Bytes delivered in order but not yet consumed by the parser, per side.
    carry: [Vec<u8>; 2],
    pairing: Pairing,
    tally: L7Tally,
    /// Packet time at which the message now in progress in each direction began.
    msg_start: [Option<i64>; 2],
    mid_stream: bool,
    /// A gap followed the bytes held during detection (replayed once a session exists).
    held_gap: [bool; 2],
    /// A response that came while its request was still being sent. Rare, so boxed (an
    /// open connection does not carry a response inline); the box is kept once made.
    early: Option<Box<Early>>,
    /// Part of the tally went to the edge already ([`L7Conn::flush_tally`]).
    flushed: bool,
    /// UDP: the protocol an earlier L7 state of this flow found (see [`L7Conn::resume`]).
    resume: Option<Protocol>,
    /// UDP: waiting in the worker's queue of idle flows.
    queued: bool,
}

/// Resources and codes a connection's tally names before it goes to its edge.
pub(crate) const FLUSH_RESOURCES: usize = 8;
const FLUSH_CODES: usize = 4;

/// An early response and its first packet's time, while `waiting`.
struct Early {
    waiting: bool,
    resp: protocols::Response,
    at: i64,
}

impl std::fmt::Debug for L7Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L7Conn")
            .field("protocol", &self.protocol)
            .field("client", &self.client)
            .finish()
    }
}

impl L7Conn {
    /// The memory a packet of this connection may touch beyond the state itself: the
    /// parser session (see [`AnySession::memory`]), the pending requests and the tally's
    /// vectors (separate allocations, cold at many open connections, once past the one
    /// entry the tally holds inline; while inline they are lines of the state). For a
    /// prefetch: `f` gets each place and length; nothing is read. The session whole (it
    /// is read from several places), the vectors' first lines (a lookup usually ends at
    /// the first entry).
    pub fn side_memory(&self, mut f: impl FnMut(*const u8, usize)) {
        const FIRST_LINES: usize = 128;
        if let State::Active(s) = &self.state {
            let (p, len) = s.memory();
            f(p, len);
        }
        let [queue, texts] = self.pairing.memory();
        let (codes, resources) = (self.tally.codes.memory(), self.tally.resources.memory());
        for (p, len) in [queue, texts, codes, resources] {
            f(p, len.min(FIRST_LINES));
        }
    }

    pub fn new(tcp: bool) -> L7Conn {
        L7Conn {
            tcp,
            state: State::Detecting { tries: [0; 2] },
            protocol: None,
            client: None,
            l7_server: None,
            streams: [Reassembly::default(), Reassembly::default()],
            carry: [Vec::new(), Vec::new()],
            pairing: Pairing::default(),
            tally: L7Tally::default(),
            msg_start: [None; 2],
            mid_stream: false,
            held_gap: [false; 2],
            early: None,
            flushed: false,
            resume: None,
            queued: false,
        }
    }

    /// A TCP connection's L7 state, created with its first payload. `next` is each side's
    /// next expected sequence number as the flow knew it (from the handshake, or from
    /// earlier segments without payload).
    pub fn new_tcp(next: [Option<u32>; 2]) -> L7Conn {
        let mut c = L7Conn::new(true);
        for (st, n) in c.streams.iter_mut().zip(next) {
            if let Some(n) = n {
                st.syn(n.wrapping_sub(1));
            }
        }
        c
    }

    /// The protocol once detection is over ("unknown" if it gave up); None while detecting.
    pub fn settled(&self) -> Option<&'static str> {
        match self.state {
            State::Detecting { .. } => None,
            _ => Some(self.protocol.map(Protocol::as_str).unwrap_or("unknown")),
        }
    }

    /// The side detection decided is the server, when the handshake did not say.
    pub fn l7_server(&self) -> Option<Side> {
        self.l7_server
    }

    /// The tally so far, leaving an empty one (live intervals report per interval).
    pub fn take_tally(&mut self) -> L7Tally {
        std::mem::take(&mut self.tally)
    }

    /// True once the tally is about to need memory of its own: its latency values fill
    /// the digest's inline slots, or it names [`FLUSH_RESOURCES`] resources or
    /// [`FLUSH_CODES`] codes. A long keep-alive connection would otherwise hold up to 64
    /// resources, 64 codes and 64 latencies (several KB) until it ends; the worker moves
    /// the tally to the connection's edge instead ([`L7Conn::flush_tally`]).
    #[inline]
    pub fn tally_is_heavy(&self) -> bool {
        self.tally.latency_us.inline_full()
            || self.tally.resources.len() >= FLUSH_RESOURCES
            || self.tally.codes.len() >= FLUSH_CODES
    }

    /// Add the tally to `edge` and empty it, keeping its vectors' capacity. Returns the
    /// requests moved.
    pub fn flush_tally(&mut self, edge: &mut L7Tally) -> u64 {
        let requests = self.tally.requests;
        edge.merge(&self.tally);
        self.tally.clear();
        self.flushed = true;
        requests
    }

    /// The tally not yet moved to the edge.
    #[cfg(test)]
    pub fn tally(&self) -> &L7Tally {
        &self.tally
    }

    /// UDP: take up the protocol and server side an earlier L7 state of the same flow
    /// found (it was released while the flow was idle), instead of recognising it again:
    /// the flow stays on one edge. `None`: nothing was recognised then either.
    pub fn resume(&mut self, protocol: Option<Protocol>, l7_server: Option<Side>) {
        if let Some(server) = l7_server {
            self.client = Some(server.other());
            self.l7_server = Some(server);
        }
        match protocol {
            Some(Protocol::Tls) => {
                self.protocol = Some(Protocol::Tls);
                self.state = State::Opaque;
            }
            Some(p) => self.resume = Some(p),
            None => self.state = State::Unknown,
        }
    }

    /// Nothing waits for more packets: the protocol is decided and no request is pending.
    /// An idle UDP flow's state can then be released (the worker decides when).
    pub fn is_idle(&self) -> bool {
        self.settled().is_some() && self.pairing.is_empty()
    }

    /// Mark the state as queued (true) or not for release; returns the previous mark.
    pub fn set_queued(&mut self, queued: bool) -> bool {
        std::mem::replace(&mut self.queued, queued)
    }

    /// True if part of the tally was already added to an edge.
    pub fn flushed(&self) -> bool {
        self.flushed
    }

    /// Bytes this connection holds out of order, both directions.
    pub fn held_bytes(&self) -> usize {
        self.streams.iter().map(Reassembly::held_bytes).sum()
    }

    /// Give up on every hole now (the worker's reassembly memory is full): what is held is
    /// delivered after a gap.
    pub fn release_held(&mut self, cx: &mut Ctx<'_>) {
        for side in [Side::A, Side::B] {
            let mut st = std::mem::take(&mut self.streams[side.index()]);
            if st.held_bytes() > 0 {
                let last = st.last_ts;
                st.flush(|chunk| self.deliver(side, chunk, last, cx));
            }
            self.streams[side.index()] = st;
        }
    }

    /// Bytes of partial messages this connection holds (both directions), including bytes
    /// held while the protocol is being recognised.
    /// Bytes of pending requests held (queue entries and their texts).
    pub fn pending_bytes(&self) -> usize {
        self.pairing.bytes()
    }

    pub fn carry_bytes(&self) -> usize {
        self.carry[0].len().saturating_add(self.carry[1].len())
    }

    /// Give up the partial messages held (the worker's total for them is reached): each
    /// direction holding one takes a gap and resynchronises, as after lost bytes. Their
    /// memory is released.
    pub fn release_carry(&mut self, ts: i64, cx: &mut Ctx<'_>) {
        for side in [Side::A, Side::B] {
            let s = side.index();
            if self.carry[s].is_empty() {
                continue;
            }
            match self.state {
                // Detection never sees these bytes: a gap replayed once a session exists.
                State::Detecting { .. } => self.held_gap[s] = true,
                State::Active(_) => self.deliver(side, Chunk::Gap, ts, cx),
                State::Opaque | State::Unknown => {}
            }
            self.carry[s] = Vec::new();
        }
    }

    fn done(&self) -> bool {
        matches!(self.state, State::Opaque | State::Unknown)
    }

    /// One TCP segment from `side`. `client` is the flow's known opener, if any;
    /// `mid_stream` says the connection's handshake was not seen.
    #[allow(clippy::too_many_arguments)]
    pub fn on_tcp(
        &mut self,
        side: Side,
        client: Option<Side>,
        mid_stream: bool,
        t: &Transport,
        kind: SegmentKind,
        payload: &[u8],
        ts: i64,
        cx: &mut Ctx<'_>,
    ) {
        if self.client.is_none() {
            self.client = client;
        }
        self.mid_stream |= mid_stream;
        if self.done() {
            return;
        }
        let s = side.index();
        let flags = t.tcp.flags;
        if flags & SYN != 0 {
            self.streams[s].syn(t.tcp.seq);
            return;
        }
        if kind == SegmentKind::KeepAlive {
            return;
        }
        if flags & ACK != 0 && self.streams[side.other().index()].ack_matters(t.tcp.ack) {
            // What this side acknowledges may settle holes in the other side's stream.
            let o = side.other();
            let mut other = std::mem::take(&mut self.streams[o.index()]);
            other.peer_ack(t.tcp.ack, |chunk| self.deliver(o, chunk, ts, cx));
            self.streams[o.index()] = other;
        }
        let fin = flags & FIN != 0;
        if payload.is_empty() && t.payload_wire_len == 0 && !fin {
            return;
        }
        let mut st = std::mem::take(&mut self.streams[s]);
        let mut dropped = 0u64;
        let limits = cx.limits;
        st.segment(
            t.tcp.seq,
            payload,
            t.payload_wire_len,
            fin,
            ts,
            limits,
            &mut dropped,
            |chunk| self.deliver(side, chunk, ts, cx),
        );
        cx.hits.reassembly_dropped_segments += dropped;
        self.streams[s] = st;
    }

    /// One UDP datagram from `side`.
    pub fn on_udp(
        &mut self,
        side: Side,
        client: Option<Side>,
        payload: &[u8],
        ts: i64,
        cx: &mut Ctx<'_>,
    ) {
        if self.client.is_none() {
            self.client = client;
        }
        if self.done() {
            return;
        }
        self.deliver(side, Chunk::Data(payload, ts), ts, cx);
    }

    fn direction(&self, side: Side) -> Direction {
        match self.client {
            Some(c) if c != side => Direction::ToClient,
            _ => Direction::ToServer,
        }
    }

    fn deliver(&mut self, side: Side, chunk: Chunk<'_>, ts: i64, cx: &mut Ctx<'_>) {
        let s = side.index();
        match chunk {
            Chunk::Gap => {
                if let State::Detecting { .. } = self.state {
                    if !self.carry[s].is_empty() {
                        self.held_gap[s] = true;
                    }
                    return;
                }
                let dir = self.direction(side);
                if let State::Active(sess) = &mut self.state {
                    sess.gap(dir);
                    self.carry[s].clear();
                    // Let the session report a message the gap cut short, now.
                    self.feed(side, &[], ts, cx);
                    self.msg_start[s] = None;
                }
            }
            Chunk::Fin => {
                let dir = self.direction(side);
                if let State::Active(sess) = &mut self.state {
                    cx.events.clear();
                    sess.close(dir, cx.events);
                    self.handle_events(side, ts, ts, cx);
                }
            }
            Chunk::Data(bytes, ts) => {
                if bytes.is_empty() {
                    return;
                }
                if let State::Detecting { .. } = self.state {
                    // Nothing held yet (a connection's first segment, as a rule): recognise
                    // the protocol on the segment itself, and copy it only if it must wait.
                    // A UDP datagram is whole: it is always looked at in place (a copy would
                    // replace whatever was held, and an unrecognised flow holds nothing).
                    let direct = !self.tcp
                        || (bytes.len() <= DETECT_BYTES && self.carry.iter().all(Vec::is_empty));
                    self.detect(side, bytes, direct, cx);
                    if let State::Active(_) = self.state {
                        // Feed what detection held: the client's bytes first (requests
                        // precede their responses), then the server's.
                        let client = self.client.unwrap_or(side);
                        for sd in [client, client.other()] {
                            if direct && sd == side {
                                self.feed(sd, bytes, ts, cx);
                            } else {
                                let held = std::mem::take(&mut self.carry[sd.index()]);
                                if !held.is_empty() {
                                    self.feed(sd, &held, ts, cx);
                                }
                            }
                            if std::mem::take(&mut self.held_gap[sd.index()]) {
                                self.deliver(sd, Chunk::Gap, ts, cx);
                            }
                        }
                    }
                    return;
                }
                self.feed(side, bytes, ts, cx);
            }
        }
    }

    /// Try to recognise the protocol with `bytes` from `side` added to what is held.
    /// `direct`: nothing is held and `bytes` fits the bound (or is a UDP datagram), so they
    /// are looked at in place and copied only if recognition must wait for more.
    fn detect(&mut self, side: Side, bytes: &[u8], direct: bool, cx: &mut Ctx<'_>) {
        let s = side.index();
        let State::Detecting { tries } = &mut self.state else {
            return;
        };
        tries[s] = tries[s].saturating_add(1);
        let give_up = tries[s] > DETECT_TRIES;
        let other_gave_up = tries[side.other().index()] > DETECT_TRIES;
        let carry = &mut self.carry[s];
        if direct {
            // Looked at in place below.
        } else if self.tcp {
            let room = DETECT_BYTES.saturating_sub(carry.len());
            carry.extend_from_slice(&bytes[..bytes.len().min(room)]);
            if bytes.len() > room {
                // Bytes dropped while waiting to recognise the protocol: a gap, counted.
                if !self.held_gap[s] {
                    cx.hits.parser_limits += 1;
                }
                self.held_gap[s] = true;
            }
        } else {
            carry.clear();
            carry.extend_from_slice(bytes);
        }
        let dir = match self.client {
            Some(c) if c != side => Direction::ToClient,
            _ => Direction::ToServer,
        };
        let (sender, receiver) = (
            cx.key.endpoint(side).port,
            cx.key.endpoint(side.other()).port,
        );
        let hint = server_port_hint((sender, receiver), self.client.map(|c| c == side));
        let l4 = if self.tcp { L4::Tcp } else { L4::Udp };
        let input: &[u8] = if direct { bytes } else { carry };
        let detection = match self.resume {
            // The flow's earlier state recognised it: the direction says the role.
            Some(p) => Detection::Found(
                p,
                if dir == Direction::ToServer {
                    Role::Request
                } else {
                    Role::Response
                },
            ),
            None => protocols::detect(l4, dir, input, hint),
        };
        match detection {
            Detection::Found(p, role) => {
                let client = if role == Role::Request {
                    side
                } else {
                    side.other()
                };
                match self.client {
                    None => {
                        self.client = Some(client);
                        self.l7_server = Some(client.other());
                    }
                    Some(known) if !self.tcp && known != client => {
                        // UDP: a response seen first makes its receiver the client.
                        self.client = Some(client);
                        self.l7_server = Some(client.other());
                    }
                    _ => {}
                }
                self.protocol = Some(p);
                if p == Protocol::Tls {
                    self.state = State::Opaque;
                    self.carry[0].clear();
                    self.carry[1].clear();
                    return;
                }
                let mid = self.mid_stream || (self.tcp && self.streams[s].started_mid_stream());
                // Request texts are built only for records: most of a request's parse
                // cost otherwise.
                let parser = protocols::Limits {
                    request_text: cx.records.is_some(),
                    ..cx.limits.parser.clone()
                };
                self.state = State::Active(AnySession::new(p, l4, mid, &parser));
            }
            // TCP: keep what this side sent (bounded) even when it is not recognised: the
            // other side may still reveal the protocol (an odd request answered by
            // "HTTP/1.1 400"), and then these bytes are the request.
            Detection::NeedMore | Detection::Unknown if self.tcp && !(give_up && other_gave_up) => {
                if direct {
                    self.carry[s].extend_from_slice(bytes);
                }
            }
            Detection::NeedMore | Detection::Unknown => {
                self.carry[0].clear();
                self.carry[1].clear();
                self.state = State::Unknown;
            }
        }
    }

    fn feed(&mut self, side: Side, bytes: &[u8], ts: i64, cx: &mut Ctx<'_>) {
        let s = side.index();
        let dir = self.direction(side);
        let State::Active(sess) = &mut self.state else {
            return;
        };
        let start = *self.msg_start[s].get_or_insert(ts);
        cx.events.clear();
        let carry = &mut self.carry[s];
        if carry.is_empty() {
            let used = sess.feed(dir, bytes, cx.events).min(bytes.len());
            // A UDP datagram is complete in itself: nothing carries over.
            if self.tcp && used < bytes.len() {
                carry.extend_from_slice(&bytes[used..]);
            }
        } else {
            carry.extend_from_slice(bytes);
            let used = sess.feed(dir, carry, cx.events).min(carry.len());
            carry.drain(..used);
            // Keep a typical head's worth of capacity; release what a long one needed.
            if carry.is_empty() && carry.capacity() > 4096 {
                *carry = Vec::new();
            }
        }
        if carry.len() > cx.limits.parser.max_buffered {
            // The parser cannot make progress within its bound: skip and resynchronise.
            cx.hits.parser_limits += 1;
            carry.clear();
            sess.gap(dir);
        }
        let in_progress = !carry.is_empty() || sess.in_message(dir);
        let emitted = !cx.events.is_empty();
        self.handle_events(side, start, ts, cx);
        self.msg_start[s] = match (in_progress, emitted) {
            (false, _) => None,
            (true, true) => Some(ts),
            (true, false) => Some(start),
        };
    }

    /// Turn parser events into tallies and records. `first_start` is when the first message
    /// in these events began; later ones began in the packet at `ts`.
    fn handle_events(&mut self, side: Side, first_start: i64, ts: i64, cx: &mut Ctx<'_>) {
        let events = std::mem::take(cx.events);
        for (i, ev) in events.iter().enumerate() {
            let start = if i == 0 { first_start } else { ts };
            match ev {
                Event::Request(r) => {
                    let p = PendingRequest {
                        resource: r.resource,
                        id: r.id,
                        start_ts: start,
                        end_ts: ts,
                        bytes: r.bytes,
                    };
                    let text = cx.records.is_some().then_some(&r.text);
                    let max = if cx.pending_full {
                        self.pairing.len()
                    } else {
                        cx.limits.max_pending_requests
                    };
                    if self.pairing.request(p, text, max, cx.hits) {
                        self.tally.requests += 1;
                        self.tally.add_resource(&r.resource, 1, 0);
                        if let Some(e) = self.early.as_deref_mut().filter(|e| e.waiting) {
                            e.waiting = false;
                            let (resp, at) = (e.resp.clone(), e.at);
                            if let Some((req, text)) = self.pairing.response(&resp) {
                                self.answered(&req, text.as_ref(), &resp, at, cx);
                            }
                        }
                    }
                }
                Event::Response(resp) => match self.pairing.response(resp) {
                    Some((req, text)) => self.answered(&req, text.as_ref(), resp, start, cx),
                    None => {
                        // An early answer (before the client finished sending: nginx's
                        // `return`, a 413 or 401 before the body): it answers the request
                        // in progress, which pairs with it when it completes.
                        let client = self.client.unwrap_or(side.other());
                        let client_busy = match &self.state {
                            State::Active(sess) => {
                                !self.carry[client.index()].is_empty()
                                    || sess.in_message(Direction::ToServer)
                            }
                            _ => false,
                        };
                        let waiting = self.early.as_ref().is_some_and(|e| e.waiting);
                        if resp.id.is_none() && client_busy && !waiting {
                            let e = self.early.get_or_insert_with(|| {
                                Box::new(Early {
                                    waiting: false,
                                    resp: resp.clone(),
                                    at: start,
                                })
                            });
                            e.waiting = true;
                            e.resp = resp.clone();
                            e.at = start;
                        }
                    }
                },
                Event::LoginFailed { code } => {
                    self.tally.codes.add(code, 1);
                }
                Event::Encrypted => self.state = State::Opaque,
                Event::Anomaly(a) => {
                    if *a == protocols::Anomaly::LimitExceeded {
                        cx.hits.parser_limits += 1;
                    }
                }
            }
        }
        let _ = side;
        *cx.events = events;
        cx.events.clear();
    }

    /// A response paired with its request: tally it and write its record. `start` is the
    /// response's first packet time (latency is 0 when it came before the request ended).
    fn answered(
        &mut self,
        req: &PendingRequest,
        text: Option<&protocols::event::RequestText>,
        resp: &protocols::Response,
        start: i64,
        cx: &mut Ctx<'_>,
    ) {
        self.tally.responses += 1;
        self.tally.codes.add(&resp.code, 1);
        if resp.error {
            self.tally.errors += 1;
            self.tally.add_resource(&req.resource, 0, 1);
        }
        let latency_us = (start.saturating_sub(req.end_ts).max(0) / 1000) as u64;
        self.tally.latency_us.record(latency_us);
        self.record(req, text, Some((resp, latency_us)), cx);
    }

    fn record(
        &self,
        req: &PendingRequest,
        text: Option<&protocols::event::RequestText>,
        resp: Option<(&protocols::Response, u64)>,
        cx: &mut Ctx<'_>,
    ) {
        let (Some(sink), Some(client), Some(p)) =
            (cx.records.as_deref_mut(), self.client, self.protocol)
        else {
            return;
        };
        sink.write(&records::Exchange {
            ts_ns: req.start_ts,
            client: cx.key.endpoint(client).ip,
            server: cx.key.endpoint(client.other()),
            protocol: p.as_str(),
            request: text.map(|t| t.as_str()).unwrap_or(""),
            request_bytes: req.bytes,
            response: resp.map(|(r, _)| r.kind.as_str()),
            latency_us: resp.map(|(_, l)| l),
            error: resp.is_some_and(|(r, _)| r.error),
            response_bytes: resp.map(|(r, _)| r.bytes),
        });
    }

    /// End of the connection: flush what reassembly still holds, record requests that never
    /// got an answer, and report.
    pub fn finish(mut self, cx: &mut Ctx<'_>) -> (&'static str, Option<Side>, L7Tally) {
        // Client side first, so requests are queued before the responses that answer them.
        let client = self.client.unwrap_or(Side::A);
        for side in [client, client.other()] {
            let mut st = std::mem::take(&mut self.streams[side.index()]);
            let last = st.last_ts;
            st.flush(|chunk| self.deliver(side, chunk, last, cx));
            self.streams[side.index()] = st;
            // The end of the capture cuts a message still in progress: report it if its
            // start was seen, as any gap does.
            let dir = self.direction(side);
            let in_progress = match &self.state {
                State::Active(sess) => !self.carry[side.index()].is_empty() || sess.in_message(dir),
                _ => false,
            };
            if in_progress {
                self.deliver(side, Chunk::Gap, last, cx);
            }
        }
        if cx.records.is_some() {
            for (req, text) in self.pairing.drain() {
                self.record(&req, text.as_ref(), None, cx);
            }
        }
        let name = self.protocol.map(Protocol::as_str).unwrap_or("unknown");
        (name, self.l7_server, self.tally)
    }
}

/// The port most likely to be the server's, used only to order the probes.
fn server_port_hint((sport, dport): (u16, u16), sender_is_client: Option<bool>) -> u16 {
    const KNOWN: [u16; 8] = [53, 80, 443, 3306, 6379, 8080, 5353, 8443];
    match sender_is_client {
        Some(true) => dport,
        Some(false) => sport,
        None if KNOWN.contains(&sport) && !KNOWN.contains(&dport) => sport,
        None => dport,
    }
}

#[cfg(test)]
mod tests {
    /// Every open connection with L7 state holds one of these (boxed): keep what is rarely
    /// used out of line (100 k open connections make each byte here 100 kB). What nearly
    /// every connection uses stays inline: its first pending request and that request's
    /// resource text (96 bytes of pairing, which spare two allocations per connection).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_open_connection_stays_small() {
        use std::mem::size_of;
        // Beside the tally (the edge's counters, owned by the report).
        let own = size_of::<super::L7Conn>() - size_of::<crate::report::L7Tally>();
        assert!(own <= 304, "{own}");
        assert!(size_of::<super::pairing::Pairing>() <= 96);
        assert!(size_of::<crate::report::L7Tally>() <= 352);
        assert!(size_of::<super::Reassembly>() <= 40);
        assert_eq!(size_of::<protocols::AnySession>(), 16);
    }
}
