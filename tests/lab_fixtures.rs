//! The project's own real traffic (fixtures/lab/record.sh: nginx, redis-server, mariadb,
//! dnsmasq in one network namespace; curl, redis-cli, mysql, dig in another). The expected
//! edges were written by the recording script from what the clients themselves reported,
//! cross-checked with tshark — never from wiremap.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn the_lab_capture_matches_what_the_clients_did() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("lab.expected.json")).unwrap())
            .unwrap();
    check_against_expected(&fixture("lab.pcap"), &expected);
}

#[test]
fn the_router_pcapng_counts_each_connection_once() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("lab-router.expected.json")).unwrap(),
    )
    .unwrap();
    check_against_expected(&fixture("lab-router.pcapng"), &expected);
    let doc = analyze(&[&fixture("lab-router.pcapng")]);
    assert_eq!(doc["sources"].as_array().unwrap().len(), 2);
    // The second interface's copy of every packet is a sighting, not traffic.
    assert_eq!(
        u(&doc["totals"]["other_vantage_packets"]),
        u(&doc["sources"][1]["packets"])
    );
}

#[test]
fn lab_output_does_not_depend_on_threads() {
    for f in ["lab.pcap", "lab-router.pcapng"] {
        let a = run(&["analyze", "-q", "--threads", "1", &fixture(f)]).stdout;
        let b = run(&["analyze", "-q", "--threads", "3", &fixture(f)]).stdout;
        assert_eq!(a, b, "{f}");
    }
}

#[test]
fn records_list_every_exchange_and_no_secret() {
    let dir = tmpdir("records");
    let rec = dir.join("lab.jsonl");
    let doc = analyze(&["--records", rec.to_str().unwrap(), &fixture("lab.pcap")]);
    let text = std::fs::read_to_string(&rec).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One record per request (answered or not).
    assert_eq!(lines.len() as u64, u(&doc["totals"]["l7_requests"]));
    let answered = lines.iter().filter(|r| !r["response"].is_null()).count() as u64;
    let responses: u64 = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| u(&e["responses"]))
        .sum();
    assert_eq!(answered, responses);
    for r in &lines {
        for k in [
            "ts",
            "client",
            "server",
            "protocol",
            "request",
            "response",
            "latency_us",
            "error",
            "request_bytes",
            "response_bytes",
        ] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
    }
    // The MySQL password the lab's clients used, and the failed login's, never appear.
    let all = format!("{text}{}", serde_json::to_string(&doc).unwrap());
    for secret in ["lab-secret", "wrong-password", "wrongpass"] {
        assert!(
            !all.to_ascii_lowercase().contains(secret),
            "'{secret}' leaked"
        );
    }
    assert!(lines
        .iter()
        .any(|r| r["request"] == "SELECT * FROM missing_table"
            || r["request"]
                .as_str()
                .unwrap_or("")
                .contains("missing_table")));
}
