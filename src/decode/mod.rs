#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
//! Decoding: link layer → IP → TCP/UDP, with VLAN, MPLS, PPPoE, tunnels (IPIP, GRE,
//! VXLAN) and IP fragment reassembly. No allocation per packet, no panic on any input:
//! every read goes through a bounds-checked view, and a packet that cannot be decoded is
//! classified (`Other`, `Undecodable`) rather than rejected with an error.
//!
//! Checksums are never verified: offloads make them wrong in captures.

mod frag;
mod view;

use std::net::IpAddr;

pub use frag::FragTable;
use view::{array, be16, be32, byte, Bytes};

/// Link types wiremap decodes (libpcap LINKTYPE_ numbers).
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const EN10MB: u32 = 1;
    pub const RAW_OPENBSD: u32 = 12;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// The layer a packet stopped decoding at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Link,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Tunnel,
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A TCP or UDP packet, decoded. Addresses are the innermost (tunnels removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Outer and inner VLAN ids, `(outer << 12) | inner`; 0 when untagged.
    pub vlan: u32,
    /// IP bytes of the innermost datagram (all fragments for a reassembled one).
    pub ip_bytes: u32,
    /// Captured packets this datagram was made of (more than 1 when reassembled).
    pub fragments: u32,
    /// The capture holds less than the IP datagram (snaplen).
    pub truncated: bool,
    pub tcp: TcpFields,
    /// L4 payload length on the wire (may exceed the captured payload when truncated).
    pub payload_wire_len: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFields {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// A TOA option (LVS FULLNAT): the real client's address and port.
    pub toa: Option<(IpAddr, u16)>,
}

/// What a packet turned out to be.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// TCP or UDP, with the captured part of its payload.
    Flow(Transport, &'a [u8]),
    /// Not TCP or UDP (ARP, ICMP, LLDP, ...). `ip_bytes` is 0 when not IP at all.
    Other {
        ip_bytes: u32,
        truncated: bool,
    },
    /// A fragment kept until its datagram is complete.
    FragmentHeld {
        ip_bytes: u32,
    },
    /// A duplicate copy to skip (the outgoing copy of a loopback packet in a cooked capture).
    Duplicate,
    Undecodable {
        layer: Layer,
        truncated: bool,
    },
}

const MAX_TAGS: usize = 8;
const MAX_TUNNELS: usize = 4;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const ETH_ARP: u16 = 0x0806;
const ETH_TEB: u16 = 0x6558;
const ARPHRD_LOOPBACK: u16 = 772;
const PACKET_OUTGOING: u16 = 4;

/// A decoder: stateless but for the fragment table it owns.
pub struct Decoder {
    frags: FragTable,
    /// IP total length of the outermost IP header of the last packet decoded (0 if none).
    outer_ip_bytes: u32,
}

enum Next {
    Ether,
    EtherType(u16),
    Ip,
}

impl Decoder {
    pub fn new(max_datagrams: usize, timeout_ns: i64) -> Self {
        Decoder {
            frags: FragTable::new(max_datagrams, timeout_ns),
            outer_ip_bytes: 0,
        }
    }

    /// Fragments dropped (table full, oversize, timed out) since the start.
    pub fn fragments_dropped(&self) -> u64 {
        self.frags.dropped()
    }

    /// The outermost IP header's total length of the packet last decoded: the wire's IP
    /// bytes (tunnels count as their outer datagram), 0 for non-IP packets.
    pub fn outer_ip_bytes(&self) -> u32 {
        self.outer_ip_bytes
    }

    pub fn decode<'a>(&'a mut self, linktype: u32, data: &'a [u8], ts_ns: i64) -> Outcome<'a> {
        self.outer_ip_bytes = 0;
        let b = Bytes(data);
        let (next, off) = match linktype {
            linktype::EN10MB => (Next::Ether, 0),
            linktype::RAW | linktype::RAW_OPENBSD | linktype::IPV4 | linktype::IPV6 => {
                (Next::Ip, 0)
            }
            linktype::NULL | linktype::LOOP => {
                let Some(raw) = b.get(0..4) else {
                    return undecodable(Layer::Link, true);
                };
                let family = if linktype == linktype::LOOP {
                    be32(raw, 0)
                } else {
                    let le = array::<4>(raw, 0).map(u32::from_le_bytes).unwrap_or(0);
                    if le > 0xFFFF {
                        le.swap_bytes()
                    } else {
                        le
                    }
                };
                match family {
                    2 | 24 | 28 | 30 => (Next::Ip, 4),
                    _ => {
                        return Outcome::Other {
                            ip_bytes: 0,
                            truncated: false,
                        }
                    }
                }
            }
            linktype::LINUX_SLL => {
                let Some(h) = b.get(0..16) else {
                    return undecodable(Layer::Link, true);
                };
                if be16(h, 2) == ARPHRD_LOOPBACK && be16(h, 0) == PACKET_OUTGOING {
                    return Outcome::Duplicate;
                }
                (Next::EtherType(be16(h, 14)), 16)
            }
            linktype::LINUX_SLL2 => {
                let Some(h) = b.get(0..20) else {
                    return undecodable(Layer::Link, true);
                };
                if be16(h, 8) == ARPHRD_LOOPBACK && u16::from(byte(h, 10)) == PACKET_OUTGOING {
                    return Outcome::Duplicate;
                }
                (Next::EtherType(be16(h, 0)), 20)
            }
            _ => return undecodable(Layer::Link, false),
        };
        self.decode_from(data, off, next, ts_ns, 0)
    }

    #[inline]
    fn decode_from<'a>(
        &'a mut self,
        data: &'a [u8],
        mut off: usize,
        mut next: Next,
        ts_ns: i64,
        mut vlan: u32,
    ) -> Outcome<'a> {
        let mut tunnels = 0usize;
        let mut tags = 0usize;
        loop {
            match next {
                Next::Ether => {
                    let Some(h) = data.get(off..off + 14) else {
                        return undecodable(Layer::Link, true);
                    };
                    off += 14;
                    next = Next::EtherType(be16(h, 12));
                }
                Next::EtherType(t) => match t {
                    ETH_IPV4 | ETH_IPV6 => next = Next::Ip,
                    0x8100 | 0x88A8 | 0x9100 => {
                        tags += 1;
                        let Some(h) = data.get(off..off + 4) else {
                            return undecodable(Layer::Link, true);
                        };
                        if tags > MAX_TAGS {
                            return undecodable(Layer::Link, false);
                        }
                        vlan = (vlan << 12) | u32::from(be16(h, 0) & 0x0FFF);
                        off += 4;
                        next = Next::EtherType(be16(h, 2));
                    }
                    0x8847 | 0x8848 => {
                        // MPLS: skip labels to the bottom of the stack, then IP by version.
                        loop {
                            tags += 1;
                            let Some(h) = data.get(off..off + 4) else {
                                return undecodable(Layer::Link, true);
                            };
                            if tags > MAX_TAGS {
                                return undecodable(Layer::Link, false);
                            }
                            off += 4;
                            if byte(h, 2) & 0x01 != 0 {
                                break;
                            }
                        }
                        next = Next::Ip;
                    }
                    0x8864 => {
                        // PPPoE session: 6-byte header, then the 2-byte PPP protocol.
                        let Some(h) = data.get(off..off + 8) else {
                            return undecodable(Layer::Link, true);
                        };
                        off += 8;
                        next = match be16(h, 6) {
                            0x0021 | 0x0057 => Next::Ip,
                            _ => {
                                return Outcome::Other {
                                    ip_bytes: 0,
                                    truncated: false,
                                }
                            }
                        };
                    }
                    ETH_ARP => {
                        return Outcome::Other {
                            ip_bytes: 0,
                            truncated: false,
                        }
                    }
                    _ => {
                        return Outcome::Other {
                            ip_bytes: 0,
                            truncated: false,
                        }
                    }
                },
                Next::Ip => {
                    let hdr = match parse_ip(data, off) {
                        Ok(h) => h,
                        Err(o) => return o,
                    };
                    if tunnels == 0 {
                        self.outer_ip_bytes = hdr.ip_bytes;
                    }
                    if hdr.fragmented {
                        if hdr.truncated {
                            // A fragment we cannot hold whole cannot complete a datagram.
                            return Outcome::Undecodable {
                                layer: hdr.layer(),
                                truncated: true,
                            };
                        }
                        let part = data.get(hdr.payload_start..hdr.payload_end).unwrap_or(&[]);
                        return match self.frags.insert(&hdr, part, ts_ns) {
                            None => Outcome::FragmentHeld {
                                ip_bytes: hdr.ip_bytes,
                            },
                            Some(done) => {
                                let wire = done.payload.len() as u32;
                                let l4 = L4 {
                                    hdr: &hdr,
                                    vlan,
                                    ip_bytes: done.ip_bytes,
                                    truncated: false,
                                    fragments: done.fragments,
                                    wire_len: wire,
                                };
                                match l4.classify(done.payload, tunnels < MAX_TUNNELS) {
                                    Step::Done(o) => o,
                                    Step::Tunnel(next, inner) => decode_plain(inner, next, vlan),
                                }
                            }
                        };
                    }
                    let payload = data.get(hdr.payload_start..hdr.payload_end).unwrap_or(&[]);
                    let l4 = L4 {
                        hdr: &hdr,
                        vlan,
                        ip_bytes: hdr.ip_bytes,
                        truncated: hdr.truncated,
                        fragments: 1,
                        wire_len: hdr.l4_wire_len,
                    };
                    match l4.classify(payload, tunnels < MAX_TUNNELS) {
                        Step::Done(o) => return o,
                        Step::Tunnel(n, inner) => {
                            tunnels += 1;
                            let Some(o) = offset_in(data, inner) else {
                                return undecodable(Layer::Tunnel, false);
                            };
                            off = o;
                            if matches!(n, Next::Ether) {
                                vlan = 0;
                            }
                            next = n;
                        }
                    }
                }
            }
        }
    }
}

