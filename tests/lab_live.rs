//! Real traffic, recorded now: fixtures/lab/record.sh starts nginx, redis-server, mariadb
//! and dnsmasq in a network namespace, runs curl, redis-cli, mysql and dig from another,
//! captures on the server side and on a router between them, and writes the expected edges
//! from what the clients reported. wiremap must agree with that run, not with a stored one.
//!
//! Needs root (network namespaces) and the lab's packages, which .ci/run installs.

mod common;
use common::*;
use std::process::Command;

#[test]
fn freshly_recorded_lab_traffic_matches_the_clients() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to create network namespaces (CI runs as root)");
        return;
    }
    for tool in [
        "nginx",
        "redis-server",
        "mariadbd",
        "dnsmasq",
        "dumpcap",
        "tcpdump",
        "dig",
        "curl",
        "redis-cli",
        "mysql",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success());
        assert!(
            found.unwrap_or(false),
            "{tool} is missing: .ci/run installs it"
        );
    }
    let dir = tmpdir("lab-live");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lab/record.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "record.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (capture, expected) in [
        ("lab.pcap", "lab.expected.json"),
        ("lab-router.pcapng", "lab-router.expected.json"),
    ] {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(expected)).unwrap()).unwrap();
        check_against_expected(dir.join(capture).to_str().unwrap(), &expected);
    }
}
