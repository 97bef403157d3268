//! The PACKET_MMAP receive ring: TPACKET_V3 blocks or TPACKET_V2 frames, walked in place.
//!
//! The memory is shared with the kernel, so every header field is read as untrusted input
//! (offsets and lengths are checked against the frame or block that holds them) and the
//! status words are accessed atomically: acquire when taking a frame or block, release when
//! handing it back. The walker works on any memory, so the unit tests run it over a
//! synthetic ring in a plain buffer.

use std::sync::atomic::{AtomicU32, Ordering};

pub const TP_STATUS_KERNEL: u32 = 0;
pub const TP_STATUS_USER: u32 = 1;
pub const TP_STATUS_LOSING: u32 = 4;
pub const TP_STATUS_VLAN_VALID: u32 = 0x10;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;

/// sll_pkttype of a packet this host sent.
pub const PACKET_OUTGOING: u8 = 4;

/// TPACKET_ALIGN: headers and frames are 16-byte aligned.
pub const fn tpacket_align(x: usize) -> usize {
    (x + 15) & !15
}

/// sizeof(struct tpacket2_hdr) and sizeof(struct tpacket3_hdr).
pub const TPACKET2_HDRLEN: usize = 32;
pub const TPACKET3_HDRLEN: usize = 48;
/// sizeof(struct sockaddr_ll)
pub const SOCKADDR_LL_LEN: usize = 20;
/// Offset of block_status in struct tpacket_block_desc (version, offset_to_priv, then hdr).
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST: usize = 16;

/// Ring version in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Ring geometry, as requested from the kernel with PACKET_RX_RING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub version: Version,
    /// V2: frame size; V3: block size.
    pub unit_size: usize,
    /// V2: frame count; V3: block count.
    pub units: usize,
    /// V3 only: the frame_size unit that frame_nr is counted in.
    pub frame_size: usize,
}

impl Geometry {
    /// Sizes that follow the snaplen: a V2 frame holds a header, the link address and a
    /// full snaplen; a V3 block holds at least eight full-size frames. `ring_bytes` is the
    /// total wanted (from --ring-mb); at least 4 units are kept.
    pub fn for_snaplen(version: Version, snaplen: usize, ring_bytes: usize) -> Geometry {
        let page = 4096;
        let round_up = |x: usize, to: usize| x.div_ceil(to) * to;
        match version {
            Version::V2 => {
                let frame = tpacket_align(
                    tpacket_align(TPACKET2_HDRLEN) + SOCKADDR_LL_LEN + 4 + snaplen.max(64),
                );
                // The kernel wants frames that tile pages exactly or pages that tile frames.
                let frame = if frame < page {
                    frame.next_power_of_two()
                } else {
                    round_up(frame, page)
                };
                let units = (ring_bytes / frame).max(4);
                Geometry {
                    version,
                    unit_size: frame,
                    units,
                    frame_size: frame,
                }
            }
            Version::V3 => {
                let frame_max =
                    tpacket_align(TPACKET3_HDRLEN + SOCKADDR_LL_LEN + 4 + snaplen.max(64));
                let block = round_up((frame_max * 8).max(1 << 20), page).next_power_of_two();
                let units = (ring_bytes / block).max(4);
                Geometry {
                    version,
                    unit_size: block,
                    units,
                    frame_size: 2048,
                }
            }
        }
    }

    pub fn total(&self) -> usize {
        self.unit_size * self.units
    }
}

/// One captured frame, borrowed from the ring.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts_ns: i64,
    /// Length on the wire (tp_len).
    pub wire_len: u32,
    /// Captured bytes from the link header on (tp_snaplen at tp_mac).
    pub data: &'a [u8],
    /// A tag the kernel stripped: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
    pub pkttype: u8,
    /// TP_STATUS_LOSING: the kernel dropped packets since the last report.
    pub losing: bool,
}

fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The status word at `ptr`, shared with the kernel.
///
/// # Safety
/// `ptr` must be 4-byte aligned and point into memory valid for the ring's lifetime.
unsafe fn status<'a>(ptr: *mut u8) -> &'a AtomicU32 {
    // SAFETY: the caller guarantees alignment and validity; AtomicU32 has u32's layout.
    unsafe { &*(ptr as *const AtomicU32) }
}