/// The transport layer of one datagram, and the tunnels it may carry.
struct L4<'h> {
    hdr: &'h IpHeader,
    vlan: u32,
    ip_bytes: u32,
    truncated: bool,
    fragments: u32,
    wire_len: u32,
}

enum Step<'a> {
    Done(Outcome<'a>),
    /// Decapsulate: decode `inner` as `Next`.
    Tunnel(Next, &'a [u8]),
}

impl L4<'_> {
    #[inline]
    fn classify<'a>(&self, payload: &'a [u8], may_tunnel: bool) -> Step<'a> {
        let h = self.hdr;
        match h.proto {
            6 => Step::Done(tcp(
                h.src,
                h.dst,
                self.vlan,
                self.ip_bytes,
                self.truncated,
                self.fragments,
                payload,
                self.wire_len,
            )),
            17 => {
                let out = udp(
                    h.src,
                    h.dst,
                    self.vlan,
                    self.ip_bytes,
                    self.truncated,
                    self.fragments,
                    payload,
                    self.wire_len,
                );
                // VXLAN: UDP to 4789 (IANA) or 8472 (Linux's default), with the I flag set.
                if let Outcome::Flow(t, p) = &out {
                    let vxlan = matches!(t.dport, 4789 | 8472)
                        && p.len() >= 8 + 14
                        && p.first().is_some_and(|f| f & 0x08 != 0);
                    if vxlan && may_tunnel {
                        if let Some(inner) = p.get(8..) {
                            return Step::Tunnel(Next::Ether, inner);
                        }
                    }
                }
                Step::Done(out)
            }
            4 | 41 if may_tunnel => Step::Tunnel(Next::Ip, payload),
            47 if may_tunnel => match gre(payload) {
                Some((next, hlen)) => Step::Tunnel(next, payload.get(hlen..).unwrap_or(&[])),
                None => Step::Done(Outcome::Other {
                    ip_bytes: self.ip_bytes,
                    truncated: self.truncated,
                }),
            },
            _ => Step::Done(Outcome::Other {
                ip_bytes: self.ip_bytes,
                truncated: self.truncated,
            }),
        }
    }
}

