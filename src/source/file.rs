//! pcap and pcapng files. pcapng is read with `pcap-parser` (pure Rust, streaming, exposes
//! pcapng interfaces and their timestamp resolutions, which libpcap's reader hides); classic
//! pcap's fixed records are read in place, in chunks the packets point into (`legacy`).
//!
//! A capture is read once, front to back, never sought: from a file, a pipe (`<(zcat …)`,
//! a FIFO) or standard input (`-`), and gzip-compressed ones as they are (`flate2`, pure
//! Rust), as tshark reads them.

use std::fs::File;
use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

use super::legacy::{LegacyReader, Next, Span};
use super::{OwnedPacket, Vantages};

/// Why a file could not be read. Displayed as one line naming the file.
#[derive(Debug)]
pub enum InputError {
    Open(String, std::io::Error),
    Empty(String),
    NotCapture(String),
    /// Compressed in a format read only through a pipe: (path, format, its decompressor).
    Compressed(String, &'static str, &'static str),
    /// A fault after some packets were read: what came before is still reported.
    Corrupt {
        path: String,
        offset: u64,
        what: String,
    },
    Read(String, String),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = shown_path; // standard input by name, not as "-"
        match self {
            InputError::Open(p, e) => write!(f, "{}: cannot open: {e}", shown(p)),
            InputError::Empty(p) if p == STDIN => {
                write!(f, "standard input is empty: no pcap or pcapng capture")
            }
            InputError::Empty(p) => write!(f, "{p}: empty file, not a pcap or pcapng capture"),
            InputError::NotCapture(p) => write!(f, "{}: not a pcap or pcapng capture", shown(p)),
            InputError::Compressed(p, format, tool) => write!(
                f,
                "{}: {format}-compressed: read it through a pipe, e.g. wiremap analyze <({tool} FILE)",
                shown(p)
            ),
            InputError::Corrupt { path, offset, what } => {
                write!(
                    f,
                    "{}: corrupt capture at byte {offset}: {what}",
                    shown(path)
                )
            }
            InputError::Read(p, e) => write!(f, "{}: read error: {e}", shown(p)),
        }
    }
}

/// What `next_packet` found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Packet,
    End,
    /// The file ends in the middle of a record (a capture that was killed).
    Cut {
        offset: u64,
    },
}

struct Interface {
    linktype: u32,
    /// Units per second of this interface's timestamps.
    units_per_sec: u64,
    offset_sec: i64,
    vantage: u16,
}

enum Format {
    Pcap {
        linktype: u32,
        nanos: bool,
        vantage: u16,
        big_endian: bool,
    },
    PcapNg {
        section: u32,
        interfaces: Vec<Interface>,
        big_endian: bool,
    },
    Unknown,
}

/// How records are read.
enum Records {
    /// pcapng (blocks of many kinds), through `pcap-parser`'s streaming reader.
    Blocks(Box<dyn PcapReaderIterator + Send>),
    /// Classic pcap, with its file header (taken when the first record is asked for, where
    /// the vantage point is assigned).
    Legacy(LegacyReader, Option<pcap_parser::PcapHeader>),
}

/// One open capture file, yielding packets in file order.
pub struct CaptureFile {
    pub path: String,
    records: Records,
    at: Position,
    /// Some for a gzip-compressed capture: set once its stream was found cut short.
    gzip: Option<Arc<AtomicBool>>,
}

/// What reading has learnt so far.
struct Position {
    format: Format,
    /// Bytes consumed.
    offset: u64,
    max_record: usize,
    last_ts_ns: i64,
}

impl Position {
    fn corrupt(&self, path: &str, what: &str) -> InputError {
        InputError::Corrupt {
            path: path.to_string(),
            offset: self.offset,
            what: what.to_string(),
        }
    }
}

/// Where a capture's bytes come from, already decompressed.
pub type Input = Box<dyn Read + Send>;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// A capture's path as messages name it ("standard input" for [`STDIN`]).
pub fn shown_path(path: &str) -> &str {
    if path == STDIN {
        "standard input"
    } else {
        path
    }
}

/// The first (up to) 4 bytes of `input`, how many there were, and `input` itself.
fn peek_magic(mut input: Input, path: &str) -> Result<([u8; 4], usize, Input), InputError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(magic.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(InputError::Read(path.to_string(), e.to_string())),
        }
    }
    Ok((magic, got, input))
}

