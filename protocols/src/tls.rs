//! TLS: recognise the handshake, then consume everything (the rest is encrypted).
//!
//! [`probe`] looks at the first record: a handshake record (content type 22, version
//! 0x0300..=0x0304, length at most 2^14 + 2048) whose first handshake message is a
//! ClientHello (the sender is the client) or a ServerHello (the sender is the server). An
//! SSLv2-compatible ClientHello (RFC 5246 appendix E.2) is recognised too.
//!
//! [`parse_client_hello_sni`] is a pure, bounds-checked helper that reads the server name
//! from a ClientHello record; the session does not use it yet.

use nom::bytes::complete::take;
use nom::multi::length_data;
use nom::number::complete::{be_u16, be_u24, be_u8};
use nom::{IResult, Parser};

use crate::detect::{Probe, Role};
use crate::{Direction, Events, Limits, Session};

/// TLS record content type of handshake messages.
pub const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message types.
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;
pub const HANDSHAKE_SERVER_HELLO: u8 = 2;
/// Largest record payload: 2^14 plaintext plus 2048 of expansion (RFC 5246 6.2.3).
pub const MAX_RECORD_LEN: u16 = 16384 + 2048;
/// Extension type of server_name (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;

/// Is `data` the first record of a TLS (or SSLv3) handshake?
pub fn probe(data: &[u8]) -> Probe {
    match probe_v2_client_hello(data) {
        Probe::No => probe_record(data),
        p => p,
    }
}

fn probe_record(data: &[u8]) -> Probe {
    // type, version major, version minor, length (2), handshake type
    for (i, &b) in data.iter().enumerate().take(6) {
        let ok = match i {
            0 => b == CONTENT_HANDSHAKE,
            1 => b == 3,
            2 => b <= 4,
            3 => {
                let len = u16::from_be_bytes([b, data.get(4).copied().unwrap_or(0)]);
                len <= MAX_RECORD_LEN
            }
            4 => {
                let len = u16::from_be_bytes([data.get(3).copied().unwrap_or(0), b]);
                (4..=MAX_RECORD_LEN).contains(&len)
            }
            _ => b == HANDSHAKE_CLIENT_HELLO || b == HANDSHAKE_SERVER_HELLO,
        };
        if !ok {
            return Probe::No;
        }
    }
    match data.get(5) {
        Some(&HANDSHAKE_CLIENT_HELLO) => Probe::Match(Role::Request),
        Some(_) => Probe::Match(Role::Response),
        None => Probe::NeedMore,
    }
}

/// SSLv2 record header (2 bytes, high bit set) carrying CLIENT-HELLO (1) with version
/// 0x0002 or 0x0300..=0x0303.
fn probe_v2_client_hello(data: &[u8]) -> Probe {
    for (i, &b) in data.iter().enumerate().take(5) {
        let ok = match i {
            0 => b & 0x80 != 0,
            1 => {
                let len = u16::from_be_bytes([data.first().copied().unwrap_or(0) & 0x7f, b]);
                // type, version, three lengths, at least one cipher spec and the challenge.
                (9 + 3 + 16..=MAX_RECORD_LEN).contains(&len)
            }
            2 => b == HANDSHAKE_CLIENT_HELLO,
            3 => b == 0 || b == 3,
            _ => match data.get(3) {
                Some(0) => b == 2,
                _ => b <= 3,
            },
        };
        if !ok {
            return Probe::No;
        }
    }
    if data.len() >= 5 {
        Probe::Match(Role::Request)
    } else {
        Probe::NeedMore
    }
}

type Res<'a, T> = IResult<&'a [u8], T>;

/// Record header: (content type, version, payload length).
pub fn parse_record_header(i: &[u8]) -> Res<'_, (u8, u16, u16)> {
    let (i, content_type) = be_u8(i)?;
    let (i, version) = be_u16(i)?;
    let (i, len) = be_u16(i)?;
    Ok((i, (content_type, version, len)))
}

/// A whole record: (content type, version, payload); the length is capped at
/// [`MAX_RECORD_LEN`].
pub fn parse_record(i: &[u8]) -> Res<'_, (u8, u16, &[u8])> {
    let (i, (content_type, version, len)) = parse_record_header(i)?;
    let (i, payload) = take(usize::from(len.min(MAX_RECORD_LEN))).parse(i)?;
    Ok((i, (content_type, version, payload)))
}

/// Handshake message header: (type, declared length), then the body as far as present.
pub fn parse_handshake(i: &[u8]) -> Res<'_, (u8, &[u8])> {
    let (i, msg_type) = be_u8(i)?;
    let (i, len) = be_u24(i)?;
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(i.len());
    let (i, body) = take(n).parse(i)?;
    Ok((i, (msg_type, body)))
}

/// One extension: (type, data).
pub fn parse_extension(i: &[u8]) -> Res<'_, (u16, &[u8])> {
    let (i, ext_type) = be_u16(i)?;
    let (i, data) = length_data(be_u16).parse(i)?;
    Ok((i, (ext_type, data)))
}

