//! `--records FILE`: one JSON line per exchange. Each worker serialises into a reusable
//! buffer and hands full buffers to one writer thread, so the hot path allocates nothing
//! once buffers have grown. Secrets never reach here: parsers strip them from the request
//! text (see `protocols/`).

use std::fmt;
use std::net::IpAddr;

use crossbeam_channel::{Receiver, Sender};
use serde::ser::{SerializeMap, Serializer};

use crate::flow::Endpoint;
use crate::report::time::Rfc3339;

const FLUSH_AT: usize = 256 * 1024;

/// One exchange, as written.
pub struct Exchange<'a> {
    pub ts_ns: i64,
    pub client: IpAddr,
    pub server: Endpoint,
    pub protocol: &'static str,
    pub request: &'a str,
    pub request_bytes: u64,
    pub response: Option<&'a str>,
    pub latency_us: Option<u64>,
    pub error: bool,
    pub response_bytes: Option<u64>,
}

/// Displays through serde's `collect_str`, so nothing is allocated.
struct Shown<T: fmt::Display>(T);

impl<T: fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct ServerId(Endpoint);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.ip {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.0.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.0.port),
        }
    }
}

impl serde::Serialize for Exchange<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("ts", &Shown(Rfc3339(self.ts_ns)))?;
        m.serialize_entry("client", &Shown(self.client))?;
        m.serialize_entry("server", &Shown(ServerId(self.server)))?;
        m.serialize_entry("protocol", self.protocol)?;
        m.serialize_entry("request", self.request)?;
        m.serialize_entry("response", &self.response)?;
        m.serialize_entry("latency_us", &self.latency_us)?;
        m.serialize_entry("error", &self.error)?;
        m.serialize_entry("request_bytes", &self.request_bytes)?;
        m.serialize_entry("response_bytes", &self.response_bytes)?;
        m.end()
    }
}

/// A worker's end of the records writer.
pub struct RecordSink {
    buf: Vec<u8>,
    tx: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

impl RecordSink {
    pub fn new(tx: Sender<Vec<u8>>, spare: Receiver<Vec<u8>>) -> Self {
        RecordSink {
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            tx,
            spare,
        }
    }

    pub fn write(&mut self, e: &Exchange<'_>) {
        if serde_json::to_writer(&mut self.buf, e).is_ok() {
            self.buf.push(b'\n');
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FLUSH_AT + 4096));
        let full = std::mem::replace(&mut self.buf, next);
        let _ = self.tx.send(full);
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        self.flush();
    }
}
