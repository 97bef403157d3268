//! Pure parsers for MySQL wire structures (nom): packet and compressed-frame headers
//! (streaming: they report `Incomplete`), and the fields wiremap reads from the first bytes
//! of a payload (complete parsers over the captured head; missing optional fields default).

use nom::bytes::complete::{take, take_till};
use nom::number::complete as c;
use nom::number::streaming as s;
use nom::IResult;

type E<'a> = nom::error::Error<&'a [u8]>;

/// Payload length that says "the logical message continues in the next packet".
pub const FULL_PACKET: u32 = 0xFF_FFFF;

/// The 4-byte header of every packet: 3-byte little-endian payload length, sequence id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    pub len: u32,
    pub seq: u8,
}

pub fn parse_packet_header(i: &[u8]) -> IResult<&[u8], PacketHeader> {
    let (i, len) = s::le_u24::<_, E>(i)?;
    let (i, seq) = s::u8::<_, E>(i)?;
    Ok((i, PacketHeader { len, seq }))
}

/// The 7-byte header of a compressed-protocol frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of (compressed) payload after the header.
    pub compressed_len: u32,
    pub seq: u8,
    /// Length once inflated; 0 means the payload is sent uncompressed.
    pub uncompressed_len: u32,
}

pub fn parse_frame_header(i: &[u8]) -> IResult<&[u8], FrameHeader> {
    let (i, compressed_len) = s::le_u24::<_, E>(i)?;
    let (i, seq) = s::u8::<_, E>(i)?;
    let (i, uncompressed_len) = s::le_u24::<_, E>(i)?;
    Ok((
        i,
        FrameHeader {
            compressed_len,
            seq,
            uncompressed_len,
        },
    ))
}

/// A length-encoded integer (complete input). 0xFB (NULL) and 0xFF are not integers.
pub fn lenenc_int(i: &[u8]) -> IResult<&[u8], u64> {
    let (i, first) = c::u8::<_, E>(i)?;
    match first {
        0..=0xFA => Ok((i, u64::from(first))),
        0xFC => c::le_u16::<_, E>(i).map(|(i, v)| (i, u64::from(v))),
        0xFD => c::le_u24::<_, E>(i).map(|(i, v)| (i, u64::from(v))),
        0xFE => c::le_u64::<_, E>(i),
        _ => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Verify,
        ))),
    }
}

/// What wiremap keeps of a protocol-10 server greeting: the server's capability flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub capabilities: u32,
}

/// Protocol 10 greeting: 0x0a, version NUL-terminated, connection id, 8 bytes of auth
/// data, filler, capability flags (low), charset, status, capability flags (high), ...
pub fn parse_greeting(i: &[u8]) -> IResult<&[u8], Greeting> {
    let (i, _) = nom::bytes::complete::tag::<_, _, E>(&[0x0a_u8][..])(i)?;
    let (i, _version) = take_till::<_, _, E>(|b| b == 0)(i)?;
    let (i, _) = take::<_, _, E>(1usize)(i)?;
    let (i, _conn_id) = c::le_u32::<_, E>(i)?;
    let (i, _auth1) = take::<_, _, E>(9usize)(i)?;
    let (i, low) = c::le_u16::<_, E>(i)?;
    // Pre-4.1 servers stop here; the rest is optional.
    let high = optional_high_caps(i).unwrap_or(0);
    Ok((
        i,
        Greeting {
            capabilities: u32::from(low) | (u32::from(high) << 16),
        },
    ))
}

/// charset u8, status u16, capability flags (high) u16; None if cut.
fn optional_high_caps(i: &[u8]) -> Option<u16> {
    let (i, _charset) = c::u8::<_, E>(i).ok()?;
    let (i, _status) = c::le_u16::<_, E>(i).ok()?;
    let (_, high) = c::le_u16::<_, E>(i).ok()?;
    Some(high)
}

/// Capability flags at the start of a HandshakeResponse / SSLRequest: u32 with
/// CLIENT_PROTOCOL_41, else the old u16.
pub fn parse_client_capabilities(i: &[u8]) -> IResult<&[u8], u32> {
    let (_, low) = c::le_u16::<_, E>(i)?;
    if low & 0x0200 != 0 {
        c::le_u32::<_, E>(i)
    } else {
        let (i, _) = take::<_, _, E>(2usize)(i)?;
        Ok((i, u32::from(low)))
    }
}

/// OK packet (header 0x00, or 0xFE when it replaces EOF): affected rows, last insert id,
/// status flags (0 when cut or absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub status: u16,
}

pub fn parse_ok(i: &[u8]) -> IResult<&[u8], OkPacket> {
    let (i, _header) = c::u8::<_, E>(i)?;
    let (i, affected_rows) = lenenc_int(i)?;
    let (i, _insert_id) = lenenc_int(i)?;
    let (i, status) = c::le_u16::<_, E>(i).unwrap_or((i, 0));
    Ok((
        i,
        OkPacket {
            affected_rows,
            status,
        },
    ))
}

/// EOF packet: 0xFE, warnings u16, status u16 (protocol 4.1); status 0 when absent.
pub fn parse_eof_status(i: &[u8]) -> IResult<&[u8], u16> {
    let (i, _header) = c::u8::<_, E>(i)?;
    let (i, _warnings) = c::le_u16::<_, E>(i).unwrap_or((i, 0));
    let (i, status) = c::le_u16::<_, E>(i).unwrap_or((i, 0));
    Ok((i, status))
}

/// ERR packet: 0xFF, error number u16 (then '#' + SQL state and the message, not kept).
pub fn parse_err_code(i: &[u8]) -> IResult<&[u8], u16> {
    let (i, _header) = c::u8::<_, E>(i)?;
    c::le_u16::<_, E>(i)
}

