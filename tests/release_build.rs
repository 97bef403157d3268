//! The release build users deploy: `scripts/build-release.sh` optimises wiremap with a profile
//! of its own runs (PGO, `scripts/pgo-profile.sh`). Only speed may differ: the documents and
//! records it writes must be byte for byte those of the ordinary build.
//!
//! Needs root (the profile's live runs use a private network namespace), tcpreplay and
//! llvm-19, all from `.ci/run`. It builds the crate twice more (instrumented, then optimised).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn the_pgo_build_writes_what_the_plain_build_writes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the profile's live runs need root (CI runs as root)");
        return;
    }
    let (pgo, log) = build_script("build-release.sh");
    println!("{}", log.trim());
    // A silent fallback to a plain build would ship a slower binary.
    assert!(log.contains("[build-release] PGO: yes"), "{log}");
    assert!(log.contains("training live capture"), "{log}");
    assert_ne!(pgo, PathBuf::from(bin()), "a binary of its own");

    // A generated capture (seed 3: not one the profile was trained on) and the recordings.
    let dir = tmpdir("release-build");
    let generated = dir.join("mix.pcap");
    let gen = Command::new(env!("CARGO_BIN_EXE_wiremap-gen"))
        .args([
            "--seed",
            "3",
            "--packets",
            "40000",
            "--flows-concurrent",
            "3000",
        ])
        .arg("-o")
        .arg(&generated)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{gen:?}");
    let generated = generated.to_string_lossy().into_owned();
    let (lab, router) = (fixture("lab.pcap"), fixture("lab-router.pcapng"));
    let fullnat: Vec<String> = ["client.pcap", "director.pcapng", "rs1.pcap", "rs2.pcap"]
        .iter()
        .map(|f| fixture(&format!("lvs/fullnat/{f}")))
        .collect();
    let mut cases: Vec<Vec<String>> = vec![
        vec![generated.clone()],
        vec!["--threads".into(), "1".into(), generated.clone()],
        vec!["--no-l7".into(), generated],
        vec![lab],
        vec!["--threads".into(), "2".into(), router],
    ];
    cases.push(fullnat);
    for (i, files) in cases.iter().enumerate() {
        let records = |who: &str| dir.join(format!("{who}-{i}.jsonl"));
        let doc_of = |exe: &Path, who: &str| {
            let out = Command::new(exe)
                .args(["analyze", "-q", "--records"])
                .arg(records(who))
                .args(files)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{who} {files:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let plain = doc_of(Path::new(bin()), "plain");
        let optimised = doc_of(&pgo, "pgo");
        let doc: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert!(u(&doc["totals"]["packets"]) > 0, "{files:?}");
        assert!(plain == optimised, "{files:?}: the documents differ");
        // Workers write records as exchanges complete, interleaved differently from run to
        // run: the same lines, in any order.
        let lines = |who: &str| {
            let text = std::fs::read_to_string(records(who)).unwrap();
            let mut v: Vec<String> = text.lines().map(str::to_owned).collect();
            v.sort_unstable();
            v
        };
        let (a, b) = (lines("plain"), lines("pgo"));
        assert!(a == b, "{files:?}: the records differ");
        println!(
            "{files:?}: same document ({} bytes) and records ({} lines)",
            plain.len(),
            a.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
