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

/// Every edge of `exp` (the generator's answer) in `doc` with the same counts, no other edge,
/// and the same totals. `benches/gen/check_document.py` applies the same rules to the
/// benchmark's captures: change both together.
fn assert_matches_expected(doc: &serde_json::Value, exp: &serde_json::Value) {
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
}

/// The mixed capture both exactness tests read: 200,000 packets, about 8,000 connections,
/// 2,000 open at once, 300 clients.
const MIXED: &[&str] = &[
    "--packets",
    "200000",
    "--flows-concurrent",
    "2000",
    "--clients",
    "300",
    "--seed",
    "7",
];

#[test]
fn generated_traffic_matches_by_construction() {
    let dir = tmpdir("gen");
    let (pcap, exp) = generate(&dir, MIXED);
    let doc = analyze(&["--threads", "2", &pcap]);
    assert_matches_expected(&doc, &exp);
    // And the same document with one worker.
    let one = run(&["analyze", "-q", "--threads", "1", &pcap]).stdout;
    let two = run(&["analyze", "-q", "--threads", "2", &pcap]).stdout;
    assert_eq!(one, two);
}

/// The reading thread running one of the workers itself (`--reader-worker on`, the default
/// on 2 CPUs), a quarter of the connections with 2 workers, all of them with 1: the same
/// answer, byte for byte, and the same set of exchange records as worker threads only.
/// (This capture names few resources per edge: no displacement, which would depend on the
/// worker each connection went to.)
#[test]
fn the_reader_running_a_worker_changes_nothing() {
    let dir = tmpdir("gen-reader-worker");
    let (pcap, exp) = generate(&dir, MIXED);
    let records = |name: &str, args: &[&str]| {
        let rec = dir.join(name);
        let rec_s = rec.to_str().unwrap();
        let mut all = vec!["analyze", "-q", "--records", rec_s];
        all.extend_from_slice(args);
        all.push(&pcap);
        let out = run(&all);
        assert!(out.status.success(), "{args:?}");
        let mut lines: Vec<String> = std::fs::read_to_string(&rec)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        (out.stdout, lines)
    };
    let (base_doc, base_records) =
        records("off.jsonl", &["--threads", "2", "--reader-worker", "off"]);
    let doc: serde_json::Value = serde_json::from_slice(&base_doc).unwrap();
    assert_matches_expected(&doc, &exp);
    assert_eq!(u(&doc["limits"]["resources_displaced"]), 0);
    assert!(base_records.len() > 1000, "{} records", base_records.len());
    for threads in ["1", "2", "3"] {
        let (doc, recs) = records(
            &format!("on-{threads}.jsonl"),
            &["--threads", threads, "--reader-worker", "on"],
        );
        assert!(
            doc == base_doc,
            "--threads {threads} --reader-worker on: another document"
        );
        assert!(
            recs == base_records,
            "--threads {threads} --reader-worker on: other records"
        );
    }
    let bad = run(&["analyze", "-q", "--reader-worker", "sometimes", &pcap]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A full flow table evicts connections whose close is complete first: with the table at
/// 3,000 flows for about 8,000 connections (2,000 open at once; closed ones linger 10 s and
/// UDP flows 60 s, longer than this 2 s capture), thousands of evictions are counted and the
/// document still equals the generator's answer. Evicting the least recently seen flow
/// instead took connections still waiting for their last ACK, which then opened a flow of
/// its own: 561 flows too many, 302 edges wrong.
#[test]
fn a_full_flow_table_evicts_finished_connections_without_changing_the_counts() {
    let dir = tmpdir("gen-evict");
    let (pcap, exp) = generate(&dir, MIXED);
    // Also with the reading thread running a worker, which then gets a quarter of the
    // connections and a quarter of the table.
    for reader in ["off", "on"] {
        let doc = analyze(&[
            "--threads",
            "2",
            "--reader-worker",
            reader,
            "--max-flows",
            "3000",
            &pcap,
        ]);
        let evicted = u(&doc["limits"]["flows_evicted"]);
        assert!(
            evicted > 1000,
            "reader worker {reader}: {evicted} evictions"
        );
        assert_matches_expected(&doc, &exp);
    }
}

/// Latency percentiles: a few busy edges (hundreds of responses each, past the 64 values kept
/// exactly) against the per-exchange latencies of the same run's records. Count, min, max and
/// mean are exact; p50, p90 and p99 are nearest-rank within 1 % (plus the 1 µs truncation).
/// Also the same with one worker and with two: the sketch merges exactly.
#[test]
fn latency_percentiles_match_the_exchanges_within_one_percent() {
    let dir = tmpdir("gen-latency");
    let (pcap, _) = generate(
        &dir,
        &[
            "--packets",
            "100000",
            "--flows-concurrent",
            "200",
            "--clients",
            "4",
            "--seed",
            "11",
        ],
    );
    let records = dir.join("records.jsonl");
    let doc = analyze(&["--records", records.to_str().unwrap(), &pcap]);
    let mut per_edge: std::collections::BTreeMap<(String, String, String), Vec<u64>> =
        Default::default();
    for line in std::fs::read_to_string(&records).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        // Records do not say the transport; DNS runs over UDP and TCP on the same service.
        if r["protocol"] == "dns" {
            continue;
        }
        if let Some(l) = r["latency_us"].as_u64() {
            let k = (
                r["client"].as_str().unwrap().to_string(),
                r["server"].as_str().unwrap().to_string(),
                r["protocol"].as_str().unwrap().to_string(),
            );
            per_edge.entry(k).or_default().push(l);
        }
    }
    let mut checked = 0;
    for e in doc["edges"].as_array().unwrap() {
        let k = (
            e["client"].as_str().unwrap().to_string(),
            e["server"].as_str().unwrap().to_string(),
            e["protocol"].as_str().unwrap().to_string(),
        );
        let Some(v) = per_edge.get_mut(&k) else {
            continue;
        };
        v.sort_unstable();
        let l = &e["latency_us"];
        let n = v.len() as u64;
        assert_eq!(u(&l["count"]), n, "{k:?}");
        assert_eq!(u(&l["min"]), v[0], "{k:?}");
        assert_eq!(u(&l["max"]), v[v.len() - 1], "{k:?}");
        assert_eq!(u(&l["mean"]), v.iter().sum::<u64>() / n, "{k:?}");
        for (q, f) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, v.len());
            let want = v[rank - 1] as f64;
            let got = u(&l[f]) as f64;
            assert!(
                (got - want).abs() <= want * 0.01 + 1.0,
                "{k:?} {f}: {got} vs {want} over {n}"
            );
        }
        if n > 64 {
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} edges past the exact values");
    // The sketch merges exactly: one worker and two give the same latencies. This capture
    // names more resources per edge than a list keeps, and which ones a full list displaces
    // depends on which worker each connection went to (documented): the lists and the
    // displacement count are left out of the comparison, everything else must be equal.
    let without_displacement = |threads: &str| {
        let mut d = analyze(&["--threads", threads, &pcap]);
        assert!(u(&d["limits"]["resources_displaced"]) > 0);
        d["limits"]["resources_displaced"] = serde_json::Value::Null;
        for e in d["edges"].as_array_mut().unwrap() {
            e["top_resources"] = serde_json::Value::Null;
        }
        d
    };
    assert_eq!(without_displacement("1"), without_displacement("2"));
}