/// `input` with `head`, the bytes already taken from it, put back in front.
fn unread(head: Vec<u8>, input: Input) -> Input {
    Box::new(Cursor::new(head).chain(input))
}

/// The two bytes every gzip member starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Other compressions captures come in, named so that the message says what to do:
/// (leading bytes, format, decompressor to stdout).
const OTHER_COMPRESSIONS: [(&[u8], &str, &str); 4] = [
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstdcat"),
    (&[0xfd, b'7', b'z', b'X'], "xz", "xzcat"),
    (b"BZh", "bzip2", "bzcat"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4", "lz4cat"),
];

/// A gzip stream, read as the capture inside it. A stream cut short ends the capture there,
/// as a capture cut mid-record does, and is remembered in `cut` (it is reported even when
/// the cut falls between two records); other errors say they are the compression's.
struct Gunzip {
    inner: flate2::read::MultiGzDecoder<Input>,
    cut: Arc<AtomicBool>,
}

impl Read for Gunzip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.cut.store(true, Ordering::Relaxed);
                Ok(0)
            }
            Err(e) => Err(std::io::Error::new(e.kind(), format!("gzip: {e}"))),
            read => read,
        }
    }
}

const INITIAL_BUFFER: usize = 1 << 20;
/// The first buffer of a classic pcap file (see `open`).
const PCAP_READ_BUFFER: usize = 128 << 10;

