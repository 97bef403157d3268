//! Connection identity: a canonical (order-independent) 5-tuple, optionally with VLANs.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// An address and port. Ordered by address (IPv4 before IPv6), then port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// The derived order, with IPv4 pairs compared as one integer: every packet orders its two
/// endpoints twice (the reader's dispatch key and the worker's), and the derived form
/// compared the enum tags, then the addresses, then the ports.
impl Ord for Endpoint {
    #[inline]
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        match (self.ip, o.ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let x = u64::from(u32::from(a)) << 16 | u64::from(self.port);
                let y = u64::from(u32::from(b)) << 16 | u64::from(o.port);
                x.cmp(&y)
            }
            _ => (self.ip, self.port).cmp(&(o.ip, o.port)),
        }
    }
}

impl PartialOrd for Endpoint {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Endpoint {
    /// A decoded packet's source and destination.
    pub fn of(t: &crate::decode::Transport) -> (Endpoint, Endpoint) {
        let src = Endpoint {
            ip: t.src,
            port: t.sport,
        };
        let dst = Endpoint {
            ip: t.dst,
            port: t.dport,
        };
        (src, dst)
    }

    /// The node id of a service: `10.0.0.5:6379`, `[2001:db8::1]:53` (RFC 5952 form).
    pub fn id(&self) -> String {
        let mut s = String::with_capacity(24);
        match self.ip {
            IpAddr::V4(_) => push_ip(&mut s, self.ip),
            IpAddr::V6(_) => {
                s.push('[');
                push_ip(&mut s, self.ip);
                s.push(']');
            }
        }
        s.push(':');
        s.push_str(itoa::Buffer::new().format(self.port));
        s
    }
}

/// An address as text, as `Display` writes it.
pub fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(16);
    push_ip(&mut s, ip);
    s
}

/// IPv4 digits written directly: through the formatter, node ids were a tenth of the join
/// with tens of thousands of edges. IPv6 keeps `Display` (RFC 5952 zero compression).
fn push_ip(s: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(a) => {
            use std::fmt::Write;
            let _ = write!(s, "{a}");
        }
    }
}

/// Which endpoint of a [`FlowKey`] a packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    A = 0,
    B = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The canonical key: `a` is the lower endpoint, so both directions share one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub a: Endpoint,
    pub b: Endpoint,
    pub proto: u8,
    /// VLAN ids, only when `--vlan-key` asks for them; 0 otherwise.
    pub vlan: u32,
}

/// Hashed as a few whole words, not field by field: every packet is hashed twice (the
/// reader's dispatch and the worker's table), and the derived form feeds an enum tag, each
/// address and each port separately.
impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match (self.a.ip, self.b.ip) {
            (IpAddr::V4(x), IpAddr::V4(y)) => {
                h.write_u64(u64::from(u32::from(x)) << 32 | u64::from(u32::from(y)));
            }
            (x, y) => {
                h.write_u128(v6_bits(x));
                h.write_u128(v6_bits(y));
            }
        }
        h.write_u64(
            u64::from(self.a.port) << 48 | u64::from(self.b.port) << 32 | u64::from(self.vlan),
        );
        h.write_u8(self.proto);
    }
}

fn v6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and the side the packet came from.
    pub fn new(src: Endpoint, dst: Endpoint, proto: u8, vlan: u32) -> (FlowKey, Side) {
        if src <= dst {
            (
                FlowKey {
                    a: src,
                    b: dst,
                    proto,
                    vlan,
                },
                Side::A,
            )
        } else {
            (
                FlowKey {
                    a: dst,
                    b: src,
                    proto,
                    vlan,
                },
                Side::B,
            )
        }
    }

    /// The connection a decoded packet belongs to, and the side that sent it. `vlan` is the
    /// VLAN id to key on (0 where VLANs are not part of the key).
    pub fn of(t: &crate::decode::Transport, vlan: u32) -> (FlowKey, Side) {
        let (src, dst) = Endpoint::of(t);
        FlowKey::new(src, dst, t.proto, vlan)
    }

    pub fn endpoint(&self, side: Side) -> Endpoint {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }

    /// A symmetric hash with a fixed key: picks the worker, the same for both directions.
    pub fn dispatch_hash(&self) -> u64 {
        let mut h = FixedHasher(0xcbf2_9ce4_8422_2325);
        self.hash(&mut h);
        h.finish()
    }

    /// Which of `workers` workers owns this connection (both directions alike). The hash
    /// is scaled into range with a multiply, not a division: a 64-bit divide by a number
    /// known only at run time showed in the reader's profile.
    #[inline]
    pub fn worker(&self, workers: usize) -> usize {
        ((u128::from(self.dispatch_hash()) * workers as u128) >> 64) as usize
    }

    /// Live fanout's owner hash: the exclusive-or of both addresses' 32-bit words and, for
    /// TCP and UDP, of both ports. Symmetric, and simple enough for the kernel to compute in
    /// the fanout group's classic BPF program (`capture::fanout`), so that the kernel hands
    /// each packet to the socket of the worker that owns it: `lane_hash() % workers`.
    pub fn lane_hash(&self) -> u32 {
        fn fold(ip: &std::net::IpAddr) -> u32 {
            match ip {
                std::net::IpAddr::V4(a) => u32::from(*a),
                std::net::IpAddr::V6(a) => a.octets().chunks_exact(4).fold(0, |h, w| {
                    h ^ w.iter().fold(0u32, |x, &b| x << 8 | u32::from(b))
                }),
            }
        }
        let ports = match self.proto {
            6 | 17 => u32::from(self.a.port ^ self.b.port),
            _ => 0,
        };
        fold(&self.a.ip) ^ fold(&self.b.ip) ^ ports
    }
}

