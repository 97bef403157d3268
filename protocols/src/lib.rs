//! Pure L7 parsers for wiremap: bytes in, events out.
//!
//! Nothing here does I/O, spawns threads or reads a clock. The caller (wiremap's pipeline)
//! owns TCP reassembly, buffering of unconsumed bytes, timing and request/response pairing;
//! a parser only turns in-order bytes of one connection into [`Event`]s.
//!
//! The split follows rusticata's parsers: small pure `parse_*` functions per protocol
//! module, plus one stateful [`Session`] per protocol that drives them over a stream.
//!
//! Streaming contract of [`Session::feed`]:
//! * `data` is the caller's unconsumed bytes of one direction, in order.
//! * The session returns how many leading bytes it consumed. The caller keeps the rest and
//!   calls again with the same unconsumed bytes plus whatever arrived since.
//! * A session never needs more than [`Limits::max_buffered`] unconsumed bytes to make
//!   progress: long payloads (bodies, bulk strings, result-set rows) are consumed
//!   incrementally, not buffered. If the caller's buffer reaches that size without progress,
//!   the caller calls [`Session::gap`] and counts a limit hit.
//! * After [`Session::gap`] the session resynchronises: it discards bytes until it sees
//!   something it recognises as the start of a message. Right after a gap the caller feeds
//!   an empty slice, so a session can report a message the gap cut short (its start line
//!   was seen) before anything else happens on the connection.

pub mod detect;
pub mod dns;
pub mod event;
pub mod http;
pub mod limits;
pub mod mysql;
pub mod queue;
pub mod redis;
pub mod text;
pub mod tls;

pub use detect::{detect, Detection, Role};
pub use event::{Anomaly, Event, Events, Request, Response};
pub use limits::Limits;
pub use text::Text;

/// Which way bytes travel on a connection, relative to the side that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ToServer,
    ToClient,
}

impl Direction {
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
}

/// Transport the bytes came over: UDP datagrams are fed one whole datagram per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// The L7 protocols wiremap recognises by payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Dns,
    Mysql,
    Redis,
    Tls,
}

impl Protocol {
    /// The protocol named `name` in the topology document ([`Protocol::as_str`]).
    pub fn from_name(name: &str) -> Option<Protocol> {
        [
            Protocol::Http,
            Protocol::Dns,
            Protocol::Mysql,
            Protocol::Redis,
            Protocol::Tls,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// The name used in the topology document.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Dns => "dns",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Tls => "tls",
        }
    }
}

/// A stateful parser for one connection (both directions).
pub trait Session {
    /// Consume in-order bytes of `dir`; push events to `out`; return bytes consumed.
    /// For UDP, `data` is exactly one datagram and the session consumes all of it.
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize;
    /// Bytes of `dir` were lost (capture loss, snaplen cut, buffer limit): drop partial
    /// state of that direction and resynchronise on the next recognisable message.
    fn gap(&mut self, dir: Direction);
    /// `dir` ended (FIN): complete a message delimited by the close (HTTP/1.0 bodies).
    fn close(&mut self, dir: Direction, out: &mut Events);
    /// True while a message of `dir` has been partly consumed (mid-body, mid-result-set).
    fn in_message(&self, dir: Direction) -> bool;
}

/// A session of any protocol, dispatched without a trait object. Each session is boxed on
/// its own, at its own size (they differ several times over), so the enum is two words and
/// a connection holds it inline: one allocation per session, of the size its protocol needs.
pub enum AnySession {
    Http(Box<http::HttpSession>),
    Dns(Box<dns::DnsSession>),
    Mysql(Box<mysql::MysqlSession>),
    Redis(Box<redis::RedisSession>),
    /// Holds nothing: not boxed.
    Tls(tls::TlsSession),
}

impl AnySession {
    /// Where the session's state lives and how large it is, for a caller that wants it
    /// loaded into the cache before feeding it (nothing is read or written here).
    pub fn memory(&self) -> (*const u8, usize) {
        fn span<T>(b: &T) -> (*const u8, usize) {
            (b as *const T as *const u8, std::mem::size_of::<T>())
        }
        match self {
            AnySession::Http(b) => span(&**b),
            AnySession::Dns(b) => span(&**b),
            AnySession::Mysql(b) => span(&**b),
            AnySession::Redis(b) => span(&**b),
            AnySession::Tls(t) => span(t),
        }
    }

