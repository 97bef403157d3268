//! Classic pcap writer (little-endian, microsecond, LINKTYPE_ETHERNET) that builds every
//! frame in one reused buffer: no allocation per packet.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Largest frame we build: 16 (pcap record) + 14 (Ethernet) + 20 (IPv4) + 24 (TCP with MSS) + payload.
const BUF: usize = 2048;
/// Largest L4 payload accepted (TCP segments are at most 1448 bytes; DNS/UDP messages are small).
pub const MAX_PAYLOAD: usize = BUF - 16 - 14 - 20 - 24;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub struct Out {
    w: BufWriter<File>,
    buf: Box<[u8; BUF]>,
    /// Timestamp of the packet being built, microseconds since the epoch.
    pub ts_us: u64,
    pub packets: u64,
    /// IP bytes (sum of IPv4 total lengths), as wiremap counts them.
    pub ip_bytes: u64,
    /// Bytes written to the file.
    pub file_bytes: u64,
}

fn mac(ip: u32) -> [u8; 6] {
    let b = ip.to_be_bytes();
    [0x02, 0x00, b[0], b[1], b[2], b[3]]
}

/// Ones'-complement sum of `data` (big-endian 16-bit words) added to `acc`, not folded.
/// Summing 32-bit words is equivalent modulo 0xffff and twice as fast.
#[inline]
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let r = chunks.remainder();
    let mut i = 0;
    while i + 1 < r.len() {
        acc += ((r[i] as u64) << 8) | r[i + 1] as u64;
        i += 2;
    }
    if i < r.len() {
        acc += (r[i] as u64) << 8;
    }
    acc
}

#[inline]
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl Out {
    pub fn create(path: &Path, start_us: u64) -> io::Result<Self> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let mut hdr = [0u8; 24];
        hdr[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone 0, sigfigs 0
        hdr[16..20].copy_from_slice(&65535u32.to_le_bytes());
        hdr[20..24].copy_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        w.write_all(&hdr)?;
        Ok(Out {
            w,
            buf: Box::new([0u8; BUF]),
            ts_us: start_us,
            packets: 0,
            ip_bytes: 0,
            file_bytes: 24,
        })
    }

    /// Ethernet + IPv4 header for an L4 segment of `l4_len` bytes; returns the offset of the L4 header.
    #[inline]
    fn eth_ip(&mut self, src: u32, dst: u32, proto: u8, ipid: u16, l4_len: usize) -> usize {
        let b = &mut self.buf;
        b[16..22].copy_from_slice(&mac(dst));
        b[22..28].copy_from_slice(&mac(src));
        b[28] = 0x08;
        b[29] = 0x00;
        let ip = &mut b[30..50];
        let tot = (20 + l4_len) as u16;
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        ip[4..6].copy_from_slice(&ipid.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[7] = 0;
        ip[8] = 64;
        ip[9] = proto;
        ip[10] = 0;
        ip[11] = 0;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        let c = fold(sum(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        50
    }

    #[inline]
    fn pseudo(src: u32, dst: u32, proto: u8, len: usize) -> u64 {
        (src >> 16) as u64
            + (src & 0xffff) as u64
            + (dst >> 16) as u64
            + (dst & 0xffff) as u64
            + proto as u64
            + len as u64
    }

    #[inline]
    fn finish(&mut self, frame_len: usize) -> io::Result<u32> {
        let ip_len = (frame_len - 14) as u32;
        let b = &mut self.buf;
        b[0..4].copy_from_slice(&((self.ts_us / 1_000_000) as u32).to_le_bytes());
        b[4..8].copy_from_slice(&((self.ts_us % 1_000_000) as u32).to_le_bytes());
        b[8..12].copy_from_slice(&(frame_len as u32).to_le_bytes());
        b[12..16].copy_from_slice(&(frame_len as u32).to_le_bytes());
        self.w.write_all(&b[..16 + frame_len])?;
        self.packets += 1;
        self.ip_bytes += ip_len as u64;
        self.file_bytes += 16 + frame_len as u64;
        Ok(ip_len)
    }

    /// One TCP segment; `mss` adds an MSS option (SYN and SYN-ACK). Returns the IP length.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        win: u16,
        ipid: u16,
        mss: bool,
        payload: &[u8],
    ) -> io::Result<u32> {
        assert!(payload.len() <= MAX_PAYLOAD);
        let hl = if mss { 24 } else { 20 };
        let l4 = hl + payload.len();
        let o = self.eth_ip(src, dst, 6, ipid, l4);
        let t = &mut self.buf[o..o + l4];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((hl / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&win.to_be_bytes());
        t[16..20].copy_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        if mss {
            t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        }
        t[hl..].copy_from_slice(payload);
        let c = fold(sum(t, Self::pseudo(src, dst, 6, l4)));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        self.finish(14 + 20 + l4)
    }

    /// One UDP datagram. Returns the IP length.
    pub fn udp(
        &mut self,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        ipid: u16,
        payload: &[u8],
    ) -> io::Result<u32> {
        assert!(payload.len() <= MAX_PAYLOAD);
        let l4 = 8 + payload.len();
        let o = self.eth_ip(src, dst, 17, ipid, l4);
        let u = &mut self.buf[o..o + l4];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
        u[6..8].copy_from_slice(&[0, 0]);
        u[8..].copy_from_slice(payload);
        let mut c = fold(sum(u, Self::pseudo(src, dst, 17, l4)));
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
        self.finish(14 + 20 + l4)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}
