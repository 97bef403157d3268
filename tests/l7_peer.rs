//! L7 counts on other projects' real captures (`../shared/peer-pcaps`).
//!
//! Each row states what wiremap must find (requests, responses, errors, summed over the
//! edges of the protocol) and why, with tshark as the independent reading. For DeepFlow's
//! captures the peer's own `.result` is parsed at test time and compared: where the numbers
//! differ, the row says which reading is right.

mod common;
use common::*;

struct Case {
    file: &'static str,
    protocol: &'static str,
    /// wiremap's expected (requests, responses, errors).
    want: (u64, u64, u64),
    /// DeepFlow's (requests, responses, errors) from its `.result`, where it has one.
    peer: Option<(u64, u64, u64)>,
    why: &'static str,
}

const CASES: &[Case] = &[
    // ---- DNS. tshark: queries not flagged as retransmissions; responses with
    // dns.response_to (they answer a query in the capture); errors: those with rcode != 0.
    Case { file: "deepflow/dns/a-and-ns.pcap", protocol: "dns", want: (2, 2, 0), peer: Some((2, 2, 0)), why: "tshark 2/2/0" },
    Case { file: "deepflow/dns/dns-tcp-multi.pcap", protocol: "dns", want: (2, 2, 0), peer: Some((2, 2, 0)),
        why: "two length-prefixed queries share one TCP segment: tshark's frame count says 1 query, the messages are 2" },
    Case { file: "deepflow/dns/dns.pcap", protocol: "dns", want: (2, 2, 1), peer: Some((2, 2, 1)), why: "tshark 2/2/1" },
    Case { file: "deepflow/dns/not-handled-qtype.pcap", protocol: "dns", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "tshark 1/1/0" },
    Case { file: "deepflow/dns/nxdomain.pcap", protocol: "dns", want: (3, 3, 2), peer: Some((3, 3, 1)),
        why: "tshark: two answers have rcode 3 (NXDOMAIN); DeepFlow marks one of them status ok. The contract: rcode != 0 is an error" },
    Case { file: "zeek/dns-two-responses.pcap", protocol: "dns", want: (1, 1, 0), peer: None,
        why: "one query answered twice: the duplicate answers no pending request (tshark flags it a retransmission)" },
    Case { file: "zeek/dns/dynamic-update.pcap", protocol: "dns", want: (2, 2, 1), peer: None, why: "UPDATE messages; one REFUSED (tshark 2/2/1)" },
    Case { file: "zeek/dns53.pcap", protocol: "dns", want: (0, 0, 0), peer: None,
        why: "a lone response (both ports 53): no request, nothing paired; the QR bit makes its receiver the client" },
    Case { file: "zeek/ipv6-fragmented-dns.pcap", protocol: "dns", want: (2, 2, 0), peer: None,
        why: "3 query datagrams, but one is a retransmission (same id and question, same socket): 2 requests by the contract; \
              tshark and Zeek count 3. Both answers are reassembled from IPv6 fragments" },
    Case { file: "suricata-verify/dns-tcp-ts-gap/input.pcap", protocol: "dns", want: (2, 2, 0), peer: None,
        why: "the second query is lost from the capture (34 missed bytes); its answer pairs with nothing; the third pairs" },
    Case { file: "suricata-verify/dns/dns-tcp-multirequest-buffer/dns-tcp-multirequest-buffer.pcap", protocol: "dns", want: (20, 20, 20), peer: None,
        why: "20 queries in one TCP segment (tshark's frame count: 1), 20 NXDOMAIN answers" },
    Case { file: "suricata-verify/dns-eve-v2-udp-nxdomain-soa/dns-udp-nxdomain-soa.pcap", protocol: "dns", want: (1, 1, 1), peer: None, why: "tshark 1/1/1" },
    Case { file: "suricata-verify/dns/dns-udp-double-request-response/dns-udp-double-request-response.pcap", protocol: "dns", want: (2, 2, 0), peer: None, why: "tshark 2/2/0" },
    Case { file: "tcpdump/dns_tcp.pcap", protocol: "dns", want: (1, 1, 0), peer: None, why: "tshark 1/1/0" },
    Case { file: "tcpdump/dns_udp.pcap", protocol: "dns", want: (1, 1, 0), peer: None, why: "tshark 1/1/0" },
    Case { file: "tcpdump/dns_tcp_8053.pcap", protocol: "dns", want: (1, 1, 0), peer: None,
        why: "DNS over TCP on port 8053: detected by payload (tshark needs -d tcp.port==8053,dns to see it: then 1/1/0)" },
];

fn sums(doc: &serde_json::Value, protocol: &str) -> (u64, u64, u64) {
    let mut s = (0, 0, 0);
    for e in doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == protocol)
    {
        s.0 += u(&e["requests"]);
        s.1 += u(&e["responses"]);
        s.2 += u(&e["errors"]);
    }
    s
}

/// DeepFlow's reading: one line per message. JSON lines carry "msg_type", Debug-printed
/// ones `msg_type: X`, Redis ones are `RedisInfo { request: "...", ... error: "..." }`.
fn peer_counts(result: &str) -> (u64, u64, u64) {
    let (mut req, mut resp, mut err) = (0, 0, 0);
    for line in result.lines() {
        if let Some(rest) = line.strip_prefix("RedisInfo { request: \"") {
            if rest.starts_with('"') {
                resp += 1;
            } else {
                req += 1;
            }
            if !line.contains("error: \"\" }") {
                err += 1;
            }
            continue;
        }
        let kind = ["\"msg_type\":\"", "msg_type: "]
            .iter()
            .find_map(|k| line.find(k).map(|i| &line[i + k.len()..]))
            .and_then(|r| r.split(|c: char| !c.is_ascii_alphabetic()).next());
        match kind {
            Some("Request") => req += 1,
            Some("Response") => {
                resp += 1;
                let l = line.to_ascii_lowercase();
                if ["client_error", "server_error", "clienterror", "servererror"]
                    .iter()
                    .any(|s| l.contains(s))
                {
                    err += 1;
                }
            }
            _ => {}
        }
    }
    (req, resp, err)
}

#[test]
fn peer_captures_give_the_expected_exchange_counts() {
    let mut failures = Vec::new();
    for c in CASES {
        let Some(p) = peer(c.file) else { return };
        let doc = analyze(&[&p]);
        let got = sums(&doc, c.protocol);
        if got != c.want {
            failures.push(format!(
                "{}: got {got:?}, want {:?} ({})",
                c.file, c.want, c.why
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn deepflow_results_are_what_each_row_says() {
    for c in CASES.iter().filter(|c| c.peer.is_some()) {
        let Some(p) = peer(c.file) else { return };
        let result = std::fs::read_to_string(p.replace(".pcap", ".result")).unwrap();
        assert_eq!(
            Some(peer_counts(&result)),
            c.peer,
            "{}: the peer's reading changed",
            c.file
        );
        if c.peer != Some(c.want) {
            assert!(
                c.why.len() > 20,
                "{}: differs from the peer without saying why",
                c.file
            );
        }
    }
}