/// One server_name list entry: (name type, name).
fn parse_server_name_entry(i: &[u8]) -> Res<'_, (u8, &[u8])> {
    let (i, name_type) = be_u8(i)?;
    let (i, name) = length_data(be_u16).parse(i)?;
    Ok((i, (name_type, name)))
}

/// The server name (SNI host_name) of a ClientHello record starting at `data`.
///
/// Reads only the first record; a ClientHello continued in a later record (or a record
/// the caller holds only the start of) is read as far as the bytes go. Returns `None` on anything malformed, a missing extension, or a
/// name that is empty, longer than 255 bytes or not printable ASCII. Iterative, no
/// recursion; every length is checked against the bytes present.
pub fn parse_client_hello_sni(data: &[u8]) -> Option<&str> {
    // The record header; a record cut short (the caller holds only its start) is read as
    // far as it goes.
    let (rest, (content_type, _version, len)) = parse_record_header(data).ok()?;
    let payload = rest.get(..usize::from(len.min(MAX_RECORD_LEN)).min(rest.len()))?;
    if content_type != CONTENT_HANDSHAKE {
        return None;
    }
    let (_, (msg_type, body)) = parse_handshake(payload).ok()?;
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let (_, mut rest) = client_hello_extensions(body).ok()?;
    while !rest.is_empty() {
        let (r, (ext_type, ext)) = parse_extension(rest).ok()?;
        rest = r;
        if ext_type == EXT_SERVER_NAME {
            return server_name(ext);
        }
    }
    None
}

/// Skip to the extensions block of a ClientHello body; a truncated block (the hello
/// continues in another record) is returned as far as it goes.
fn client_hello_extensions(i: &[u8]) -> Res<'_, &[u8]> {
    let (i, _version) = be_u16(i)?;
    let (i, _random) = take(32usize).parse(i)?;
    let (i, _session_id) = length_data(be_u8).parse(i)?;
    let (i, _ciphers) = length_data(be_u16).parse(i)?;
    let (i, _compression) = length_data(be_u8).parse(i)?;
    let (i, len) = be_u16(i)?;
    let n = usize::from(len).min(i.len());
    take(n).parse(i)
}

/// The host_name entry of a server_name extension body.
fn server_name(ext: &[u8]) -> Option<&str> {
    let (_, mut rest): (_, &[u8]) = length_data(be_u16::<_, nom::error::Error<&[u8]>>)
        .parse(ext)
        .ok()?;
    while !rest.is_empty() {
        let (r, (name_type, name)) = parse_server_name_entry(rest).ok()?;
        rest = r;
        if name_type == 0 {
            let ok =
                !name.is_empty() && name.len() <= 255 && name.iter().all(|b| b.is_ascii_graphic());
            return if ok {
                core::str::from_utf8(name).ok()
            } else {
                None
            };
        }
    }
    None
}

/// TLS session: encrypted after the hellos, so no requests; everything is consumed.
pub struct TlsSession {}

impl TlsSession {
    pub fn new(limits: &Limits) -> Self {
        let _ = limits;
        TlsSession {}
    }
}

impl Session for TlsSession {
    fn feed(&mut self, _dir: Direction, data: &[u8], _out: &mut Events) -> usize {
        data.len()
    }
    fn gap(&mut self, _dir: Direction) {}
    fn close(&mut self, _dir: Direction, _out: &mut Events) {}
    fn in_message(&self, _dir: Direction) -> bool {
        false
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

    /// A ClientHello for "example.com", assembled by hand:
    /// record 16 03 01 0052; handshake 01 00004e; version 0303; random 00..1f; empty
    /// session id; two cipher suites (1301, c02f); null compression; 0x21 bytes of
    /// extensions: ec_point_formats, server_name, supported_versions.
    const CLIENT_HELLO: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x52, // record
        0x01, 0x00, 0x00, 0x4e, // handshake header
        0x03, 0x03, // client_version
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, //
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
        0x1f, //
        0x00, // session id
        0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f, // cipher suites
        0x01, 0x00, // compression methods
        0x00, 0x21, // extensions length
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
        0x00, 0x00, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x00, 0x0b, b'e', b'x', b'a', b'm', b'p', b'l',
        b'e', b'.', b'c', b'o', b'm', // server_name
        0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04, // supported_versions
    ];

    /// Start of a TLS 1.2 ServerHello record.
    const SERVER_HELLO: &[u8] = &[
        0x16, 0x03, 0x03, 0x00, 0x5a, 0x02, 0x00, 0x00, 0x56, 0x03, 0x03,
    ];

    #[test]
    fn hand_built_hello_is_consistent() {
        assert_eq!(CLIENT_HELLO.len(), 5 + 0x52);
        assert_eq!(CLIENT_HELLO.len(), 9 + 0x4e);
    }