/// Decode a buffer with no fragment reassembly (inner packets of reassembled tunnels).
fn decode_plain(data: &[u8], mut next: Next, mut vlan: u32) -> Outcome<'_> {
    let mut off = 0usize;
    for _ in 0..MAX_TAGS + 2 {
        match next {
            Next::Ether => {
                let Some(h) = data.get(off..off + 14) else {
                    return undecodable(Layer::Link, true);
                };
                off += 14;
                next = Next::EtherType(be16(h, 12));
            }
            Next::EtherType(ETH_IPV4 | ETH_IPV6) => next = Next::Ip,
            Next::EtherType(0x8100 | 0x88A8) => {
                let Some(h) = data.get(off..off + 4) else {
                    return undecodable(Layer::Link, true);
                };
                vlan = (vlan << 12) | u32::from(be16(h, 0) & 0x0FFF);
                off += 4;
                next = Next::EtherType(be16(h, 2));
            }
            Next::EtherType(_) => {
                return Outcome::Other {
                    ip_bytes: 0,
                    truncated: false,
                }
            }
            Next::Ip => {
                let hdr = match parse_ip(data, off) {
                    Ok(h) => h,
                    Err(o) => return o,
                };
                if hdr.fragmented {
                    return undecodable(hdr.layer(), false);
                }
                let payload = data.get(hdr.payload_start..hdr.payload_end).unwrap_or(&[]);
                return match hdr.proto {
                    6 => tcp(
                        hdr.src,
                        hdr.dst,
                        vlan,
                        hdr.ip_bytes,
                        hdr.truncated,
                        1,
                        payload,
                        hdr.l4_wire_len,
                    ),
                    17 => udp(
                        hdr.src,
                        hdr.dst,
                        vlan,
                        hdr.ip_bytes,
                        hdr.truncated,
                        1,
                        payload,
                        hdr.l4_wire_len,
                    ),
                    _ => Outcome::Other {
                        ip_bytes: hdr.ip_bytes,
                        truncated: hdr.truncated,
                    },
                };
            }
        }
    }
    undecodable(Layer::Tunnel, false)
}

