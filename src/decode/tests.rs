#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)] // tests index what they built
//! Decoder unit tests on hand-built frames: every layer, tunnels, fragments, and headers
//! that lie about their lengths.

use super::frames::{eth, ipv4, tcp, udp};
use super::*;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

fn flow(o: Outcome<'_>) -> (Transport, Vec<u8>) {
    match o {
        Outcome::Flow(t, p) => (t, p.to_vec()),
        other => panic!("expected a flow, got {other:?}"),
    }
}

#[test]
fn ethernet_ipv4_tcp_with_ethernet_padding_trimmed() {
    let mut f = eth(
        0x0800,
        &ipv4(6, A, B, 1, 0, &tcp(40000, 80, 7, tcp_flags::SYN, &[], b"")),
    );
    f.extend_from_slice(&[0; 6]); // padding to the Ethernet minimum
    let mut d = Decoder::new(16, 1_000_000_000);
    let (t, p) = flow(d.decode(linktype::EN10MB, &f, 0));
    assert_eq!(
        (t.sport, t.dport, t.proto, t.tcp.seq, t.ip_bytes),
        (40000, 80, 6, 7, 40)
    );
    assert!(p.is_empty() && !t.truncated);
}

#[test]
fn qinq_and_mpls_and_pppoe_are_looked_through() {
    let ip = ipv4(17, A, B, 1, 0, &udp(5000, 53, b"q"));
    let mut tagged = vec![0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00];
    tagged.extend_from_slice(&ip);
    let f = eth(0x88a8, &tagged);
    let mut d = Decoder::new(16, 1_000_000_000);
    let (t, p) = flow(d.decode(linktype::EN10MB, &f, 0));
    assert_eq!(
        (t.vlan, t.dport, p.as_slice()),
        ((10 << 12) | 20, 53, &b"q"[..])
    );
    let mut mpls = vec![0, 0, 0x10, 64, 0, 0, 0x21, 64]; // two labels, the second bottom-of-stack
    mpls.extend_from_slice(&ip);
    let (t, _) = flow(d.decode(linktype::EN10MB, &eth(0x8847, &mpls), 0));
    assert_eq!(t.dport, 53);
    let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x21];
    pppoe.extend_from_slice(&ip);
    let (t, _) = flow(d.decode(linktype::EN10MB, &eth(0x8864, &pppoe), 0));
    assert_eq!(t.dport, 53);
}

#[test]
fn vxlan_gre_and_ipip_show_the_inner_endpoints() {
    let inner = eth(
        0x0800,
        &ipv4(
            6,
            [192, 168, 0, 1],
            [192, 168, 0, 2],
            9,
            0,
            &tcp(1234, 6379, 1, tcp_flags::ACK, &[], b"PING\r\n"),
        ),
    );
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vx.extend_from_slice(&inner);
    let outer = eth(0x0800, &ipv4(17, A, B, 1, 0, &udp(55555, 8472, &vx)));
    let mut d = Decoder::new(16, 1_000_000_000);
    let (t, p) = flow(d.decode(linktype::EN10MB, &outer, 0));
    assert_eq!(
        (t.src, t.dport, p.as_slice()),
        ("192.168.0.1".parse().unwrap(), 6379, &b"PING\r\n"[..])
    );
    // GRE with a key, carrying IPv4.
    let inner_ip = ipv4(
        6,
        [172, 16, 0, 1],
        [172, 16, 0, 2],
        3,
        0,
        &tcp(1, 80, 1, tcp_flags::SYN, &[], b""),
    );
    let mut gre = vec![0x20, 0, 0x08, 0, 0, 0, 0, 42];
    gre.extend_from_slice(&inner_ip);
    let (t, _) = flow(d.decode(
        linktype::EN10MB,
        &eth(0x0800, &ipv4(47, A, B, 1, 0, &gre)),
        0,
    ));
    assert_eq!(t.dst, "172.16.0.2".parse::<std::net::IpAddr>().unwrap());
    // IPIP (LVS TUN mode).
    let (t, _) = flow(d.decode(
        linktype::EN10MB,
        &eth(0x0800, &ipv4(4, A, B, 1, 0, &inner_ip)),
        0,
    ));
    assert_eq!(t.src, "172.16.0.1".parse::<std::net::IpAddr>().unwrap());
}

#[test]
fn ipv4_fragments_out_of_order_with_overlap_reassemble_once() {
    let payload: Vec<u8> = udp(7, 9, &(0..100u8).collect::<Vec<_>>());
    let (p1, p2, p3) = (&payload[..48], &payload[48..96], &payload[96..]);
    let mut d = Decoder::new(16, 1_000_000_000);
    let f3 = eth(0x0800, &ipv4(17, A, B, 77, 12, p3)); // offset 96 / 8 = 12, last
    let f1 = eth(0x0800, &ipv4(17, A, B, 77, 0x2000, p1));
    let f2 = eth(0x0800, &ipv4(17, A, B, 77, 0x2000 | 6, p2));
    let f2_again = f2.clone();
    assert!(matches!(
        d.decode(linktype::EN10MB, &f3, 0),
        Outcome::FragmentHeld { .. }
    ));
    assert!(matches!(
        d.decode(linktype::EN10MB, &f1, 1),
        Outcome::FragmentHeld { .. }
    ));
    let (t, p) = flow(d.decode(linktype::EN10MB, &f2, 2));
    assert_eq!(p, (0..100u8).collect::<Vec<_>>());
    assert_eq!(
        (t.fragments, t.ip_bytes),
        (3, (20 * 3 + payload.len()) as u32)
    );
    // A late duplicate starts a new datagram that never completes.
    assert!(matches!(
        d.decode(linktype::EN10MB, &f2_again, 3),
        Outcome::FragmentHeld { .. }
    ));
    assert_eq!(d.fragments_dropped(), 1);
}