    #[test]
    fn probe_hellos() {
        assert_eq!(probe(CLIENT_HELLO), Probe::Match(Role::Request));
        assert_eq!(probe(SERVER_HELLO), Probe::Match(Role::Response));
        // TLS 1.0 record version with a ClientHello (common for compatibility), SSLv3.
        assert_eq!(
            probe(&[0x16, 0x03, 0x00, 0x00, 0x40, 0x01]),
            Probe::Match(Role::Request)
        );
        // SSLv2-compatible ClientHello: length 0x2e, CLIENT-HELLO, version 3.1.
        assert_eq!(
            probe(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]),
            Probe::Match(Role::Request)
        );
    }

    #[test]
    fn probe_prefixes_need_more() {
        for n in 0..6 {
            assert_eq!(probe(&CLIENT_HELLO[..n]), Probe::NeedMore, "{n}");
            assert_eq!(probe(&SERVER_HELLO[..n]), Probe::NeedMore, "{n}");
        }
    }

    #[test]
    fn probe_rejects_others() {
        // Application data, alert, change cipher spec.
        assert_eq!(probe(&[0x17, 0x03, 0x03, 0x00, 0x20, 0x01]), Probe::No);
        assert_eq!(probe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02]), Probe::No);
        assert_eq!(probe(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]), Probe::No);
        // Bad version, oversized record, empty record, certificate first.
        assert_eq!(probe(&[0x16, 0x03, 0x05, 0x00, 0x40, 0x01]), Probe::No);
        assert_eq!(probe(&[0x16, 0x02, 0x00, 0x00, 0x40, 0x01]), Probe::No);
        assert_eq!(probe(&[0x16, 0x03, 0x01, 0x48, 0x01, 0x01]), Probe::No);
        assert_eq!(probe(&[0x16, 0x03, 0x01, 0x00, 0x00, 0x01]), Probe::No);
        assert_eq!(probe(&[0x16, 0x03, 0x03, 0x00, 0x40, 0x0b]), Probe::No);
        // HTTP, RESP, a MySQL greeting, DNS over TCP.
        assert_eq!(probe(b"GET / HTTP/1.1\r\n"), Probe::No);
        assert_eq!(probe(b"*1\r\n$4\r\nPING\r\n"), Probe::No);
        assert_eq!(probe(b"\x4a\x00\x00\x00\x0a8.0.32\x00"), Probe::No);
        assert_eq!(probe(b"\x00\x1d\x12\x34\x01\x00\x00\x01"), Probe::No);
        // High bit set but not an SSLv2 hello.
        assert_eq!(probe(&[0x80, 0x2e, 0x02, 0x03, 0x01]), Probe::No);
        assert_eq!(probe(&[0x80, 0x2e, 0x01, 0x03, 0x07]), Probe::No);
        assert_eq!(probe(&[0x80, 0x02, 0x01, 0x03, 0x01]), Probe::No);
    }

    #[test]
    fn sni_from_client_hello() {
        assert_eq!(parse_client_hello_sni(CLIENT_HELLO), Some("example.com"));
    }

    #[test]
    fn sni_absent_or_malformed() {
        assert_eq!(parse_client_hello_sni(SERVER_HELLO), None);
        assert_eq!(parse_client_hello_sni(b""), None);
        // Without the server_name extension (replace its type 0x0000 with 0x0017).
        let mut no_sni = CLIENT_HELLO.to_vec();
        no_sni[60] = 0x00;
        no_sni[61] = 0x17;
        assert_eq!(parse_client_hello_sni(&no_sni), None);
        // Name type other than host_name.
        let mut other = CLIENT_HELLO.to_vec();
        other[66] = 0x01;
        assert_eq!(parse_client_hello_sni(&other), None);
        // Inner name length pointing past the extension.
        let mut long = CLIENT_HELLO.to_vec();
        long[68] = 0x40;
        assert_eq!(parse_client_hello_sni(&long), None);
        // A control character in the name.
        let mut ctl = CLIENT_HELLO.to_vec();
        ctl[71] = 0x07;
        assert_eq!(parse_client_hello_sni(&ctl), None);
        // Not a handshake record.
        let mut app = CLIENT_HELLO.to_vec();
        app[0] = 0x17;
        assert_eq!(parse_client_hello_sni(&app), None);
    }

    #[test]
    fn sni_truncated_never_panics() {
        for n in 0..CLIENT_HELLO.len() {
            let got = parse_client_hello_sni(&CLIENT_HELLO[..n]);
            // The name is complete once its last byte is there.
            if n < 80 {
                assert_eq!(got, None, "{n}");
            } else {
                assert_eq!(got, Some("example.com"), "{n}");
            }
        }
        // Every single-byte corruption: no panic.
        for i in 0..CLIENT_HELLO.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = CLIENT_HELLO.to_vec();
                b[i] = v;
                let _ = parse_client_hello_sni(&b);
            }
        }
    }

    #[test]
    fn session_consumes_everything() {
        let mut s = TlsSession::new(&Limits::default());
        let mut ev = Vec::new();
        assert_eq!(
            s.feed(Direction::ToServer, CLIENT_HELLO, &mut ev),
            CLIENT_HELLO.len()
        );
        assert_eq!(s.feed(Direction::ToClient, &[0x17; 3000], &mut ev), 3000);
        s.gap(Direction::ToClient);
        s.close(Direction::ToClient, &mut ev);
        assert!(ev.is_empty());
        assert!(!s.in_message(Direction::ToServer));
    }
}
