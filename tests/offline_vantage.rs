//! Vantage points: a connection seen at several capture positions counts once, with its
//! counters from the position that saw it first; `--one-vantage` joins rotated files.

mod common;
use common::*;

fn get_pcap() -> Option<(u32, Vec<Rec>)> {
    peer("zeek/http/get.pcap").map(|p| read_pcap(&p))
}

#[test]
fn pcapng_with_two_interfaces_counts_each_connection_once() {
    let Some((_, recs)) = get_pcap() else { return };
    // A router's capture: every packet on the inbound interface, then 50 µs later on the
    // outbound one.
    let mut pkts = Vec::new();
    for r in &recs {
        pkts.push((0u32, r.clone()));
        let mut later = r.clone();
        later.ts_usec += 50;
        if later.ts_usec >= 1_000_000 {
            later.ts_usec -= 1_000_000;
            later.ts_sec += 1;
        }
        pkts.push((1u32, later));
    }
    let dir = tmpdir("pcapng2");
    let path = dir.join("router.pcapng");
    write_pcapng(&path, &["eth0", "eth1"], &pkts);
    let doc = analyze(&[path.to_str().unwrap()]);
    let sources = doc["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(
        (u(&sources[0]["packets"]), u(&sources[1]["packets"])),
        (14, 14)
    );
    assert_eq!(sources[1]["interface"], 1);
    assert_eq!(sources[1]["interface_name"], "eth1");
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    assert_eq!(
        (u(&e["packets"]["to_server"]), u(&e["packets"]["to_client"])),
        (7, 7)
    );
    assert_eq!(
        u(&e["tcp"]["retransmissions"]),
        0,
        "a second sighting is not a retransmission"
    );
    assert_eq!(u(&doc["totals"]["other_vantage_packets"]), 14);
}

#[test]
fn two_files_of_the_same_traffic_are_merged_by_time_and_counted_once() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    let doc = analyze(&[&p, &p]);
    assert_eq!(doc["sources"].as_array().unwrap().len(), 2);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    assert_eq!(
        u(&e["packets"]["to_server"]) + u(&e["packets"]["to_client"]),
        14
    );
    assert_eq!(u(&doc["totals"]["other_vantage_packets"]), 14);
}

#[test]
fn one_vantage_joins_a_rotated_capture() {
    let Some((lt, recs)) = get_pcap() else { return };
    let dir = tmpdir("rotated");
    let (a, b) = (dir.join("cap0.pcap"), dir.join("cap1.pcap"));
    write_pcap(&a, lt, &recs[..6]);
    write_pcap(&b, lt, &recs[6..]);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // As two vantage points, the second file's packets are another sighting.
    let doc = analyze(&[a, b]);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(
        u(&e["packets"]["to_server"]) + u(&e["packets"]["to_client"]),
        6
    );
    // Joined, it is one connection with all 14 packets.
    let doc = analyze(&["--one-vantage", a, b]);
    assert_eq!(doc["sources"].as_array().unwrap().len(), 1);
    assert_eq!(doc["sources"][0]["files"].as_array().unwrap().len(), 2);
    let e = edge(&doc, "141.142.228.5", "192.150.187.43:80", None);
    assert_eq!(u(&e["connections"]), 1);
    assert_eq!(
        (u(&e["packets"]["to_server"]), u(&e["packets"]["to_client"])),
        (7, 7)
    );
    assert_eq!(u(&doc["totals"]["other_vantage_packets"]), 0);
}