fn offset_in(data: &[u8], sub: &[u8]) -> Option<usize> {
    let start = data.as_ptr() as usize;
    let s = sub.as_ptr() as usize;
    (s >= start && s + sub.len() <= start + data.len()).then(|| s - start)
}

fn undecodable(layer: Layer, truncated: bool) -> Outcome<'static> {
    Outcome::Undecodable { layer, truncated }
}

/// A GRE header: what follows it and its length. Only version 0 carries IP or Ethernet.
fn gre(p: &[u8]) -> Option<(Next, usize)> {
    let h = p.get(0..4)?;
    let flags = be16(h, 0);
    if flags & 0x0007 != 0 {
        return None; // version 1 is PPTP's enhanced GRE
    }
    let mut len = 4;
    if flags & 0x8000 != 0 {
        len += 4; // checksum + reserved
    }
    if flags & 0x2000 != 0 {
        len += 4; // key
    }
    if flags & 0x1000 != 0 {
        len += 4; // sequence number
    }
    let next = match be16(h, 2) {
        ETH_IPV4 | ETH_IPV6 => Next::Ip,
        ETH_TEB => Next::Ether,
        _ => return None,
    };
    (p.len() >= len).then_some((next, len))
}

/// An IP header, parsed (IPv4 or IPv6 with its extension headers walked).
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    pub payload_start: usize,
    /// End of the captured payload (within the datagram's total length).
    pub payload_end: usize,
    pub ip_bytes: u32,
    pub truncated: bool,
    /// Upper-layer bytes on the wire (the datagram's, or this fragment's part).
    pub l4_wire_len: u32,
    pub fragmented: bool,
    /// Fragment offset in bytes, more-fragments flag, and identification.
    pub frag_offset: u32,
    pub more_fragments: bool,
    pub frag_id: u32,
}

impl IpHeader {
    fn layer(&self) -> Layer {
        if self.src.is_ipv4() {
            Layer::Ipv4
        } else {
            Layer::Ipv6
        }
    }
}

#[inline]
fn parse_ip(data: &[u8], off: usize) -> Result<IpHeader, Outcome<'static>> {
    let Some(&first) = data.get(off) else {
        return Err(undecodable(Layer::Link, true));
    };
    match first >> 4 {
        4 => parse_ipv4(data, off),
        6 => parse_ipv6(data, off),
        _ => Err(undecodable(Layer::Link, false)),
    }
}

