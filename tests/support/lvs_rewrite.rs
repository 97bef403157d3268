//! Derive real-FULLNAT-like captures from the lab's NAT captures (the nftables director keeps
//! sequence numbers and TCP options; a real FULLNAT director does not). For every connection
//! of a real-server-side capture:
//!   * the source (client → server) becomes the director's local address and a new local port
//!     (the destination, server → client, likewise);
//!   * client → server sequence numbers are shifted by a per-connection delta, and the
//!     server's acknowledgements by the same delta (SACK blocks are dropped);
//!   * TCP timestamps are stripped (the option is removed, not padded over);
//!   * a TOA option is inserted (kind 254 or 200; 8 bytes for IPv4 clients, 20 for IPv6) on
//!     the SYN or on the ACK completing the handshake, as the plan says per connection;
//!   * packet times move by a clock skew.
//!
//! UDP datagrams get the address rewrite only. Checksums are recomputed.
//! Written independently of wiremap's decoder (the test must not share its bugs).
#![allow(dead_code)]

use std::collections::HashMap;

use crate::common::Rec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToaAt {
    None,
    Syn,
    Ack,
}

pub struct Plan {
    pub local4: [u8; 4],
    pub local6: [u8; 16],
    /// Microseconds added to every timestamp (negative: the capture's clock is behind).
    pub skew_us: i64,
    /// Where connection number `i` (in SYN order) carries its TOA option, and its kind.
    pub toa: fn(usize) -> (ToaAt, u8),
    /// Connection `i`'s sequence delta (never 0).
    pub delta: fn(usize) -> u32,
    /// Clients (address, port) whose connections went through the director; other
    /// connections (direct traffic) are only moved in time.
    pub balanced: std::collections::HashSet<(std::net::IpAddr, u16)>,
}

fn ip_of(b: &[u8]) -> std::net::IpAddr {
    match b.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
        _ => std::net::IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
    }
}

/// What one rewritten connection was: (original client ip:port, new local port, delta).
#[derive(Clone, Debug)]
pub struct Conn {
    pub client: (Vec<u8>, u16),
    pub server: (Vec<u8>, u16),
    pub local_port: u16,
    pub delta: u32,
    pub toa: (ToaAt, u8),
    pub udp: bool,
    pub rewritten: bool,
}

struct Ip<'a> {
    v6: bool,
    src: &'a [u8],
    dst: &'a [u8],
    proto: u8,
    l4: &'a [u8],
}

fn parse(frame: &[u8]) -> Option<Ip<'_>> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    match et {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            Some(Ip {
                v6: false,
                src: ip.get(12..16)?,
                dst: ip.get(16..20)?,
                proto: ip[9],
                l4: ip.get(ihl..total.min(ip.len()))?,
            })
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            Some(Ip {
                v6: true,
                src: ip.get(8..24)?,
                dst: ip.get(24..40)?,
                proto: ip[6],
                l4: ip.get(40..(40 + plen).min(ip.len()))?,
            })
        }
        _ => None,
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Ethernet + IP header + `l4` (checksum field zeroed by the caller; filled here).
fn build(orig: &[u8], v6: bool, src: &[u8], dst: &[u8], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut pseudo = 0u32;
    pseudo = sum16(src, pseudo);
    pseudo = sum16(dst, pseudo);
    pseudo += u32::from(proto) + l4.len() as u32;
    let ck_at = if proto == 6 { 16 } else { 6 };
    l4[ck_at] = 0;
    l4[ck_at + 1] = 0;
    let mut ck = fold(sum16(&l4, pseudo));
    if proto == 17 && ck == 0 {
        ck = 0xffff;
    }
    l4[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    let mut f = orig[..14].to_vec();
    if v6 {
        let mut h = orig[14..54].to_vec();
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[8..24].copy_from_slice(src);
        h[24..40].copy_from_slice(dst);
        f.extend_from_slice(&h);
    } else {
        let ihl = usize::from(orig[14] & 0x0f) * 4;
        let mut h = orig[14..14 + ihl].to_vec();
        h[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        h[12..16].copy_from_slice(src);
        h[16..20].copy_from_slice(dst);
        h[10] = 0;
        h[11] = 0;
        let ck = fold(sum16(&h, 0));
        h[10..12].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(&l4);
    f
}

/// TCP options without timestamps (kind 8), SACK blocks (kind 5) and padding; plus `extra`.
fn options(opts: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1).unwrap_or(&2)).max(2);
                if kind != 8 && kind != 5 {
                    out.extend_from_slice(&opts[i..(i + len).min(opts.len())]);
                }
                i += len;
            }
        }
    }
    out.extend_from_slice(extra);
    while out.len() % 4 != 0 {
        out.push(1);
    }
    assert!(out.len() <= 40, "TCP options too long: {out:?}");
    out
}