/// FNV-1a, then a final mix: stable across runs, cheap, and only used to spread
/// connections over workers (the flow tables themselves use a keyed hash).
struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Whole words in one step (`finish` mixes the result).
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn endpoints_order_as_address_then_port() {
        let v4 = |a: [u8; 4], port| Endpoint {
            ip: IpAddr::from(a),
            port,
        };
        let v6 = |a: [u16; 8], port| Endpoint {
            ip: IpAddr::from(a),
            port,
        };
        let all = [
            v4([10, 0, 0, 1], 80),
            v4([10, 0, 0, 1], 443),
            v4([10, 0, 0, 2], 1),
            v4([9, 255, 255, 255], 65535),
            v4([255, 0, 0, 0], 0),
            v6([0, 0, 0, 0, 0, 0, 0, 1], 80),
            v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 53),
            v6([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1], 80),
        ];
        for a in &all {
            for b in &all {
                assert_eq!(a.cmp(b), (a.ip, a.port).cmp(&(b.ip, b.port)), "{a:?} {b:?}");
                assert_eq!(a.partial_cmp(b), Some(a.cmp(b)));
            }
        }
    }

    use super::*;

    #[test]
    fn ids_are_written_as_display_writes_addresses() {
        let addrs = [
            "0.0.0.0",
            "10.20.0.5",
            "255.255.255.255",
            "192.0.2.100",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::",
            "fe80::1:2:3:4",
        ];
        for a in addrs {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
            for port in [0, 9, 53, 6379, 65535] {
                let want = match ip {
                    IpAddr::V4(_) => format!("{ip}:{port}"),
                    IpAddr::V6(_) => format!("[{ip}]:{port}"),
                };
                assert_eq!(Endpoint { ip, port }.id(), want);
            }
        }
    }

    #[test]
    fn both_directions_share_a_key_and_a_worker() {
        let x = Endpoint {
            ip: "10.0.0.1".parse().unwrap(),
            port: 40000,
        };
        let y = Endpoint {
            ip: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        let (k1, s1) = FlowKey::new(x, y, 6, 0);
        let (k2, s2) = FlowKey::new(y, x, 6, 0);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        assert_eq!(k1.dispatch_hash(), k2.dispatch_hash());
        for n in [1, 2, 3, 8] {
            assert_eq!(k1.worker(n), k2.worker(n));
            assert!(k1.worker(n) < n);
        }
    }

    #[test]
    fn connections_spread_evenly_over_workers() {
        // Clients of one server on sequential ports, as ephemeral ports are handed out.
        let server = Endpoint {
            ip: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        for n in [2usize, 3, 8] {
            let mut per = vec![0u32; n];
            for i in 0..30_000u32 {
                let client = Endpoint {
                    ip: std::net::Ipv4Addr::from(0x0a01_0000 + i / 1000).into(),
                    port: 32768 + (i % 1000) as u16,
                };
                per[FlowKey::new(client, server, 6, 0).0.worker(n)] += 1;
            }
            let fair = 30_000 / n as u32;
            assert!(
                per.iter().all(|&c| c > fair * 9 / 10 && c < fair * 11 / 10),
                "{n} workers: {per:?}"
            );
        }
    }

    #[test]
    fn ipv6_ids_are_bracketed_rfc5952() {
        let e = Endpoint {
            ip: "2001:db8:0:0:0:0:0:1".parse().unwrap(),
            port: 53,
        };
        assert_eq!(e.id(), "[2001:db8::1]:53");
    }
}