impl CaptureFile {
    /// Open a capture: a file, a pipe, or standard input for [`STDIN`]; gzip-compressed or
    /// not. Only its first bytes are read here.
    pub fn open(path: &str, max_record: usize) -> Result<CaptureFile, InputError> {
        let raw: Input = if path == STDIN {
            Box::new(std::io::stdin())
        } else {
            let file = File::open(path).map_err(|e| InputError::Open(path.to_string(), e))?;
            let meta = file
                .metadata()
                .map_err(|e| InputError::Open(path.to_string(), e))?;
            if meta.is_dir() {
                return Err(InputError::NotCapture(path.to_string()));
            }
            Box::new(file)
        };
        // Emptiness and the format come from the first bytes, not from the file's size: a
        // pipe has none. Check the magic ourselves: pcap-parser's own error for a short or
        // foreign file is less precise than the one line a user should see.
        let (mut magic, mut got, mut input) = peek_magic(raw, path)?;
        if got == 0 {
            return Err(InputError::Empty(path.to_string()));
        }
        let mut gzip = None;
        if magic.starts_with(&GZIP_MAGIC) {
            // Members one after another (`cat a.gz b.gz`) decompress as one stream, as gzip
            // itself does.
            let cut = Arc::new(AtomicBool::new(false));
            let gunzip = Gunzip {
                inner: flate2::read::MultiGzDecoder::new(unread(
                    magic.get(..got).unwrap_or_default().to_vec(),
                    input,
                )),
                cut: Arc::clone(&cut),
            };
            (magic, got, input) = peek_magic(Box::new(gunzip), path)?;
            if got == 0 && cut.load(Ordering::Relaxed) {
                return Err(InputError::Read(
                    path.to_string(),
                    "gzip: the stream ends before any capture bytes".into(),
                ));
            }
            if got == 0 {
                return Err(InputError::Empty(path.to_string()));
            }
            gzip = Some(cut);
        }
        let known = matches!(
            u32::from_le_bytes(magic),
            0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1 | 0x0a0d0d0a
        );
        if got < 4 || !known {
            if let Some((_, format, tool)) = OTHER_COMPRESSIONS
                .iter()
                .find(|(lead, _, _)| magic.get(..got).is_some_and(|m| m.starts_with(lead)))
            {
                return Err(InputError::Compressed(path.to_string(), format, tool));
            }
            return Err(InputError::NotCapture(path.to_string()));
        }
        let mut file = unread(magic.to_vec(), input);
        let max_record = max_record.max(INITIAL_BUFFER);
        if u32::from_le_bytes(magic) != 0x0a0d0d0a {
            let cut = || InputError::Corrupt {
                path: path.to_string(),
                offset: 0,
                what: "the file header is cut short".into(),
            };
            let mut head = [0u8; 24];
            file.read_exact(&mut head).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => cut(),
                _ => InputError::Read(path.to_string(), e.to_string()),
            })?;
            let header = match pcap_parser::parse_pcap_header(&head) {
                Ok((_, h)) => h,
                Err(_) => return Err(InputError::NotCapture(path.to_string())),
            };
            let big_endian = header.is_bigendian();
            return Ok(CaptureFile {
                path: path.to_string(),
                records: Records::Legacy(
                    LegacyReader::new(file, big_endian, max_record),
                    Some(header),
                ),
                at: Position {
                    format: Format::Unknown,
                    offset: head.len() as u64,
                    max_record,
                    last_ts_ns: 0,
                },
                gzip,
            });
        }
        // Classic pcap reads in small steps: what the kernel just copied in is parsed while it
        // is still in the cache (measured: a 1 MiB buffer had left L2 before its end was
        // parsed). Records that do not fit grow the buffer to 2 * INITIAL_BUFFER at once, the
        // size the growth rule below reaches from 1 MiB too, so every outcome is unchanged.
        // pcapng keeps INITIAL_BUFFER: its first read must hold the section header block.
        let capacity = if u32::from_le_bytes(magic) == 0x0a0d0d0a {
            INITIAL_BUFFER
        } else {
            PCAP_READ_BUFFER
        };
        // pcap-parser recognises the section header from its first read alone: hand it
        // as much as a file's first read would give, even from a pipe that delivers less.
        let mut head = Vec::with_capacity(capacity);
        (&mut file)
            .take(capacity as u64)
            .read_to_end(&mut head)
            .map_err(|e| InputError::Read(path.to_string(), e.to_string()))?;
        let file = unread(head, file);
        let reader = pcap_parser::create_reader(capacity, file).map_err(|e| match e {
            PcapError::HeaderNotRecognized => InputError::NotCapture(path.to_string()),
            PcapError::Incomplete(_) | PcapError::UnexpectedEof | PcapError::Eof => {
                InputError::Corrupt {
                    path: path.to_string(),
                    offset: 0,
                    what: "the file header is cut short".into(),
                }
            }
            other => InputError::Corrupt {
                path: path.to_string(),
                offset: 0,
                what: format!("{other}"),
            },
        })?;
        Ok(CaptureFile {
            path: path.to_string(),
            records: Records::Blocks(reader),
            at: Position {
                format: Format::Unknown,
                offset: 0,
                max_record,
                last_ts_ns: 0,
            },
            gzip,
        })
    }

    /// Read the next packet into `out` (its buffer is reused). Non-packet blocks are
    /// handled on the way (interfaces registered as vantage points). For classic pcap the
    /// bytes stay in the file's chunk: `span` says where (see [`CaptureFile::bytes`]), and
    /// [`CaptureFile::release`] must be called when they are no longer needed.
    pub fn next_packet(
        &mut self,
        vantages: &mut Vantages,
        out: &mut OwnedPacket,
        span: &mut Option<Span>,
    ) -> Result<ReadOutcome, InputError> {
        *span = None;
        let outcome = match &mut self.records {
            Records::Blocks(r) => next_block(&self.path, &mut self.at, r.as_mut(), vantages, out),
            Records::Legacy(r, header) => {
                next_legacy(&self.path, &mut self.at, r, header, vantages, out, span)
            }
        };
        match outcome {
            // The last record was whole, but the compressed stream around it was not.
            Ok(ReadOutcome::End) if self.gzip_cut() => Ok(ReadOutcome::Cut {
                offset: self.at.offset,
            }),
            other => other,
        }
    }

    /// The capture is gzip-compressed (its offsets count the bytes inside).
    pub fn compressed(&self) -> bool {
        self.gzip.is_some()
    }

    /// The capture is gzip-compressed and its stream ended early (a cut is then at a byte
    /// offset of the capture inside it).
    pub fn gzip_cut(&self) -> bool {
        self.gzip
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// A packet's bytes, kept in the file's chunk (a `span` from `next_packet`).
    pub fn bytes(&self, span: Span) -> &[u8] {
        match &self.records {
            Records::Legacy(r, _) => r.bytes(span),
            Records::Blocks(_) => &[],
        }
    }

    /// The caller no longer needs the bytes of `span`.
    pub fn release(&mut self, span: Span) {
        if let Records::Legacy(r, _) = &mut self.records {
            r.release(span);
        }
    }

    /// Bytes consumed so far (for progress).
    pub fn offset(&self) -> u64 {
        self.at.offset
    }
}