#[inline]
fn parse_ipv4(data: &[u8], off: usize) -> Result<IpHeader, Outcome<'static>> {
    let Some(h) = data.get(off..off + 20) else {
        return Err(undecodable(Layer::Ipv4, true));
    };
    let ihl = usize::from(byte(h, 0) & 0x0F) * 4;
    let total = usize::from(be16(h, 2));
    if ihl < 20 || total < ihl {
        return Err(undecodable(Layer::Ipv4, false));
    }
    let captured = data.len() - off;
    if captured < ihl {
        return Err(undecodable(Layer::Ipv4, true));
    }
    let truncated = captured < total;
    let end = off + total.min(captured); // trims Ethernet padding
    let frag = be16(h, 6);
    let more = frag & 0x2000 != 0;
    let frag_offset = u32::from(frag & 0x1FFF) * 8;
    Ok(IpHeader {
        src: IpAddr::from(array::<4>(h, 12).unwrap_or_default()),
        dst: IpAddr::from(array::<4>(h, 16).unwrap_or_default()),
        proto: byte(h, 9),
        payload_start: off + ihl,
        payload_end: end,
        ip_bytes: total as u32,
        truncated,
        l4_wire_len: (total - ihl) as u32,
        fragmented: more || frag_offset != 0,
        frag_offset,
        more_fragments: more,
        frag_id: u32::from(be16(h, 4)),
    })
}

fn parse_ipv6(data: &[u8], off: usize) -> Result<IpHeader, Outcome<'static>> {
    let Some(h) = data.get(off..off + 40) else {
        return Err(undecodable(Layer::Ipv6, true));
    };
    let captured = data.len() - off;
    let plen = usize::from(be16(h, 4));
    // A zero payload length is a jumbogram (or a capture that zeroed it): use what we have.
    let total = if plen == 0 { captured } else { 40 + plen };
    let truncated = captured < total;
    let end = off + total.min(captured);
    let src = array::<16>(h, 8).unwrap_or_default();
    let dst = array::<16>(h, 24).unwrap_or_default();
    let mut next = byte(h, 6);
    let mut pos = off + 40;
    let mut frag: Option<(u32, bool, u32)> = None;
    // Walk extension headers; bounded by the header count, not by attacker data.
    for _ in 0..16 {
        match next {
            0 | 43 | 60 | 135 | 139 | 140 => {
                let Some(e) = data.get(pos..pos + 2) else {
                    return Err(undecodable(Layer::Ipv6, true));
                };
                next = byte(e, 0);
                pos += (usize::from(byte(e, 1)) + 1) * 8;
            }
            51 => {
                let Some(e) = data.get(pos..pos + 2) else {
                    return Err(undecodable(Layer::Ipv6, true));
                };
                next = byte(e, 0);
                pos += (usize::from(byte(e, 1)) + 2) * 4;
            }
            44 => {
                let Some(e) = data.get(pos..pos + 8) else {
                    return Err(undecodable(Layer::Ipv6, true));
                };
                next = byte(e, 0);
                let fo = be16(e, 2);
                frag = Some((u32::from(fo & 0xFFF8), fo & 1 != 0, be32(e, 4)));
                pos += 8;
            }
            _ => break,
        }
        if pos > end {
            return Err(undecodable(Layer::Ipv6, truncated));
        }
    }
    if pos > end {
        return Err(undecodable(Layer::Ipv6, truncated));
    }
    // An atomic fragment (offset 0, no more fragments) is a whole datagram.
    let (fragmented, frag_offset, more, id) = match frag {
        Some((o, m, id)) if o != 0 || m => (true, o, m, id),
        _ => (false, 0, false, 0),
    };
    Ok(IpHeader {
        src: IpAddr::from(src),
        dst: IpAddr::from(dst),
        proto: next,
        payload_start: pos,
        payload_end: end,
        ip_bytes: total as u32,
        truncated,
        l4_wire_len: (total - (pos - off)) as u32,
        fragmented,
        frag_offset,
        more_fragments: more,
        frag_id: id,
    })
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn tcp<'a>(
    src: IpAddr,
    dst: IpAddr,
    vlan: u32,
    ip_bytes: u32,
    truncated: bool,
    fragments: u32,
    p: &'a [u8],
    wire_len: u32,
) -> Outcome<'a> {
    // The fixed 20 bytes are needed; options and payload may be cut by the snaplen.
    let Some(h) = p.get(0..20) else {
        return undecodable(Layer::Tcp, truncated);
    };
    let doff = usize::from(byte(h, 12) >> 4) * 4;
    if doff < 20 || wire_len < doff as u32 {
        return undecodable(Layer::Tcp, false);
    }
    let opts = p.get(20..doff.min(p.len())).unwrap_or(&[]);
    let payload = p.get(doff..).unwrap_or(&[]);
    let t = Transport {
        src,
        dst,
        sport: be16(h, 0),
        dport: be16(h, 2),
        proto: 6,
        vlan,
        ip_bytes,
        fragments,
        truncated,
        tcp: TcpFields {
            seq: be32(h, 4),
            ack: be32(h, 8),
            flags: byte(h, 13),
            window: be16(h, 14),
            toa: if opts.is_empty() {
                None
            } else {
                toa_option(opts)
            },
        },
        payload_wire_len: wire_len - doff as u32,
    };
    Outcome::Flow(t, payload)
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn udp<'a>(
    src: IpAddr,
    dst: IpAddr,
    vlan: u32,
    ip_bytes: u32,
    truncated: bool,
    fragments: u32,
    p: &'a [u8],
    wire_len: u32,
) -> Outcome<'a> {
    let Some(h) = p.get(0..8) else {
        return undecodable(Layer::Udp, truncated);
    };
    if wire_len < 8 {
        return undecodable(Layer::Udp, false);
    }
    // The UDP length field bounds the payload when it is sane; otherwise the IP length does.
    let ulen = u32::from(be16(h, 4));
    let wire_payload = if (8..=wire_len).contains(&ulen) {
        ulen - 8
    } else {
        wire_len - 8
    };
    let cap = p.len().saturating_sub(8).min(wire_payload as usize);
    let t = Transport {
        src,
        dst,
        sport: be16(h, 0),
        dport: be16(h, 2),
        proto: 17,
        vlan,
        ip_bytes,
        fragments,
        truncated,
        tcp: TcpFields::default(),
        payload_wire_len: wire_payload,
    };
    Outcome::Flow(t, p.get(8..8 + cap).unwrap_or(&[]))
}

