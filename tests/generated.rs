//! Scale: wiremap-gen writes interleaved HTTP, Redis, MySQL and DNS traffic with correct
//! TCP sequence numbers and the expected answer known by construction (and checked against
//! tshark by the generator's own script). wiremap must match every edge exactly.

mod common;
use common::*;
use std::process::Command;

fn generate(dir: &std::path::Path, args: &[&str]) -> (String, serde_json::Value) {
    let pcap = dir.join("gen.pcap");
    let expected = dir.join("gen.expected.json");
    let out = Command::new(env!("CARGO_BIN_EXE_wiremap-gen"))
        .args(args)
        .arg("-o")
        .arg(&pcap)
        .arg("--expected")
        .arg(&expected)
        .output()
        .expect("wiremap-gen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exp = serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap();
    (pcap.to_string_lossy().into_owned(), exp)
}

#[test]
fn generated_traffic_matches_by_construction() {
    let dir = tmpdir("gen");
    let (pcap, exp) = generate(
        &dir,
        &[
            "--packets",
            "200000",
            "--flows-concurrent",
            "2000",
            "--clients",
            "300",
            "--seed",
            "7",
        ],
    );
    let doc = analyze(&["--threads", "2", &pcap]);
    let got = doc["edges"].as_array().unwrap();
    let want = exp["edges"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for w in want {
        let g = got
            .iter()
            .find(|e| {
                e["client"] == w["client"]
                    && e["server"] == w["server"]
                    && e["transport"] == w["transport"]
                    && e["protocol"] == w["protocol"]
            })
            .unwrap_or_else(|| panic!("missing edge {w}"));
        for f in [
            "connections",
            "requests",
            "responses",
            "errors",
            "codes",
            "packets",
            "bytes",
        ] {
            assert_eq!(
                g[f], w[f],
                "{} -> {} {}: {f}",
                w["client"], w["server"], w["protocol"]
            );
        }
        if w["transport"] == "tcp" {
            assert_eq!(g["failed_connections"], w["failed_connections"]);
            assert_eq!(u(&g["tcp"]["retransmissions"]), 0);
            assert_eq!(u(&g["tcp"]["missed_bytes"]), 0);
        }
    }
    let t = &exp["totals"];
    assert_eq!(doc["totals"]["packets"], t["packets"]);
    assert_eq!(doc["totals"]["flows"], t["flows"]);
    assert_eq!(doc["totals"]["l7_requests"], t["l7_requests"]);
    // And the same document with one worker.
    let one = run(&["analyze", "-q", "--threads", "1", &pcap]).stdout;
    let two = run(&["analyze", "-q", "--threads", "2", &pcap]).stdout;
    assert_eq!(one, two);
}