/// The next packet of a classic pcap file (see [`CaptureFile::next_packet`]).
fn next_legacy(
    path: &str,
    at: &mut Position,
    r: &mut LegacyReader,
    header: &mut Option<pcap_parser::PcapHeader>,
    vantages: &mut Vantages,
    out: &mut OwnedPacket,
    span: &mut Option<Span>,
) -> Result<ReadOutcome, InputError> {
    if let Some(h) = header.take() {
        // The upper bits of the link-type field carry FCS information.
        let linktype = (h.network.0 as u32) & 0xFFFF;
        at.format = Format::Pcap {
            linktype,
            nanos: h.is_nanosecond_precision(),
            vantage: vantages.assign(path, 0, None, "pcap", linktype),
            big_endian: h.is_bigendian(),
        };
    }
    let Format::Pcap {
        linktype,
        nanos,
        vantage,
        ..
    } = at.format
    else {
        return Err(at.corrupt(path, "packet record before the file header"));
    };
    match r.next() {
        Ok(Next::Record(h, place)) => {
            let frac = if nanos {
                i64::from(h.ts_frac)
            } else {
                i64::from(h.ts_frac) * 1000
            };
            out.ts_ns = i64::from(h.ts_sec) * 1_000_000_000 + frac;
            out.linktype = linktype;
            out.vantage = vantage;
            out.wire_len = h.origlen.max(h.caplen);
            out.data.clear();
            at.last_ts_ns = out.ts_ns;
            at.offset += 16 + u64::from(h.caplen);
            *span = Some(place);
            Ok(ReadOutcome::Packet)
        }
        Ok(Next::End) => Ok(ReadOutcome::End),
        Ok(Next::Cut) => Ok(ReadOutcome::Cut { offset: at.offset }),
        Ok(Next::TooLarge) => {
            Err(at.corrupt(path, "a record claims more bytes than the record limit"))
        }
        Err(e) => Err(InputError::Read(path.to_string(), e.to_string())),
    }
}

/// The next packet of a pcapng file, through `pcap-parser` (see
/// [`CaptureFile::next_packet`]).
fn next_block(
    path: &str,
    at: &mut Position,
    reader: &mut (dyn PcapReaderIterator + Send),
    vantages: &mut Vantages,
    out: &mut OwnedPacket,
) -> Result<ReadOutcome, InputError> {
    loop {
        // Every pcapng block is at least 12 bytes (type and two lengths); pcap-parser
        // 0.17 underflows on a shorter process-information block (found by fuzzing).
        if matches!(at.format, Format::PcapNg { .. })
            && declared_record_len(&at.format, reader.data()).is_some_and(|n| n < 12)
        {
            return Err(at.corrupt(path, "a block shorter than its 12-byte frame"));
        }
        let (consumed, done) = match reader.next() {
            Ok((consumed, block)) => {
                let done = handle_block(
                    path,
                    &mut at.format,
                    vantages,
                    block,
                    out,
                    &mut at.last_ts_ns,
                );
                (consumed, done)
            }
            Err(PcapError::Eof) => return Ok(ReadOutcome::End),
            Err(PcapError::Incomplete(_)) => {
                refill(path, reader)?;
                continue;
            }
            Err(PcapError::BufferTooSmall) => {
                let cap = reader.data().len().max(INITIAL_BUFFER);
                let want = cap.saturating_mul(2);
                if want > at.max_record.saturating_mul(2) || !reader.grow(want) {
                    return Err(at.corrupt(path, "a record larger than the record limit"));
                }
                refill(path, reader)?;
                continue;
            }
            Err(PcapError::UnexpectedEof) => {
                // A record that claims more than any sane record is corruption, not a cut.
                if declared_record_len(&at.format, reader.data()).is_some_and(|n| n > at.max_record)
                {
                    return Err(
                        at.corrupt(path, "a record claims more bytes than the record limit")
                    );
                }
                return Ok(ReadOutcome::Cut { offset: at.offset });
            }
            Err(e) => {
                let what = match e {
                    PcapError::NomError(_, kind) => format!("unparsable block ({kind:?})"),
                    other => format!("{other}"),
                };
                return Err(at.corrupt(path, &what));
            }
        };
        // No shift per record: `consume` moves the rest of the buffer down whenever it
        // is past half (a copy of every byte read); `refill` shifts only the cut tail.
        reader.consume_noshift(consumed);
        at.offset += consumed as u64;
        match done {
            Ok(true) => {
                if out.data.len() > at.max_record {
                    return Err(at.corrupt(path, "a record larger than the record limit"));
                }
                return Ok(ReadOutcome::Packet);
            }
            Ok(false) => continue,
            Err(what) => return Err(at.corrupt(path, &what)),
        }
    }
}

