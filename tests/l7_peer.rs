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
    // ---- HTTP. tshark: http.request / http.response frames.
    Case { file: "zeek/http/get.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "zeek/http/pipelined-requests.pcap", protocol: "http", want: (5, 5, 0), peer: None, why: "5 pipelined on one connection (tshark 5/5, Zeek 5 rows)" },
    Case { file: "zeek/http/1000-requests-one-dropped-response.pcap", protocol: "http", want: (1000, 999, 0), peer: None,
        why: "1000 pipelined requests, one response missing (tshark 1000/999)" },
    Case { file: "zeek/http/methods.pcap", protocol: "http", want: (44, 44, 39), peer: None,
        why: "odd methods answered 400/405/411: tshark sees 49 responses; 5 request heads start with non-ASCII method \
              bytes, are not parsed as requests, and their 5 responses answer nothing" },
    Case { file: "zeek/http/deeply-nested-mime.pcap", protocol: "http", want: (1, 1, 1), peer: None, why: "a 501 to a large POST (tshark 1/1, 5xx)" },
    Case { file: "zeek/http/100-continue.pcap", protocol: "http", want: (1, 1, 0), peer: None,
        why: "tshark counts the interim 100 Continue as a second response; the contract does not" },
    Case { file: "zeek/http/cooper-grill-dvwa.pcapng", protocol: "http", want: (3, 3, 0), peer: None, why: "pcapng, chunked (tshark 3/3)" },
    Case { file: "zeek/wikipedia.pcap", protocol: "http", want: (15, 15, 0), peer: None, why: "tshark 15/15, all 304" },
    Case { file: "zeek/http-vlan-0.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "zeek/http-qinq-0.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "zeek/vlan-collisions.pcap", protocol: "http", want: (1, 1, 0), peer: None,
        why: "the same exchange three times (untagged, VLAN 42, Q-in-Q) is one connection without --vlan-key" },
    Case { file: "zeek/tcp/handshake-reorder.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "zeek/communityid/tcp.pcap", protocol: "http", want: (1, 1, 0), peer: None,
        why: "snaplen 96 cuts both heads right after their start lines; tshark reads 1/1 from the same bytes" },
    Case { file: "suricata-verify/http-protocol-nodup/input.pcap", protocol: "http", want: (40, 40, 40), peer: None, why: "tshark 40/40, all 4xx" },
    Case { file: "suricata-verify/detect-bidir-flowbits/input.pcap", protocol: "http", want: (1, 1, 1), peer: None, why: "tshark 1/1, a 5xx" },
    Case { file: "suricata-verify/http-ipv6/input.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "BSD loopback, IPv6 (tshark 1/1)" },
    Case { file: "suricata-verify/security-4710-01/input.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "tcpdump/ipv4_tcp_http_xml.pcap", protocol: "http", want: (0, 0, 0), peer: None,
        why: "one response frame whose request is not in the capture: tshark shows it, nothing pairs" },
    Case { file: "deepflow/http.pcap", protocol: "http", want: (1, 1, 0), peer: None, why: "tshark 1/1" },
    Case { file: "deepflow/http/httpv1.pcap", protocol: "http", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "tshark 1/1" },
    Case { file: "deepflow/http/client-ip.pcap", protocol: "http", want: (1, 1, 0), peer: Some((1, 1, 0)),
        why: "two segments: a request head and a response, both cut (the peer ACKs 308 bytes never captured); \
              tshark reads 0/0, wiremap reports messages whose start line was seen, as the peer does" },
    Case { file: "deepflow/http/istio-tcp-frag.pcap", protocol: "http", want: (1, 1, 0), peer: Some((1, 1, 0)),
        why: "the response body is cut by the end of the capture; its status line was seen" },
    Case { file: "deepflow/http/sw8.pcap", protocol: "http", want: (3, 3, 0), peer: Some((3, 3, 0)), why: "port 20880 (tshark with -d: 3/3)" },
    // ---- MySQL. tshark: mysql.command frames (with -d on other ports); its count includes
    // COM_QUIT and COM_STMT_CLOSE, which have no response and are not requests.
    Case { file: "zeek/mysql/mysql.pcap", protocol: "mysql", want: (16, 16, 0), peer: None, why: "tshark 17 commands including COM_QUIT" },
    Case { file: "zeek/mysql/auth.pcap", protocol: "mysql", want: (1, 1, 0), peer: None,
        why: "9 failed logins and 3 refusals are codes (LOGIN ERR 1045/1130), not requests; tshark's 2 commands are the query and COM_QUIT" },
    Case { file: "zeek/mysql/mysql-show-engine-innodb-status-no-password.pcap", protocol: "mysql", want: (2, 2, 0), peer: None,
        why: "a 4.5 KB row over several segments; tshark 3 commands including COM_QUIT" },
    Case { file: "zeek/mysql/change-user-error.pcap", protocol: "mysql", want: (2, 2, 1), peer: None, why: "PING, then COM_CHANGE_USER answered ERR 1045" },
    Case { file: "zeek/mysql/selects_with_new_proto.pcap", protocol: "mysql", want: (4, 4, 0), peer: None,
        why: "CLIENT_DEPRECATE_EOF result sets; tshark 5 commands including COM_QUIT" },
    Case { file: "deepflow/mysql/mysql.pcap", protocol: "mysql", want: (5, 5, 0), peer: Some((6, 6, 0)),
        why: "DeepFlow counts the login as an exchange; the contract does not. tshark 6 commands include COM_QUIT" },
    Case { file: "deepflow/mysql/mysql-error.pcap", protocol: "mysql", want: (3, 3, 1), peer: Some((4, 4, 1)),
        why: "the login is not a request (DeepFlow counts it); ERR 1049 to COM_INIT_DB is the error" },
    Case { file: "deepflow/mysql/mysql-statement.pcap", protocol: "mysql", want: (11, 8, 0), peer: Some((11, 6, 0)),
        why: "mid-stream, port 30130: tshark 13 commands (2 COM_STMT_CLOSE) and 8 responses; DeepFlow keeps one \
              outstanding request per flow and pairs 6" },
    Case { file: "deepflow/mysql/mysql-exec.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((2, 2, 0)), why: "prepare and execute" },
    Case { file: "deepflow/mysql/large-response.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((2, 2, 0)), why: "tshark 2" },
    Case { file: "deepflow/mysql/171-mysql.pcap", protocol: "mysql", want: (390, 390, 0), peer: None, why: "mid-stream, port 20130: tshark 390" },
    Case { file: "deepflow/mysql/mysql-login-error.pcap", protocol: "mysql", want: (0, 0, 0), peer: Some((1, 1, 1)),
        why: "a login refused with ERR 1040 is a LOGIN ERR code, neither a request nor an error by the contract" },
    Case { file: "deepflow/mysql/truncate-1024.pcap", protocol: "mysql", want: (3, 3, 0), peer: Some((3, 3, 0)),
        why: "tshark 4 commands including COM_STMT_CLOSE" },
    Case { file: "deepflow/mysql/binary-in-sql.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((2, 2, 0)), why: "tshark 2" },
    Case { file: "deepflow/mysql/mysql-compressed-response.pcap", protocol: "mysql", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "compressed protocol" },
    Case { file: "deepflow/mysql/partial-packet-compressed.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((2, 9, 0)),
        why: "compressed protocol with a 660 KB result set: 2 queries, 2 responses; DeepFlow reads each compressed frame as a response" },
    Case { file: "deepflow/mysql/mysql-database.pcap", protocol: "mysql", want: (4, 4, 0), peer: Some((5, 5, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-statement-id.pcap", protocol: "mysql", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "one prepare" },
    Case { file: "deepflow/mysql/mysql-table-alter.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-create.pcap", protocol: "mysql", want: (7, 7, 0), peer: Some((8, 8, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-delete.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-desc.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-destroy.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-insert.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-select.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-table-update.pcap", protocol: "mysql", want: (2, 2, 0), peer: Some((3, 3, 0)), why: "DeepFlow counts the login" },
    Case { file: "deepflow/mysql/mysql-use.pcap", protocol: "mysql", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "mid-stream COM_INIT_DB" },
    // ---- Redis. tshark counts RESP frames (segments), not commands; Zeek's redis.log has
    // one row per command.
    Case { file: "zeek/redis/pipelining-example.pcap", protocol: "redis", want: (3, 3, 0), peer: None, why: "3 pipelined PINGs in one segment (Zeek 3 rows)" },
    Case { file: "zeek/redis/pipeline-with-commands.pcap", protocol: "redis", want: (4, 4, 0), peer: None, why: "Zeek 4 rows" },
    Case { file: "zeek/redis/auth.pcap", protocol: "redis", want: (3, 3, 2), peer: None, why: "two AUTH answered WRONGPASS" },
    Case { file: "zeek/redis/django-cloud.pcapng", protocol: "redis", want: (158, 158, 0), peer: None, why: "Zeek 158 rows; tshark 316 frames both ways" },
    Case { file: "zeek/redis/large-requests-responses.pcap", protocol: "redis", want: (5, 5, 0), peer: None, why: "Zeek 5 rows, a 237 KB reply" },
    Case { file: "zeek/redis/stream.pcap", protocol: "redis", want: (4, 4, 0), peer: None, why: "nested XRANGE reply (Zeek 4 rows)" },
    Case { file: "tcpdump/resp_1_benchmark.pcap", protocol: "redis", want: (15, 15, 0), peer: None, why: "15 connections, one command each (tshark 30 frames)" },
    Case { file: "tcpdump/resp_2_inline.pcap", protocol: "redis", want: (12, 12, 0), peer: None, why: "inline commands on port 6379" },
    Case { file: "deepflow/redis/redis.pcap", protocol: "redis", want: (10, 9, 0), peer: Some((10, 18, 0)),
        why: "the last reply (a 490 KB bulk string) is cut by the end of the capture: 9 complete replies; DeepFlow \
              parses packet by packet and reports every segment of large replies" },
    Case { file: "deepflow/redis/redis-error.pcap", protocol: "redis", want: (1, 1, 1), peer: Some((1, 1, 1)), why: "NOAUTH" },
    Case { file: "deepflow/redis/redis-debug.pcap", protocol: "redis", want: (1, 1, 0), peer: Some((1, 1, 0)), why: "tshark 1/1" },
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
fn codes_on_peer_captures() {
    /// (capture, protocol, expected codes summed over the protocol's edges)
    type CodesCase<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);
    let cases: &[CodesCase] = &[
        (
            "zeek/mysql/auth.pcap",
            "mysql",
            &[("LOGIN ERR 1045", 9), ("LOGIN ERR 1130", 3), ("OK", 1)],
        ),
        (
            "zeek/mysql/change-user-error.pcap",
            "mysql",
            &[("ERR 1045", 1), ("OK", 1)],
        ),
        (
            "deepflow/mysql/mysql-login-error.pcap",
            "mysql",
            &[("LOGIN ERR 1040", 1)],
        ),
        (
            "zeek/redis/auth.pcap",
            "redis",
            &[("OK", 1), ("WRONGPASS", 2)],
        ),
        (
            "deepflow/dns/nxdomain.pcap",
            "dns",
            &[("NOERROR", 1), ("NXDOMAIN", 2)],
        ),
        ("zeek/http/deeply-nested-mime.pcap", "http", &[("501", 1)]),
    ];
    for (file, protocol, want) in cases {
        let Some(p) = peer(file) else { return };
        let doc = analyze(&[&p]);
        let mut got = std::collections::BTreeMap::new();
        for e in doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["protocol"] == *protocol)
        {
            for (c, n) in e["codes"].as_object().unwrap() {
                *got.entry(c.clone()).or_insert(0) += u(n);
            }
        }
        let want: std::collections::BTreeMap<String, u64> =
            want.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        assert_eq!(got, want, "{file}");
    }
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
