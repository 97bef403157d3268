//! What parsers report: requests, responses and anomalies. All inline, no allocation.

use crate::text::Text;

/// A resource for `top_resources` (HTTP method and path without query, DNS name and type,
/// SQL verb and first table, Redis command).
pub type Resource = Text<96>;
/// The request as written to `--records` (secrets already removed by the parser).
pub type RequestText = Text<256>;
/// A response code as counted in `codes` ("200", "NXDOMAIN", "ERR 1146", "WRONGTYPE").
pub type Code = Text<32>;

/// One complete request message.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Aggregation key for `top_resources`.
    pub resource: Resource,
    /// Sanitised request text for records: never contains credentials, cookies, query-string
    /// values, `IDENTIFIED BY`/`PASSWORD(...)` literals or Redis AUTH arguments.
    pub text: RequestText,
    /// Pairing key for protocols that pair by id (DNS transaction id); `None` pairs in order.
    pub id: Option<u32>,
    /// Size of the message on the wire (head and body), in bytes.
    pub bytes: u64,
}

/// One complete response message, answering the oldest pending request (or the one with
/// the same `id`).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub code: Code,
    /// The contract's error rule: HTTP >= 400, DNS rcode != 0, MySQL ERR to a command,
    /// Redis error reply.
    pub error: bool,
    /// For records: the response as a short text ("200", "NXDOMAIN", "OK", "ERR", "bulk").
    pub kind: Code,
    pub id: Option<u32>,
    pub bytes: u64,
}

/// Something odd in the stream, counted by the caller (Suricata-style anomaly flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anomaly {
    /// A length, count or nesting over a [`crate::Limits`] bound; the stream resynchronises.
    LimitExceeded,
    /// Bytes that do not parse as the protocol; the stream resynchronises.
    Malformed,
    /// A response with no request pending (parser-level, e.g. unsolicited).
    UnexpectedMessage,
}

impl Anomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::LimitExceeded => "limit_exceeded",
            Anomaly::Malformed => "malformed",
            Anomaly::UnexpectedMessage => "unexpected_message",
        }
    }
}

// Events are inline on purpose: a parser never allocates, so the request text lives in the
// event itself and the size difference between variants is the price of that.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Request(Request),
    Response(Response),
    /// A login that failed (MySQL): counted in `codes` as "LOGIN ERR <code>", not an error
    /// and not a request.
    LoginFailed {
        code: Code,
    },
    /// The connection switched to encryption (MySQL SSL request); no more events follow.
    Encrypted,
    Anomaly(Anomaly),
}

/// The caller's reusable event buffer (cleared by the caller, never shrunk).
pub type Events = Vec<Event>;