/// Parse the fields common to V2 and V3 headers into a frame. `hdr` is the frame's own
/// memory (V2: the frame slot; V3: from the header to the end of its block).
#[allow(clippy::too_many_arguments)]
fn frame_from<'a>(
    hdr: &'a [u8],
    status: u32,
    sec: u32,
    nsec: u32,
    snaplen: u32,
    len: u32,
    mac: u16,
    tci: u16,
    tpid: u16,
    hdrlen: usize,
) -> Option<Frame<'a>> {
    let mac = usize::from(mac);
    let data = hdr.get(mac..mac.checked_add(snaplen as usize)?)?;
    let sll = tpacket_align(hdrlen);
    let pkttype = hdr.get(sll + 10).copied().unwrap_or(0);
    let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
        let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 {
            tpid
        } else {
            0x8100
        };
        (tpid, tci)
    });
    Some(Frame {
        ts_ns: i64::from(sec) * 1_000_000_000 + i64::from(nsec),
        wire_len: len,
        data,
        vlan,
        pkttype,
        losing: status & TP_STATUS_LOSING != 0,
    })
}

/// A walker over ring memory at `base` with `geom`. Keeps the position of the next frame
/// (V2) or block (V3) to look at.
pub struct RingWalker {
    base: *mut u8,
    geom: Geometry,
    cur: usize,
    /// Frames the walker could not parse (header fields out of range): skipped, counted.
    pub malformed: u64,
}

// SAFETY: the walker owns its position; the memory it points to is owned by the ring that
// moves with it to one thread.
unsafe impl Send for RingWalker {}

