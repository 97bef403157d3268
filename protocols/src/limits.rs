//! Hard bounds every parser obeys. The caller's single limits table fills this in.

/// Parser bounds. A hit yields `Event::Anomaly(Anomaly::LimitExceeded)` and a resync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most unconsumed bytes a session may need to make progress (an HTTP head, a RESP line,
    /// a DNS-over-TCP message, a MySQL packet header and the fields it needs).
    pub max_buffered: usize,
    /// Most header lines in one HTTP head.
    pub max_http_headers: usize,
    /// Longest DNS name (RFC 1035: 255) and most labels / compression jumps followed.
    pub max_dns_name: usize,
    pub max_dns_pointers: usize,
    /// Deepest RESP aggregate nesting and most elements in one aggregate.
    pub max_resp_depth: usize,
    pub max_resp_elements: u64,
    /// Largest MySQL logical message (sum of 16 MiB continuation packets) followed.
    pub max_mysql_message: u64,
    /// Most requests a session tracks while waiting for responses (HTTP methods for HEAD,
    /// MySQL commands, Redis SUBSCRIBE counts).
    pub max_pending: usize,
    /// Fill [`crate::Request::text`] (the caller writes per-exchange records). When false
    /// the text stays empty and costs nothing; `resource` is always filled.
    pub request_text: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered: 64 * 1024,
            max_http_headers: 256,
            max_dns_name: 255,
            max_dns_pointers: 32,
            max_resp_depth: 64,
            max_resp_elements: 1 << 24,
            max_mysql_message: 1 << 30,
            max_pending: 1024,
            request_text: true,
        }
    }
}