#[test]
fn fragment_table_is_bounded_and_evicts_the_oldest() {
    let mut d = Decoder::new(4, 1_000_000_000);
    for id in 0..100u16 {
        let f = eth(0x0800, &ipv4(17, A, B, id, 0x2000, &[0u8; 16]));
        assert!(matches!(
            d.decode(linktype::EN10MB, &f, i64::from(id)),
            Outcome::FragmentHeld { .. }
        ));
    }
    assert_eq!(
        d.fragments_dropped(),
        100,
        "96 evicted plus 4 still waiting"
    );
}

#[test]
fn headers_that_lie_about_lengths_are_undecodable_not_panics() {
    let mut d = Decoder::new(4, 1);
    let good = ipv4(6, A, B, 1, 0, &tcp(1, 2, 3, tcp_flags::ACK, &[], b"data"));
    // IHL below 5.
    let mut short_ihl = good.clone();
    short_ihl[0] = 0x44;
    assert!(matches!(
        d.decode(linktype::RAW, &short_ihl, 0),
        Outcome::Undecodable {
            layer: Layer::Ipv4,
            ..
        }
    ));
    // Total length past the frame: decoded as far as it goes, marked truncated.
    let mut long_total = good.clone();
    long_total[2..4].copy_from_slice(&1000u16.to_be_bytes());
    let (t, p) = flow(d.decode(linktype::RAW, &long_total, 0));
    assert!(t.truncated);
    assert_eq!(
        (p.as_slice(), t.payload_wire_len),
        (&b"data"[..], 1000 - 40)
    );
    // TCP data offset past the datagram.
    let mut bad_doff = good.clone();
    bad_doff[20 + 12] = 0xf0;
    assert!(matches!(
        d.decode(linktype::RAW, &bad_doff, 0),
        Outcome::Undecodable {
            layer: Layer::Tcp,
            ..
        }
    ));
    // Every prefix of a valid frame decodes to something, never a panic.
    let f = eth(0x0800, &good);
    for n in 0..f.len() {
        let _ = d.decode(linktype::EN10MB, &f[..n], 0);
    }
    // Total length smaller than the header.
    let mut tiny_total = good.clone();
    tiny_total[2..4].copy_from_slice(&10u16.to_be_bytes());
    assert!(matches!(
        d.decode(linktype::RAW, &tiny_total, 0),
        Outcome::Undecodable { .. }
    ));
}

#[test]
fn toa_options_give_the_real_client() {
    let v4 = [254, 8, 0x1f, 0x90, 198, 51, 100, 7];
    let mut opts = vec![1, 1];
    opts.extend_from_slice(&v4);
    opts.extend_from_slice(&[0, 0]);
    let f = ipv4(6, A, B, 1, 0, &tcp(1, 80, 1, tcp_flags::ACK, &opts, b""));
    let mut d = Decoder::new(4, 1);
    let (t, _) = flow(d.decode(linktype::RAW, &f, 0));
    assert_eq!(t.tcp.toa, Some(("198.51.100.7".parse().unwrap(), 8080)));
    let mut v6 = vec![200, 20, 0x00, 0x35];
    v6.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    let f = ipv4(6, A, B, 1, 0, &tcp(1, 80, 1, tcp_flags::ACK, &v6, b""));
    let (t, _) = flow(d.decode(linktype::RAW, &f, 0));
    assert_eq!(t.tcp.toa, Some(("2001:db8::9".parse().unwrap(), 53)));
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let data = udp(
        53,
        5353,
        b"hello world, this is a fragmented ipv6 datagram!",
    );
    let (a, b) = (&data[..24], &data[24..]);
    let v6 = |next: u8, payload: &[u8]| {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h.extend_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        h.extend_from_slice(payload);
        h
    };
    // Hop-by-hop (8 bytes) then a fragment header (id 5).
    let frag = |off: u16, more: bool, part: &[u8]| {
        let mut p = vec![44, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[17, 0]);
        p.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&5u32.to_be_bytes());
        p.extend_from_slice(part);
        v6(0, &p)
    };
    let mut d = Decoder::new(4, 1_000_000_000);
    assert!(matches!(
        d.decode(linktype::IPV6, &frag(0, true, a), 0),
        Outcome::FragmentHeld { .. }
    ));
    let (t, p) = flow(d.decode(linktype::IPV6, &frag(3, false, b), 1));
    assert_eq!((t.sport, t.dport), (53, 5353));
    assert_eq!(p, b"hello world, this is a fragmented ipv6 datagram!");
}