impl RingWalker {
    /// # Safety
    /// `base` must point to `geom.total()` bytes, page aligned, valid while the walker lives.
    pub unsafe fn new(base: *mut u8, geom: Geometry) -> RingWalker {
        RingWalker {
            base,
            geom,
            cur: 0,
            malformed: 0,
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    fn unit(&self, i: usize) -> (*mut u8, &[u8]) {
        // SAFETY: i < units, so the unit lies inside the ring (see `new`).
        unsafe {
            let p = self.base.add(i * self.geom.unit_size);
            (p, std::slice::from_raw_parts(p, self.geom.unit_size))
        }
    }

    /// True if the next frame or block belongs to user space (something to read).
    pub fn ready(&self) -> bool {
        let (p, _) = self.unit(self.cur);
        let off = match self.geom.version {
            Version::V2 => 0,
            Version::V3 => BLK_STATUS,
        };
        // SAFETY: status words are 4-byte aligned inside the unit.
        unsafe { status(p.add(off)) }.load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    /// Hand every ready frame (up to one pass over the ring) to `f`, returning each frame
    /// or block to the kernel right after. Returns the number of frames seen.
    pub fn drain(&mut self, f: impl FnMut(&Frame<'_>)) -> usize {
        self.drain_at_most(self.geom.units, f)
    }

    /// As `drain`, but at most `units` frames (V2) or blocks (V3).
    pub fn drain_at_most(&mut self, units: usize, mut f: impl FnMut(&Frame<'_>)) -> usize {
        let mut n = 0;
        for _ in 0..units.min(self.geom.units) {
            if !self.ready() {
                break;
            }
            n += match self.geom.version {
                Version::V2 => self.take_v2(&mut f),
                Version::V3 => self.take_v3(&mut f),
            };
            self.cur = (self.cur + 1) % self.geom.units;
        }
        n
    }

    fn take_v2(&mut self, f: &mut impl FnMut(&Frame<'_>)) -> usize {
        let (p, b) = self.unit(self.cur);
        let st = rd_u32(b, 0).unwrap_or(0);
        let parsed = (|| {
            frame_from(
                b,
                st,
                rd_u32(b, 16)?,
                rd_u32(b, 20)?,
                rd_u32(b, 8)?,
                rd_u32(b, 4)?,
                rd_u16(b, 12)?,
                rd_u16(b, 24)?,
                rd_u16(b, 26)?,
                TPACKET2_HDRLEN,
            )
        })();
        let n = match parsed {
            Some(fr) => {
                f(&fr);
                1
            }
            None => {
                self.malformed += 1;
                0
            }
        };
        // SAFETY: the frame's status word is its first field, aligned.
        unsafe { status(p) }.store(TP_STATUS_KERNEL, Ordering::Release);
        n
    }

    fn take_v3(&mut self, f: &mut impl FnMut(&Frame<'_>)) -> usize {
        let (p, b) = self.unit(self.cur);
        let num = rd_u32(b, BLK_NUM_PKTS).unwrap_or(0);
        let mut off = rd_u32(b, BLK_FIRST).unwrap_or(0) as usize;
        let mut n = 0;
        let mut bad = 0u64;
        for i in 0..num {
            // A header must fit in the block; the frame may run to the block's end.
            let Some(h) = b.get(off..).filter(|h| h.len() >= TPACKET3_HDRLEN) else {
                bad += 1;
                break;
            };
            let parsed = (|| {
                frame_from(
                    h,
                    rd_u32(h, 20)?,
                    rd_u32(h, 4)?,
                    rd_u32(h, 8)?,
                    rd_u32(h, 12)?,
                    rd_u32(h, 16)?,
                    rd_u16(h, 24)?,
                    rd_u32(h, 32)? as u16,
                    rd_u16(h, 36)?,
                    TPACKET3_HDRLEN,
                )
            })();
            match parsed {
                Some(fr) => {
                    f(&fr);
                    n += 1;
                }
                None => bad += 1,
            }
            let next = rd_u32(h, 0).unwrap_or(0) as usize;
            if i + 1 < num {
                if next == 0 {
                    bad += u64::from(num - i - 1);
                    break;
                }
                off = match off.checked_add(next) {
                    Some(o) => o,
                    None => break,
                };
            }
        }
        self.malformed += bad;
        // SAFETY: block_status is an aligned field of the block descriptor.
        unsafe { status(p.add(BLK_STATUS)) }.store(TP_STATUS_KERNEL, Ordering::Release);
        n
    }
}

/// Put a stripped VLAN tag back after the two MAC addresses, into `out` (reused; its
/// capacity is kept, so the steady state allocates nothing). Frames shorter than the MAC
/// addresses are returned unchanged.
pub fn reinsert_vlan<'a>(data: &'a [u8], tpid: u16, tci: u16, out: &'a mut Vec<u8>) -> &'a [u8] {
    let Some((macs, rest)) = data.split_at_checked(12) else {
        return data;
    };
    out.clear();
    out.extend_from_slice(macs);
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned buffer standing in for the mmap'ed ring.
    struct Mem {
        buf: Vec<u64>,
    }

    impl Mem {
        fn new(bytes: usize) -> Mem {
            Mem {
                buf: vec![0u64; bytes / 8],
            }
        }
        fn ptr(&mut self) -> *mut u8 {
            self.buf.as_mut_ptr().cast()
        }
        fn bytes(&mut self) -> &mut [u8] {
            let len = self.buf.len() * 8;
            // SAFETY: the Vec<u64> owns len bytes.
            unsafe { std::slice::from_raw_parts_mut(self.ptr(), len) }
        }
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn v2_frames_are_read_in_order_and_handed_back() {
        let geom = Geometry {
            version: Version::V2,
            unit_size: 256,
            units: 4,
            frame_size: 256,
        };
        let mut mem = Mem::new(geom.total());
        let b = mem.bytes();
        for (i, status) in [(0usize, 1u32 | TP_STATUS_VLAN_VALID), (1, 1), (2, 0)] {
            let f = &mut b[i * 256..(i + 1) * 256];
            put32(f, 0, status);
            put32(f, 4, 100 + i as u32);
            put32(f, 8, 3);
            put16(f, 12, 80);
            put32(f, 16, 7);
            put32(f, 20, 9);
            put16(f, 24, 42);
            f[32 + 10] = if i == 1 { PACKET_OUTGOING } else { 0 };
            f[80..83].copy_from_slice(&[i as u8; 3]);
        }
        // SAFETY: mem holds geom.total() bytes for the walker's life.
        let mut w = unsafe { RingWalker::new(mem.ptr(), geom) };
        let mut seen = Vec::new();
        assert_eq!(
            w.drain(|f| seen.push((f.ts_ns, f.wire_len, f.data.to_vec(), f.vlan, f.pkttype))),
            2
        );
        assert_eq!(
            seen[0],
            (7_000_000_009, 100, vec![0; 3], Some((0x8100, 42)), 0)
        );
        assert_eq!(
            seen[1],
            (7_000_000_009, 101, vec![1; 3], None, PACKET_OUTGOING)
        );
        // Both frames went back to the kernel; the walker waits at the third.
        assert_eq!(rd_u32(mem.bytes(), 0), Some(0));
        assert_eq!(rd_u32(mem.bytes(), 256), Some(0));
        assert!(!w.ready());
    }

    #[test]
    fn v3_block_walk_follows_next_offsets_and_rejects_bad_ones() {
        let geom = Geometry {
            version: Version::V3,
            unit_size: 4096,
            units: 2,
            frame_size: 2048,
        };
        let mut mem = Mem::new(geom.total());
        let b = mem.bytes();
        put32(b, BLK_STATUS, TP_STATUS_USER);
        put32(b, BLK_NUM_PKTS, 3);
        put32(b, BLK_FIRST, 48);
        let hdr = |b: &mut [u8], off: usize, next: u32, snap: u32, status: u32, tpid: u16| {
            put32(b, off, next);
            put32(b, off + 4, 1);
            put32(b, off + 8, 5);
            put32(b, off + 12, snap);
            put32(b, off + 16, snap + 10);
            put32(b, off + 20, status);
            put16(b, off + 24, 80);
            put32(b, off + 32, 7);
            put16(b, off + 36, tpid);
        };
        hdr(b, 48, 256, 4, 0, 0);
        let st = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID;
        hdr(b, 304, 256, 4, st, 0x88a8);
        // The third claims more bytes than its block holds: skipped and counted.
        hdr(b, 560, 0, 9000, 0, 0);
        // SAFETY: as above.
        let mut w = unsafe { RingWalker::new(mem.ptr(), geom) };
        let mut seen = Vec::new();
        assert_eq!(w.drain(|f| seen.push((f.ts_ns, f.data.len(), f.vlan))), 2);
        assert_eq!(seen[0], (1_000_000_005, 4, None));
        assert_eq!(seen[1], (1_000_000_005, 4, Some((0x88a8, 7))));
        assert_eq!(w.malformed, 1);
        assert_eq!(rd_u32(mem.bytes(), BLK_STATUS), Some(TP_STATUS_KERNEL));
        assert!(!w.ready());
    }

    #[test]
    fn vlan_tag_goes_back_after_the_macs() {
        let frame: Vec<u8> = (0u8..20).collect();
        let mut out = Vec::with_capacity(64);
        let tagged = reinsert_vlan(&frame, 0x8100, 0x0064, &mut out).to_vec();
        assert_eq!(&tagged[..12], &frame[..12]);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 0x64]);
        assert_eq!(&tagged[16..], &frame[12..]);
        let short = [1u8; 5];
        assert_eq!(reinsert_vlan(&short, 0x8100, 1, &mut out), &short);
    }

    #[test]
    fn sizes_follow_the_snaplen() {
        let g = Geometry::for_snaplen(Version::V2, 65535, 64 << 20);
        assert!(g.unit_size >= 65535 + 32 + 20);
        assert_eq!(g.unit_size % 4096, 0);
        let g = Geometry::for_snaplen(Version::V2, 1500, 1 << 20);
        assert_eq!(g.unit_size, 2048);
        let g = Geometry::for_snaplen(Version::V3, 262_144, 8 << 20);
        assert!(g.unit_size >= 8 * 262_144);
        assert!(g.units >= 4);
        assert_eq!(g.unit_size % g.frame_size, 0);
    }
}