fn toa_option(kind: u8, ip: &[u8], port: u16) -> Vec<u8> {
    let mut t = vec![kind, (4 + ip.len()) as u8];
    t.extend_from_slice(&port.to_be_bytes());
    t.extend_from_slice(ip);
    t
}

/// Rewrite one real-server-side capture (Ethernet) as a FULLNAT director would have sent it.
pub fn fullnat(recs: &[Rec], plan: &Plan) -> (Vec<Rec>, Vec<Conn>) {
    // (client ip, client port, server ip, server port) -> connection index
    let mut conns: Vec<Conn> = Vec::new();
    let mut by_tuple: HashMap<(Vec<u8>, u16, Vec<u8>, u16), usize> = HashMap::new();
    // Has this connection's handshake ACK gone by?
    let mut acked: Vec<bool> = Vec::new();
    let mut out = Vec::new();
    for r in recs {
        let Some(ip) = parse(&r.data) else {
            out.push(skewed(r, plan.skew_us));
            continue;
        };
        if ip.proto != 6 && ip.proto != 17 {
            out.push(skewed(r, plan.skew_us));
            continue;
        }
        let l4 = ip.l4;
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        let dport = u16::from_be_bytes([l4[2], l4[3]]);
        let fwd = (ip.src.to_vec(), sport, ip.dst.to_vec(), dport);
        let rev = (ip.dst.to_vec(), dport, ip.src.to_vec(), sport);
        let syn = ip.proto == 6 && l4[13] & 0x12 == 0x02;
        let (idx, to_server) = if let Some(&i) = by_tuple.get(&fwd) {
            (i, true)
        } else if let Some(&i) = by_tuple.get(&rev) {
            (i, false)
        } else if syn || ip.proto == 17 {
            let i = conns.len();
            conns.push(Conn {
                client: (ip.src.to_vec(), sport),
                server: (ip.dst.to_vec(), dport),
                local_port: 20000 + i as u16,
                delta: if ip.proto == 6 { (plan.delta)(i) } else { 0 },
                toa: if ip.proto == 6 {
                    (plan.toa)(i)
                } else {
                    (ToaAt::None, 0)
                },
                udp: ip.proto == 17,
                rewritten: plan.balanced.contains(&(ip_of(ip.src), sport)),
            });
            acked.push(false);
            by_tuple.insert(fwd, i);
            (i, true)
        } else {
            out.push(skewed(r, plan.skew_us));
            continue;
        };
        let c = conns[idx].clone();
        if !c.rewritten {
            out.push(skewed(r, plan.skew_us));
            continue;
        }
        let local: &[u8] = if ip.v6 { &plan.local6 } else { &plan.local4 };
        let (src, dst) = if to_server {
            (local.to_vec(), ip.dst.to_vec())
        } else {
            (ip.src.to_vec(), local.to_vec())
        };
        let mut l4 = if ip.proto == 17 {
            let mut u = l4.to_vec();
            if to_server {
                u[0..2].copy_from_slice(&c.local_port.to_be_bytes());
            } else {
                u[2..4].copy_from_slice(&c.local_port.to_be_bytes());
            }
            u
        } else {
            let flags = l4[13];
            let doff = usize::from(l4[12] >> 4) * 4;
            let mut seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let mut ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
            let mut extra = Vec::new();
            if to_server {
                seq = seq.wrapping_add(c.delta);
                let handshake_ack = flags & 0x12 == 0x10 && !acked[idx] && l4.len() == doff;
                let (at, kind) = c.toa;
                if (at == ToaAt::Syn && flags & 0x12 == 0x02) || (at == ToaAt::Ack && handshake_ack)
                {
                    extra = toa_option(kind, &c.client.0, c.client.1);
                }
                if flags & 0x10 != 0 {
                    acked[idx] = true;
                }
            } else if flags & 0x10 != 0 {
                ack = ack.wrapping_add(c.delta);
            }
            let opts = options(&l4[20..doff], &extra);
            let mut t = l4[..20].to_vec();
            if to_server {
                t[0..2].copy_from_slice(&c.local_port.to_be_bytes());
            } else {
                t[2..4].copy_from_slice(&c.local_port.to_be_bytes());
            }
            t[4..8].copy_from_slice(&seq.to_be_bytes());
            t[8..12].copy_from_slice(&ack.to_be_bytes());
            t[12] = (((20 + opts.len()) / 4) as u8) << 4 | (l4[12] & 0x0f);
            t.extend_from_slice(&opts);
            t.extend_from_slice(&l4[doff..]);
            t
        };
        if ip.proto == 17 {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let data = build(&r.data, ip.v6, &src, &dst, ip.proto, l4);
        out.push(skewed(
            &Rec {
                ts_sec: r.ts_sec,
                ts_usec: r.ts_usec,
                orig_len: data.len() as u32,
                data,
            },
            plan.skew_us,
        ));
    }
    (out, conns)
}

/// The same records with their clock moved by `skew_us`.
pub fn skewed(r: &Rec, skew_us: i64) -> Rec {
    let t = i64::from(r.ts_sec) * 1_000_000 + i64::from(r.ts_usec) + skew_us;
    Rec {
        ts_sec: (t / 1_000_000) as u32,
        ts_usec: (t % 1_000_000) as u32,
        orig_len: r.orig_len,
        data: r.data.clone(),
    }
}

pub fn skew_all(recs: &[Rec], skew_us: i64) -> Vec<Rec> {
    recs.iter().map(|r| skewed(r, skew_us)).collect()
}

/// Move some connections of one IPv4 client to another address (both directions): those
/// whose client port is in `ports`. Used to make two clients out of the lab's one.
pub fn readdress(
    recs: &[Rec],
    from: [u8; 4],
    to: [u8; 4],
    ports: &std::collections::HashSet<u16>,
) -> Vec<Rec> {
    recs.iter()
        .map(|r| {
            let Some(ip) = parse(&r.data) else {
                return r.clone();
            };
            if ip.v6 || (ip.proto != 6 && ip.proto != 17) {
                return r.clone();
            }
            let sport = u16::from_be_bytes([ip.l4[0], ip.l4[1]]);
            let dport = u16::from_be_bytes([ip.l4[2], ip.l4[3]]);
            let (mut src, mut dst) = (ip.src.to_vec(), ip.dst.to_vec());
            if ip.src == from && ports.contains(&sport) {
                src = to.to_vec();
            } else if ip.dst == from && ports.contains(&dport) {
                dst = to.to_vec();
            } else {
                return r.clone();
            }
            let data = build(&r.data, false, &src, &dst, ip.proto, ip.l4.to_vec());
            Rec {
                ts_sec: r.ts_sec,
                ts_usec: r.ts_usec,
                orig_len: data.len() as u32,
                data,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_lose_timestamps_and_keep_the_rest() {
        // mss 1460, sackOK, TS, nop, wscale 10
        let syn = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 10,
        ];
        let o = options(&syn, &toa_option(254, &[10, 0, 0, 2], 40000));
        assert_eq!(&o[..9], &[2, 4, 5, 180, 4, 2, 3, 3, 10]);
        assert_eq!(&o[9..17], &[254, 8, 0x9c, 0x40, 10, 0, 0, 2]);
        assert_eq!(o.len(), 20);
        let v6 = toa_option(200, &[0xfd; 16], 1);
        assert_eq!(v6.len(), 20);
        assert_eq!(options(&[], &v6).len(), 20);
    }
}