    /// A fresh session for `protocol`. `mid_stream` is true when the connection's start was
    /// not seen (no handshake): sessions that depend on the start (MySQL's greeting and
    /// login) must then start in their command phase.
    pub fn new(
        protocol: Protocol,
        transport: Transport,
        mid_stream: bool,
        limits: &Limits,
    ) -> Self {
        match protocol {
            Protocol::Http => AnySession::Http(Box::new(http::HttpSession::new(limits))),
            Protocol::Dns => AnySession::Dns(Box::new(dns::DnsSession::new(transport, limits))),
            Protocol::Mysql => {
                AnySession::Mysql(Box::new(mysql::MysqlSession::new(mid_stream, limits)))
            }
            Protocol::Redis => AnySession::Redis(Box::new(redis::RedisSession::new(limits))),
            Protocol::Tls => AnySession::Tls(tls::TlsSession::new(limits)),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            AnySession::Http(_) => Protocol::Http,
            AnySession::Dns(_) => Protocol::Dns,
            AnySession::Mysql(_) => Protocol::Mysql,
            AnySession::Redis(_) => Protocol::Redis,
            AnySession::Tls(_) => Protocol::Tls,
        }
    }

    fn inner(&mut self) -> &mut dyn Session {
        match self {
            AnySession::Http(s) => s.as_mut(),
            AnySession::Dns(s) => s.as_mut(),
            AnySession::Mysql(s) => s.as_mut(),
            AnySession::Redis(s) => s.as_mut(),
            AnySession::Tls(s) => s,
        }
    }
}

impl Session for AnySession {
    fn feed(&mut self, dir: Direction, data: &[u8], out: &mut Events) -> usize {
        self.inner().feed(dir, data, out)
    }
    fn gap(&mut self, dir: Direction) {
        self.inner().gap(dir)
    }
    fn close(&mut self, dir: Direction, out: &mut Events) {
        self.inner().close(dir, out)
    }
    fn in_message(&self, dir: Direction) -> bool {
        match self {
            AnySession::Http(s) => s.in_message(dir),
            AnySession::Dns(s) => s.in_message(dir),
            AnySession::Mysql(s) => s.in_message(dir),
            AnySession::Redis(s) => s.in_message(dir),
            AnySession::Tls(s) => s.in_message(dir),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    /// Events of one exchange script, with request texts on or off.
    fn run(
        p: Protocol,
        t: Transport,
        script: &[(Direction, Vec<u8>)],
        request_text: bool,
    ) -> Events {
        let limits = Limits {
            request_text,
            ..Limits::default()
        };
        let mut s = AnySession::new(p, t, true, &limits);
        let mut out = Events::new();
        for (dir, bytes) in script {
            let used = s.feed(*dir, bytes, &mut out);
            assert_eq!(used, bytes.len(), "{p:?}");
        }
        out
    }

    #[test]
    fn without_request_text_only_the_text_is_missing() {
        use Direction::{ToClient as SC, ToServer as CS};
        let mut dns_query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        dns_query.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        type Script = Vec<(Direction, Vec<u8>)>;
        let scripts: [(Protocol, Transport, Script); 4] = [
            (
                Protocol::Http,
                Transport::Tcp,
                vec![
                    (
                        CS,
                        b"GET /a;jsessionid=S/b?token=SECRET&x=1 HTTP/1.1\r\n\r\n".to_vec(),
                    ),
                    (
                        SC,
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    ),
                ],
            ),
            (
                Protocol::Redis,
                Transport::Tcp,
                vec![
                    (CS, b"*2\r\n$4\r\nAUTH\r\n$6\r\nSECRET\r\n".to_vec()),
                    (SC, b"+OK\r\n".to_vec()),
                    (CS, b"set key value\r\n".to_vec()),
                    (SC, b"-WRONGTYPE x\r\n".to_vec()),
                ],
            ),
            (
                Protocol::Mysql,
                Transport::Tcp,
                vec![
                    (
                        CS,
                        mysql_packet(0, b"\x03SELECT * FROM users WHERE pw = PASSWORD('s')"),
                    ),
                    (SC, mysql_packet(1, b"\x00\x00\x00\x02\x00\x00\x00")),
                    (CS, mysql_packet(0, b"\x0e")),
                    (SC, mysql_packet(1, b"\x00\x00\x00\x02\x00\x00\x00")),
                ],
            ),
            (Protocol::Dns, Transport::Udp, vec![(CS, dns_query)]),
        ];
        // Requests each script sends (HTTP 1, Redis AUTH + SET, MySQL query + ping, DNS 1).
        let sent = [1, 2, 2, 1];
        for ((p, t, script), sent) in scripts.iter().zip(sent) {
            let full = run(*p, *t, script, true);
            let mut lean = run(*p, *t, script, false);
            let requests = full
                .iter()
                .filter(|e| matches!(e, Event::Request(r) if !r.text.is_empty()))
                .count();
            assert_eq!(requests, sent, "{p:?}: {full:?}");
            for e in &mut lean {
                if let Event::Request(r) = e {
                    assert!(r.text.is_empty(), "{p:?}: {r:?}");
                    r.text = full
                        .iter()
                        .find_map(|f| match f {
                            Event::Request(fr) if fr.resource == r.resource => Some(fr.text),
                            _ => None,
                        })
                        .unwrap();
                }
            }
            assert_eq!(lean, full, "{p:?}");
        }
    }
}
