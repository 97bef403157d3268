//! The project's own real traffic (fixtures/lab/record.sh: nginx, redis-server, mariadb,
//! dnsmasq in one network namespace; curl, redis-cli, mysql, dig in another). The expected
//! edges were written by the recording script from what the clients themselves reported,
//! cross-checked with tshark — never from wiremap.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn check_against_expected(capture: &str, expected: &Value) {
    let doc = analyze(&[capture]);
    let want_edges = expected["edges"].as_array().unwrap();
    let got_edges = doc["edges"].as_array().unwrap();
    assert_eq!(
        got_edges.len(),
        want_edges.len(),
        "{capture}: edges {:#}",
        doc["edges"]
    );
    for w in want_edges {
        let (client, server) = (w["client"].as_str().unwrap(), w["server"].as_str().unwrap());
        let g = got_edges
            .iter()
            .find(|e| {
                e["client"] == client && e["server"] == server && e["transport"] == w["transport"]
            })
            .unwrap_or_else(|| {
                panic!("{capture}: no edge {client} -> {server} {}", w["transport"])
            });
        let what = format!("{capture}: {client} -> {server} {}", w["transport"]);
        assert_eq!(g["protocol"], w["protocol"], "{what}");
        for field in ["connections", "requests", "responses", "errors"] {
            assert_eq!(g[field], w[field], "{what}: {field}");
        }
        if w["transport"] == "tcp" {
            assert_eq!(
                g["failed_connections"], w["failed_connections"],
                "{what}: failed_connections"
            );
        }
        assert_eq!(g["codes"], w["codes"], "{what}: codes");
        if u(&g["requests"]) == 0 {
            assert!(g.get("top_resources").is_none(), "{what}: top_resources only with requests");
        } else if let Some(resources) = w["resources"].as_object() {
            let got: BTreeMap<String, u64> = g["top_resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["resource"].as_str().unwrap().to_string(),
                        u(&r["requests"]),
                    )
                })
                .collect();
            let want: BTreeMap<String, u64> =
                resources.iter().map(|(k, v)| (k.clone(), u(v))).collect();
            assert_eq!(got, want, "{what}: resources");
        }
        if u(&g["responses"]) > 0 {
            let l = &g["latency_us"];
            assert_eq!(
                l["count"], g["responses"],
                "{what}: one latency per response"
            );
            assert!(
                u(&l["min"]) <= u(&l["p50"])
                    && u(&l["p50"]) <= u(&l["p99"])
                    && u(&l["p99"]) <= u(&l["max"])
            );
        }
    }
    let t = &expected["totals"];
    assert_eq!(doc["totals"]["l7_requests"], t["l7_requests"]);
    assert_eq!(doc["totals"]["failed_connections"], t["failed_connections"]);
    assert_eq!(doc["totals"]["other"], t["other"]);
    assert_eq!(u(&doc["totals"]["undecodable"]), 0);
    // Every packet of the file is read (the router pcapng holds each packet twice).
    let read: u64 = doc["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["packets"]))
        .sum();
    let frames = expected["tshark"]["packets"].as_u64().unwrap_or(0);
    if frames > 0 {
        assert_eq!(
            read, frames,
            "{capture}: packets read vs tshark's frame count"
        );
    }
}

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
