//! Classic pcap records read into large chunks that the packets point into.
//!
//! A packet is copied once on its way to a worker (into the worker's batch). Read through
//! a streaming parser it was copied twice more in the reader thread: into the parser's
//! buffer, then into a slot of the reorder window, because that buffer moves under the
//! parser while the window still holds packets. Here the file is read into chunks that stay
//! put while any packet in them is held; a packet is the chunk's number and a byte range,
//! and a chunk is read into again once the window has released its last packet.
//!
//! The record layout (16-byte header: seconds, fraction, captured length, wire length, in
//! the byte order of the file header's magic) is the one `pcap-parser` reads.

use std::io::Read;

use super::file::Input;

/// The usual chunk size: a few window's worth of packets in a handful of chunks.
const CHUNK: usize = 2 << 20;
/// Bytes asked of the kernel per read: headers are parsed while what was just copied in is
/// still in the cache (measured: a 1 MiB read had left L2 before its end was parsed).
const READ_STEP: usize = 128 << 10;
/// Record header length.
const RECORD_HEADER: usize = 16;

/// Where a packet's bytes are: `len` bytes at `start` of chunk `chunk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub chunk: u32,
    pub start: u32,
    pub len: u32,
}

/// One record's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub ts_sec: u32,
    pub ts_frac: u32,
    pub caplen: u32,
    pub origlen: u32,
}

/// What the next record is.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(RecordHeader, Span),
    End,
    /// The file ends inside a record.
    Cut,
    /// The record declares more than `max_record` captured bytes.
    TooLarge,
}

struct Chunk {
    /// Zeroed once when made; `filled` bytes of it hold file data.
    buf: Vec<u8>,
    filled: usize,
    /// Packets of this chunk the caller still holds.
    pinned: u32,
}

pub struct LegacyReader {
    file: Input,
    big_endian: bool,
    max_record: usize,
    chunks: Vec<Chunk>,
    current: usize,
    /// Where the next record starts in the current chunk.
    pos: usize,
    /// Chunks nobody holds, ready to be read into.
    spare: Vec<usize>,
    eof: bool,
}