/// The length the next (incomplete) record declares, when its header is in `d`.
fn declared_record_len(format: &Format, d: &[u8]) -> Option<usize> {
    let field = |at: usize, be: bool| {
        let b: [u8; 4] = d.get(at..at + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as usize)
    };
    match *format {
        Format::Pcap { big_endian, .. } => field(8, big_endian),
        Format::PcapNg { big_endian, .. } => field(4, big_endian),
        Format::Unknown => None,
    }
}

fn refill(path: &str, reader: &mut (dyn PcapReaderIterator + Send)) -> Result<(), InputError> {
    reader
        .refill()
        .map_err(|e| InputError::Read(path.to_string(), format!("{e}")))
}

/// Handle one pcapng block: Ok(true) when `out` now holds a packet.
fn handle_block(
    path: &str,
    format: &mut Format,
    vantages: &mut Vantages,
    block: PcapBlockOwned<'_>,
    out: &mut OwnedPacket,
    last_ts_ns: &mut i64,
) -> Result<bool, String> {
    match block {
        PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
            let section = match format {
                Format::PcapNg { section, .. } => *section + 1,
                _ => 0,
            };
            *format = Format::PcapNg {
                section,
                interfaces: Vec::new(),
                big_endian: shb.big_endian(),
            };
            Ok(false)
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            let Format::PcapNg {
                section,
                interfaces,
                ..
            } = format
            else {
                return Err("interface block before a section header".into());
            };
            let linktype = (idb.linktype.0 as u32) & 0xFFFF;
            let name = idb.if_name().and_then(|r| r.ok()).map(str::to_string);
            let index = interfaces.len() as u32;
            let vantage = vantages.assign(path, *section, Some((index, name)), "pcapng", linktype);
            interfaces.push(Interface {
                linktype,
                units_per_sec: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                offset_sec: idb.ts_offset(),
                vantage,
            });
            Ok(false)
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let Format::PcapNg { interfaces, .. } = format else {
                return Err("packet block before a section header".into());
            };
            let Some(iface) = interfaces.get(epb.if_id as usize) else {
                return Err(format!("packet on undeclared interface {}", epb.if_id));
            };
            let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            out.ts_ns = units_to_ns(units, iface.units_per_sec, iface.offset_sec);
            out.linktype = iface.linktype;
            out.vantage = iface.vantage;
            let caplen = (epb.caplen as usize).min(epb.data.len());
            out.wire_len = epb.origlen.max(caplen as u32);
            out.data.clear();
            out.data
                .extend_from_slice(epb.data.get(..caplen).unwrap_or_default());
            *last_ts_ns = out.ts_ns;
            Ok(true)
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
            let Format::PcapNg { interfaces, .. } = format else {
                return Err("packet block before a section header".into());
            };
            let Some(iface) = interfaces.first() else {
                return Err("simple packet block without an interface".into());
            };
            // A simple packet block has no timestamp: it takes the previous packet's.
            out.ts_ns = *last_ts_ns;
            out.linktype = iface.linktype;
            out.vantage = iface.vantage;
            let caplen = (spb.origlen as usize).min(spb.data.len());
            out.wire_len = spb.origlen.max(caplen as u32);
            out.data.clear();
            out.data
                .extend_from_slice(spb.data.get(..caplen).unwrap_or_default());
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn units_to_ns(units: u64, units_per_sec: u64, offset_sec: i64) -> i64 {
    let ns = (u128::from(units) * 1_000_000_000) / u128::from(units_per_sec);
    let ns = i64::try_from(ns).unwrap_or(i64::MAX);
    ns.saturating_add(offset_sec.saturating_mul(1_000_000_000))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn pcapng_resolutions_convert_to_nanoseconds() {
        assert_eq!(units_to_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(units_to_ns(3, 1_000_000_000, 1), 1_000_000_003);
        assert_eq!(units_to_ns(1024, 1024, 0), 1_000_000_000);
    }
}