/// The TOA option (kind 254 or 200; length 8: port + IPv4, length 20: port + IPv6).
fn toa_option(opts: &[u8]) -> Option<(IpAddr, u16)> {
    let mut i = 0usize;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return None,
            1 => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                let body = opts.get(i + 2..i + len)?;
                if kind == 254 || kind == 200 {
                    match len {
                        8 => {
                            return Some((
                                IpAddr::from(array::<4>(body, 2).unwrap_or_default()),
                                be16(body, 0),
                            ))
                        }
                        20 => {
                            let a = array::<16>(body, 2).unwrap_or_default();
                            return Some((IpAddr::from(a), be16(body, 0)));
                        }
                        _ => {}
                    }
                }
                i += len;
            }
        }
    }
    None
}

/// IP bytes of a packet without decoding further (for per-source byte counts of packets
/// the filter rejected).
pub fn ip_bytes_of(linktype: u32, data: &[u8]) -> u32 {
    let off = match linktype {
        linktype::EN10MB => {
            let mut off = 12;
            let mut t = data.get(off..off + 2).map(|h| be16(h, 0)).unwrap_or(0);
            let mut n = 0;
            while matches!(t, 0x8100 | 0x88A8 | 0x9100) && n < MAX_TAGS {
                off += 4;
                n += 1;
                t = data.get(off..off + 2).map(|h| be16(h, 0)).unwrap_or(0);
            }
            if !matches!(t, ETH_IPV4 | ETH_IPV6) {
                return 0;
            }
            off + 2
        }
        linktype::RAW | linktype::RAW_OPENBSD | linktype::IPV4 | linktype::IPV6 => 0,
        linktype::NULL | linktype::LOOP => 4,
        linktype::LINUX_SLL => 16,
        linktype::LINUX_SLL2 => 20,
        _ => return 0,
    };
    match parse_ip(data, off) {
        Ok(h) => h.ip_bytes,
        Err(_) => 0,
    }
}

#[cfg(test)]
pub(crate) mod frames;
#[cfg(test)]
mod tests;
