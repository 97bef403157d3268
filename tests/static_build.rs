//! The release build for old hosts: `scripts/build-static.sh` must give a binary with no
//! dynamic dependencies that runs from an EMPTY chroot (no libc, no /dev, no /etc) and writes
//! the same document as the ordinary build; it is optimised with a profile of its own runs
//! (PGO). Names in filters come from the chroot's own /etc/hosts and /etc/services (never
//! NSS), and are refused cleanly without them.
//!
//! Needs root (chroot) and network access to the Debian mirror the first time (the script
//! fetches libpcap's source package; later runs reuse target/static-deps). It builds the whole
//! crate twice more for the explicit target (instrumented for the profile, then optimised
//! with it): a few minutes.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

/// wiremap (normal or static) in `dir` as cwd, or chrooted into `dir`.
fn run_in(dir: &Path, cmd: &[&str], chroot: bool) -> std::process::Output {
    let out = if chroot {
        // chroot(1) changes to the new root's "/", so relative names resolve the same way.
        Command::new("chroot").arg(dir).args(cmd).output()
    } else {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .current_dir(dir)
            .output()
    };
    out.expect("runs")
}

#[test]
fn static_binary_runs_from_an_empty_chroot() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: chroot needs root (CI runs as root)");
        return;
    }
    let (stat, log) = build_script("build-static.sh");
    // As root, with .ci/run's tcpreplay and llvm-19, the profile step must have run: a
    // silent fallback to a plain build would ship a slower binary.
    assert!(
        log.contains("[build-static] PGO: yes"),
        "the static build ran without PGO:\n{}",
        log.lines()
            .filter(|l| l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Nothing dynamic: no interpreter, no needed libraries.
    let file = Command::new("file").arg("-b").arg(&stat).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout).to_string();
    println!("file: {file}");
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    assert!(!file.contains("interpreter"), "{file}");
    let ldd = Command::new("ldd").arg(&stat).output().unwrap();
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    println!("ldd: {}", ldd.trim());
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{ldd}"
    );
    assert!(!ldd.contains("=>"), "{ldd}");
    let dynamic = Command::new("readelf")
        .args(["-d"])
        .arg(&stat)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&dynamic.stdout).contains("(NEEDED)"),
        "needed libraries listed"
    );

    // An empty root: the binary and the capture only.
    let root = tmpdir("static-chroot");
    std::fs::copy(&stat, root.join("wiremap")).unwrap();
    std::fs::copy(fixture("lab.pcap"), root.join("lab.pcap")).unwrap();
    let normal = bin();
    let cases: [&[&str]; 3] = [
        &["analyze", "-q", "lab.pcap"],
        &["analyze", "-q", "--threads", "2", "lab.pcap"],
        &[
            "analyze",
            "-q",
            "--threads",
            "2",
            "--filter",
            "tcp port 80 or udp port 53",
            "lab.pcap",
        ],
    ];
    for args in cases {
        let mut plain_cmd = vec![normal];
        plain_cmd.extend_from_slice(args);
        let plain = run_in(&root, &plain_cmd, false);
        assert!(plain.status.success(), "{args:?}: {plain:?}");
        let mut jailed_cmd = vec!["/wiremap"];
        jailed_cmd.extend_from_slice(args);
        let jailed = run_in(&root, &jailed_cmd, true);
        assert!(
            jailed.status.success(),
            "chroot {args:?}: {}\n{}",
            jailed.status,
            String::from_utf8_lossy(&jailed.stderr)
        );
        assert!(
            jailed.stdout == plain.stdout,
            "chroot {args:?}: the document differs"
        );
        let doc: serde_json::Value = serde_json::from_slice(&jailed.stdout).unwrap();
        assert!(u(&doc["totals"]["packets"]) > 0);
    }

    // The static binary on the Linux 3.10 system-call surface too (outside the chroot: a
    // 3.10 host has /dev/urandom, which the random seed falls back to).
    let seccomp = env!("CARGO_BIN_EXE_wiremap-seccomp");
    let lab = fixture("lab.pcap");
    let old = Command::new(seccomp)
        .args(["linux-3.10", "--"])
        .arg(&stat)
        .args(["analyze", "-q", "--threads", "2", &lab])
        .output()
        .unwrap();
    let plain = run(&["analyze", "-q", "--threads", "2", &lab]);
    assert!(
        old.status.success(),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    assert!(
        old.stdout == plain.stdout,
        "static under linux-3.10: the document differs"
    );

    // Names: without /etc/hosts and /etc/services in the chroot they are refused cleanly...
    for (expr, file) in [
        ("host somehost", "/etc/hosts"),
        ("tcp port http", "/etc/services"),
    ] {
        let out = run_in(
            &root,
            &["/wiremap", "analyze", "-q", "--filter", expr, "lab.pcap"],
            true,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expr}: {err}");
        assert!(out.stdout.is_empty(), "{expr}: no document");
        assert!(
            err.contains(file) && err.lines().count() == 1,
            "{expr}: {err}"
        );
    }
    // ...and with them, resolved from those files (tcpdump's numeric reading is the reference).
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n10.203.0.130 somehost\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/services"), "http 80/tcp www\n").unwrap();
    for (expr, numeric) in [
        ("host somehost", "host 10.203.0.130"),
        ("tcp port http", "tcp port 80"),
    ] {
        let out = run_in(
            &root,
            &["/wiremap", "analyze", "-q", "--filter", expr, "lab.pcap"],
            true,
        );
        assert!(
            out.status.success(),
            "{expr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = tcpdump_count(&lab, numeric).expect("tcpdump reads the fixture");
        println!(
            "chroot --filter '{expr}': {} packets, tcpdump '{numeric}': {want}",
            doc["totals"]["packets"]
        );
        assert!(want > 0);
        assert_eq!(u(&doc["totals"]["packets"]), want, "{expr}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