fn field(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

impl LegacyReader {
    /// `file` positioned at the first record (after the 24-byte file header).
    pub fn new(file: Input, big_endian: bool, max_record: usize) -> LegacyReader {
        LegacyReader {
            file,
            big_endian,
            max_record,
            chunks: vec![Chunk {
                buf: vec![0; CHUNK],
                filled: 0,
                pinned: 0,
            }],
            current: 0,
            pos: 0,
            spare: Vec::new(),
            eof: false,
        }
    }

    /// The bytes of a packet this reader returned (empty for a span it never made).
    pub fn bytes(&self, span: Span) -> &[u8] {
        let start = span.start as usize;
        self.chunks
            .get(span.chunk as usize)
            .and_then(|c| c.buf.get(start..start.saturating_add(span.len as usize)))
            .unwrap_or(&[])
    }

    /// The caller is done with a packet: its chunk can be read into once none is held.
    pub fn release(&mut self, span: Span) {
        let i = span.chunk as usize;
        let Some(c) = self.chunks.get_mut(i) else {
            return;
        };
        c.pinned = c.pinned.saturating_sub(1);
        if c.pinned == 0 && i != self.current {
            self.retire(i);
        }
    }

    /// Chunk `i` holds nothing anyone needs: keep it for reading into (an oversized one
    /// for a huge record gives its memory back).
    fn retire(&mut self, i: usize) {
        if let Some(c) = self.chunks.get_mut(i) {
            if c.buf.len() > CHUNK {
                c.buf = vec![0; CHUNK];
            }
            c.filled = 0;
            self.spare.push(i);
        }
    }

    /// The next record. `Err` is a read error from the file.
    pub fn next(&mut self) -> std::io::Result<Next> {
        loop {
            let (filled, cap) = match self.chunks.get(self.current) {
                Some(c) => (c.filled, c.buf.len()),
                None => return Ok(Next::End),
            };
            let avail = filled.saturating_sub(self.pos);
            let need = if avail < RECORD_HEADER {
                RECORD_HEADER
            } else {
                let head = self
                    .chunks
                    .get(self.current)
                    .and_then(|c| c.buf.get(self.pos..self.pos + RECORD_HEADER))
                    .unwrap_or(&[]);
                let h = RecordHeader {
                    ts_sec: field(head, 0, self.big_endian),
                    ts_frac: field(head, 4, self.big_endian),
                    caplen: field(head, 8, self.big_endian),
                    origlen: field(head, 12, self.big_endian),
                };
                if h.caplen as usize > self.max_record {
                    return Ok(Next::TooLarge);
                }
                let total = RECORD_HEADER + h.caplen as usize;
                if avail >= total {
                    let span = Span {
                        chunk: self.current as u32,
                        start: (self.pos + RECORD_HEADER) as u32,
                        len: h.caplen,
                    };
                    self.pos += total;
                    if let Some(c) = self.chunks.get_mut(self.current) {
                        c.pinned += 1;
                    }
                    return Ok(Next::Record(h, span));
                }
                total
            };
            if self.eof {
                return Ok(if avail == 0 { Next::End } else { Next::Cut });
            }
            if self.pos + need > cap {
                self.move_to_new_chunk(need);
            }
            self.read_more(need)?;
        }
    }

    /// The record at `pos` does not fit the current chunk: continue in a chunk that holds
    /// at least `need` bytes, starting with the part already read.
    fn move_to_new_chunk(&mut self, need: usize) {
        let size = CHUNK.max(need);
        let next = match self.spare.pop() {
            Some(i) => i,
            None => {
                self.chunks.push(Chunk {
                    buf: Vec::new(),
                    filled: 0,
                    pinned: 0,
                });
                self.chunks.len() - 1
            }
        };
        let old = self.current;
        // The part of the record already read (under one record header plus one record)
        // moves to the start of the new chunk.
        let old_buf = match self.chunks.get_mut(old) {
            Some(c) => std::mem::take(&mut c.buf),
            None => Vec::new(),
        };
        let old_filled = self.chunks.get(old).map_or(0, |c| c.filled);
        let tail = old_buf
            .get(self.pos.min(old_filled)..old_filled)
            .unwrap_or(&[]);
        if let Some(c) = self.chunks.get_mut(next) {
            if c.buf.len() < size {
                c.buf = vec![0; size];
            }
            if let Some(dst) = c.buf.get_mut(..tail.len()) {
                dst.copy_from_slice(tail);
            }
            c.filled = tail.len();
            c.pinned = 0;
        }
        if let Some(c) = self.chunks.get_mut(old) {
            c.buf = old_buf;
        }
        self.current = next;
        self.pos = 0;
        if self.chunks.get(old).is_some_and(|c| c.pinned == 0) {
            self.retire(old);
        }
    }

    /// Read at least up to `need` bytes past `pos` into the current chunk (in steps of
    /// [`READ_STEP`]), or to the end of the file.
    fn read_more(&mut self, need: usize) -> std::io::Result<()> {
        let Some(c) = self.chunks.get_mut(self.current) else {
            return Ok(());
        };
        let want = (self.pos + need).max(c.filled + READ_STEP).min(c.buf.len());
        while c.filled < self.pos + need {
            let Some(dst) = c.buf.get_mut(c.filled..want) else {
                break;
            };
            match self.file.read(dst) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => c.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::fs::File;
    use std::io::Write;

    fn record(ts: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ts, 7, data.len() as u32, data.len() as u32 + 1] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn reader(bytes: &[u8], max_record: usize) -> LegacyReader {
        let path = std::env::temp_dir().join(format!(
            "wiremap-legacy-{}-{}.bin",
            std::process::id(),
            bytes.len()
        ));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        LegacyReader::new(Box::new(f), false, max_record)
    }

    /// Records of every size across many chunks, some held for a long time while reading
    /// goes on: every packet's bytes are what was written, and chunks are reused.
    #[test]
    fn packets_keep_their_bytes_while_held_and_chunks_are_reused() {
        let sizes = [0usize, 1, 60, 1500, 9000, 65_535, 300_000, 3 << 20];
        let mut file = Vec::new();
        let mut want = Vec::new();
        for i in 0..600u32 {
            let n = sizes[(i as usize * 7 + i as usize / 3) % sizes.len()];
            let data: Vec<u8> = (0..n).map(|k| (k as u32 ^ i) as u8).collect();
            file.extend(record(i, &data));
            want.push(data);
        }
        let mut r = reader(&file, 4 << 20);
        let mut held: std::collections::VecDeque<(usize, Span)> = Default::default();
        let mut i = 0;
        loop {
            match r.next().unwrap() {
                Next::Record(h, span) => {
                    assert_eq!(h.ts_sec as usize, i);
                    assert_eq!(h.origlen, h.caplen + 1);
                    held.push_back((i, span));
                    i += 1;
                }
                Next::End => break,
                other => panic!("{other:?}"),
            }
            // Hold up to 40 packets, releasing the oldest (the reorder window's way).
            while held.len() > 40 {
                let (k, s) = held.pop_front().unwrap();
                assert!(r.bytes(s) == want[k].as_slice(), "packet {k}");
                r.release(s);
            }
        }
        for (k, s) in held.drain(..) {
            assert!(r.bytes(s) == want[k].as_slice(), "packet {k}");
            r.release(s);
        }
        assert_eq!(i, 600);
        // ~750 MB went through far fewer chunks.
        assert!(r.chunks.len() < 40, "{}", r.chunks.len());
    }

    #[test]
    fn a_cut_file_and_an_oversized_record_are_told_apart() {
        let mut file = record(1, b"abcdef");
        file.extend_from_slice(&record(2, b"0123456789")[..20]);
        let mut r = reader(&file, 100);
        assert!(matches!(r.next().unwrap(), Next::Record(..)));
        assert_eq!(r.next().unwrap(), Next::Cut);

        let mut r = reader(&record(1, &[0; 200]), 100);
        assert_eq!(r.next().unwrap(), Next::TooLarge);

        // A record header cut short is a cut too; nothing at all is the end.
        let mut r = reader(&record(1, b"x")[..9], 100);
        assert_eq!(r.next().unwrap(), Next::Cut);
        let mut r = reader(&[], 100);
        assert_eq!(r.next().unwrap(), Next::End);
    }
}
