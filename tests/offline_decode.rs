//! Decoding across link types, VLANs, IPv6, fragments and mid-stream starts. Expected
//! numbers come from tshark's conversation table of the same captures (quoted beside each
//! assertion), or from the Ethernet original a converted capture was made from.

mod common;
use common::*;

/// zeek/http/get.pcap per tshark -z conv,tcp: one connection 141.142.228.5:59856 ->
/// 192.150.187.43:80, 7 frames each way.
fn assert_get_pcap_edge(doc: &serde_json::Value) {
    let e = edge(doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    assert_eq!(u(&e["failed_connections"]), 0);
    assert_eq!(u(&e["packets"]["to_server"]), 7);
    assert_eq!(u(&e["packets"]["to_client"]), 7);
    assert_eq!(u(&doc["totals"]["packets"]), 14);
    // The sum of the 14 IPv4 total-length fields (tshark -T fields -e ip.len).
    assert_eq!(u(&doc["totals"]["bytes"]), 5891);
}

#[test]
fn every_link_type_gives_the_same_edge_as_the_ethernet_original() {
    let Some(src) = peer("zeek/http/get.pcap") else {
        return;
    };
    let (lt, recs) = read_pcap(&src);
    assert_eq!(lt, 1);
    let dir = tmpdir("linktypes");
    let eth_doc = analyze(&[&src]);
    assert_get_pcap_edge(&eth_doc);
    let ip_bytes_original = u(&eth_doc["totals"]["bytes"]);
    // (linktype, header builder from the IPv4 packet)
    let sll = |ip: &[u8]| {
        let mut h = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        h.extend_from_slice(ip);
        h
    };
    let sll2 = |ip: &[u8]| {
        let mut h = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        h.extend_from_slice(ip);
        h
    };
    let null = |ip: &[u8]| {
        let mut h = 2u32.to_le_bytes().to_vec();
        h.extend_from_slice(ip);
        h
    };
    let lp = |ip: &[u8]| {
        let mut h = 2u32.to_be_bytes().to_vec();
        h.extend_from_slice(ip);
        h
    };
    let raw = |ip: &[u8]| ip.to_vec();
    type Build<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let cases: Vec<(u32, &str, Build)> = vec![
        (113, "LINUX_SLL", &sll),
        (276, "LINUX_SLL2", &sll2),
        (0, "NULL", &null),
        (108, "LOOP", &lp),
        (101, "RAW", &raw),
        (228, "IPV4", &raw),
    ];
    for (linktype, name, build) in cases {
        let conv: Vec<Rec> = recs
            .iter()
            .map(|r| Rec {
                data: build(&r.data[14..]),
                orig_len: r.orig_len - 14 + (build(&[]).len() as u32),
                ..r.clone()
            })
            .collect();
        let path = dir.join(format!("{name}.pcap"));
        write_pcap(&path, linktype, &conv);
        let doc = analyze(&[path.to_str().unwrap()]);
        assert_eq!(doc["sources"][0]["linktype"], name);
        assert_get_pcap_edge(&doc);
        assert_eq!(u(&doc["totals"]["bytes"]), ip_bytes_original, "{name}");
        assert_eq!(u(&doc["totals"]["undecodable"]), 0, "{name}");
    }
}

#[test]
fn vlan_and_qinq_tags_are_looked_through() {
    for f in ["zeek/http-vlan-0.pcap", "zeek/http-qinq-0.pcap"] {
        let Some(p) = peer(f) else { return };
        assert_get_pcap_edge(&analyze(&[&p]));
    }
}

#[test]
fn one_five_tuple_on_three_vlans_is_one_connection_unless_vlan_key() {
    // tshark: 42 frames, one 5-tuple with the same ISN, untagged, VLAN 42 and Q-in-Q 10/20.
    let Some(p) = peer("zeek/vlan-collisions.pcap") else {
        return;
    };
    let doc = analyze(&[&p]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    let doc = analyze(&["--vlan-key", &p]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 3);
    assert_eq!(u(&e["tcp"]["retransmissions"]), 0);
}

#[test]
fn ipv6_loopback_and_sll2_captures() {
    // suricata-verify http-ipv6: ::1:55717 <-> ::1:8000, 7 frames each way.
    if let Some(p) = peer("suricata-verify/http-ipv6/input.pcap") {
        let doc = analyze(&[&p]);
        let e = edge(&doc, "::1", "[::1]:8000", None);
        assert_eq!(
            (
                u(&e["connections"]),
                u(&e["packets"]["to_server"]),
                u(&e["packets"]["to_client"])
            ),
            (1, 7, 7)
        );
    }
    // decode-sll2-01: 192.168.1.253:56478 -> 192.168.1.21:80, 2 frames to, 3 frames from.
    if let Some(p) = peer("suricata-verify/decode-sll2-01/input.pcap") {
        let doc = analyze(&[&p]);
        assert_eq!(doc["sources"][0]["linktype"], "LINUX_SLL2");
        let e = edge(&doc, "192.168.1.253", "192.168.1.21:80", None);
        // tshark's "<-" column is B to A: 3 frames from the client, 2 from the server.
        assert_eq!(
            (u(&e["packets"]["to_server"]), u(&e["packets"]["to_client"])),
            (3, 2)
        );
    }
}

#[test]
fn ipv6_atomic_fragments_are_whole_datagrams() {
    // tshark conv,tcp: four connections 2001:db8:1::2 -> [2001:db8:1::1]:80, 36 TCP frames.
    let Some(p) = peer("zeek/ipv6-http-atomic-frag.pcap") else {
        return;
    };
    let doc = analyze(&[&p]);
    let e = edge(&doc, "2001:db8:1::2", "[2001:db8:1::1]:80", None);
    assert_eq!(u(&e["connections"]), 4);
    assert_eq!(
        u(&e["packets"]["to_server"]) + u(&e["packets"]["to_client"]),
        36
    );
}

#[test]
fn fragmented_udp_datagrams_are_reassembled() {
    // zeek ipv6-fragmented-dns: tshark reassembles 3 queries and 2 (fragmented) responses
    // between 2001:470:1f11:81f:d138:5f55:6d4:1fe2 and 2607:f740:b::f93 port 53.
    let Some(p) = peer("zeek/ipv6-fragmented-dns.pcap") else {
        return;
    };
    let doc = analyze(&[&p]);
    assert_eq!(u(&doc["totals"]["undecodable"]), 0);
    // tcpdump shows one lone last fragment (2896|342) whose datagram never completes.
    assert_eq!(u(&doc["limits"]["fragments_dropped"]), 1);
    let edges = doc["edges"].as_array().unwrap();
    assert!(!edges.is_empty());
    for e in edges {
        assert_eq!(e["transport"], "udp");
        assert!(e["server"].as_str().unwrap().ends_with("]:53"), "{e}");
    }
    // 8 frames in all: 3 queries, one whole response, one response in 3 fragments, and
    // the lone fragment.
    let sum: u64 = edges
        .iter()
        .map(|e| u(&e["packets"]["to_server"]) + u(&e["packets"]["to_client"]))
        .sum();
    assert_eq!(sum, 7);
}

#[test]
fn a_connection_open_before_the_capture_began_is_counted_with_the_right_server() {
    let Some(src) = peer("zeek/http/get.pcap") else {
        return;
    };
    let (lt, recs) = read_pcap(&src);
    // Drop the SYN and SYN-ACK: the capture starts with the handshake's ACK.
    let dir = tmpdir("midstream");
    let path = dir.join("mid.pcap");
    write_pcap(&path, lt, &recs[2..]);
    let doc = analyze(&[path.to_str().unwrap()]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(
        u(&e["connections"]),
        1,
        "data seen both ways counts as a connection"
    );
    assert_eq!(u(&e["failed_connections"]), 0);
    assert_eq!(e["tcp"]["rtt_us"], serde_json::Value::Null);
}

#[test]
fn handshake_seen_out_of_order_is_one_connection() {
    // zeek tcp/handshake-reorder: the SYN-ACK is captured before the SYN.
    let Some(p) = peer("zeek/tcp/handshake-reorder.pcap") else {
        return;
    };
    let doc = analyze(&[&p]);
    assert_eq!(u(&doc["totals"]["flows"]), 1);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
}

#[test]
fn snaplen_cut_packets_are_counted_truncated_and_still_decoded() {
    // zeek tcp/retransmit-fast009: tshark marks 21 frames as cut short by the snaplen;
    // one connection 10.0.88.85:50368 -> 192.168.0.27:80 (17 frames to, 22 from) that
    // ended with a RST.
    let Some(p) = peer("zeek/tcp/retransmit-fast009.pcap") else {
        return;
    };
    let doc = analyze(&[&p]);
    assert_eq!(u(&doc["totals"]["truncated"]), 21);
    let e = edge(&doc, "10.0.88.85", "192.168.0.27:80", None);
    assert_eq!(
        (u(&e["packets"]["to_server"]), u(&e["packets"]["to_client"])),
        (17, 22)
    );
    assert_eq!(u(&e["tcp"]["resets"]), 1);
    assert!(u(&e["tcp"]["retransmissions"]) > 0);
    assert!(
        u(&e["tcp"]["missed_bytes"]) > 0,
        "bytes the snaplen cut were never seen"
    );
}

#[test]
fn source_port_reuse_starts_a_new_connection() {
    let Some(src) = peer("zeek/http/get.pcap") else {
        return;
    };
    let (lt, recs) = read_pcap(&src);
    // The same connection twice on one 5-tuple, the second with other sequence numbers
    // (a new ISN on both sides) ten seconds later.
    let mut second = recs.clone();
    for r in &mut second {
        r.ts_sec += 10;
        let tcp = 14 + 20;
        for off in [tcp + 4, tcp + 8] {
            let v = u32::from_be_bytes(r.data[off..off + 4].try_into().unwrap());
            if v != 0 {
                r.data[off..off + 4].copy_from_slice(&v.wrapping_add(0x1000_0000).to_be_bytes());
            }
        }
    }
    let mut all = recs.clone();
    all.extend(second);
    let dir = tmpdir("reuse");
    let path = dir.join("reuse.pcap");
    write_pcap(&path, lt, &all);
    let doc = analyze(&[path.to_str().unwrap()]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 2);
    assert_eq!(u(&e["tcp"]["retransmissions"]), 0);
    assert_eq!(u(&doc["totals"]["flows"]), 2);
}