/// COM_STMT_PREPARE's OK: 0x00, statement id u32, columns u16, params u16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

pub fn parse_prepare_ok(i: &[u8]) -> IResult<&[u8], PrepareOk> {
    let (i, _header) = c::u8::<_, E>(i)?;
    let (i, statement_id) = c::le_u32::<_, E>(i)?;
    let (i, columns) = c::le_u16::<_, E>(i)?;
    let (i, params) = c::le_u16::<_, E>(i)?;
    Ok((
        i,
        PrepareOk {
            statement_id,
            columns,
            params,
        },
    ))
}

/// A little-endian u32 at the start of `i` (statement ids in COM_STMT_* commands).
pub fn parse_u32(i: &[u8]) -> IResult<&[u8], u32> {
    c::le_u32::<_, E>(i)
}

/// Most query attributes skipped in front of a COM_QUERY's SQL.
const MAX_QUERY_ATTRIBUTES: usize = 64;

/// The SQL of a COM_QUERY body (after the command byte) sent with CLIENT_QUERY_ATTRIBUTES:
/// parameter count, parameter set count (1), then for each parameter a NULL bitmap bit, a
/// type and a name, then the binary values. None if cut or not in that form.
pub fn skip_query_attributes(body: &[u8]) -> Option<&[u8]> {
    let (rest, count) = lenenc_int(body).ok()?;
    let (rest, sets) = lenenc_int(rest).ok()?;
    if sets != 1 {
        return None;
    }
    let n = usize::try_from(count).ok()?;
    if n == 0 {
        return Some(rest);
    }
    if n > MAX_QUERY_ATTRIBUTES {
        return None;
    }
    let bitmap_len = n.div_ceil(8);
    let bitmap = rest.get(..bitmap_len)?;
    let (flag, mut rest) = rest.get(bitmap_len..)?.split_first()?;
    if *flag != 1 {
        return None;
    }
    let mut types = [0u8; MAX_QUERY_ATTRIBUTES];
    for t in types.iter_mut().take(n) {
        *t = *rest.first()?;
        let (r, name_len) = lenenc_int(rest.get(2..)?).ok()?;
        rest = r.get(usize::try_from(name_len).ok()?..)?;
    }
    for (i, t) in types.iter().take(n).enumerate() {
        let null = bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null {
            continue;
        }
        let size = match t {
            0x06 => 0,
            0x01 => 1,
            0x02 | 0x0d => 2,
            0x03 | 0x04 | 0x09 => 4,
            0x05 | 0x08 => 8,
            0x07 | 0x0a | 0x0b | 0x0c | 0x11 | 0x12 | 0x13 => {
                usize::from(*rest.first()?).checked_add(1)?
            }
            _ => {
                let before = rest.len();
                let (r, len) = lenenc_int(rest).ok()?;
                before
                    .saturating_sub(r.len())
                    .checked_add(usize::try_from(len).ok()?)?
            }
        };
        rest = rest.get(size..)?;
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            parse_packet_header(&[0x21, 0, 0, 3, 9]).ok(),
            Some((&[9u8][..], PacketHeader { len: 0x21, seq: 3 }))
        );
        assert!(matches!(
            parse_packet_header(&[1, 0, 0]),
            Err(nom::Err::Incomplete(_))
        ));
        let h = parse_frame_header(&[0x2d, 0, 0, 0, 0, 0, 0])
            .ok()
            .map(|x| x.1);
        assert_eq!(
            h,
            Some(FrameHeader {
                compressed_len: 45,
                seq: 0,
                uncompressed_len: 0
            })
        );
    }

    #[test]
    fn query_attributes() {
        assert_eq!(
            skip_query_attributes(b"\x00\x01select 1"),
            Some(&b"select 1"[..])
        );
        // Two attributes: a string "v" named "a" and a NULL named "bb".
        let body = b"\x02\x01\x02\x01\xfe\x00\x01a\x06\x00\x02bb\x01vSELECT 2";
        assert_eq!(skip_query_attributes(body), Some(&b"SELECT 2"[..]));
        assert_eq!(skip_query_attributes(b"\x02\x01\x00"), None);
    }

    #[test]
    fn lenenc() {
        assert_eq!(lenenc_int(&[0xFA]).ok().map(|x| x.1), Some(250));
        assert_eq!(
            lenenc_int(&[0xFC, 0x01, 0x02]).ok().map(|x| x.1),
            Some(0x0201)
        );
        assert_eq!(
            lenenc_int(&[0xFD, 1, 2, 3]).ok().map(|x| x.1),
            Some(0x030201)
        );
        assert!(lenenc_int(&[0xFB]).is_err());
        assert!(lenenc_int(&[0xFC, 1]).is_err());
    }

    #[test]
    fn ok_err_eof_prepare() {
        let ok = parse_ok(&[0, 1, 0, 0x0a, 0, 0, 0]).ok().map(|x| x.1);
        assert_eq!(
            ok,
            Some(OkPacket {
                affected_rows: 1,
                status: 0x000a
            })
        );
        assert_eq!(
            parse_eof_status(&[0xFE, 0, 0, 0x08, 0]).ok().map(|x| x.1),
            Some(8)
        );
        assert_eq!(
            parse_err_code(&[0xFF, 0x7a, 0x04]).ok().map(|x| x.1),
            Some(1146)
        );
        let p = parse_prepare_ok(&[0, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0])
            .ok()
            .map(|x| x.1);
        assert_eq!(
            p,
            Some(PrepareOk {
                statement_id: 7,
                columns: 2,
                params: 1
            })
        );
    }
}
