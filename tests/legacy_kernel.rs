//! Old kernels, emulated on this one: `wiremap-seccomp` (tests/support/seccomp.rs) installs a
//! seccomp filter and execs wiremap.
//!
//! * `linux-3.10`: every system call newer than Linux 3.10 answers ENOSYS (CentOS 7's surface).
//!   `analyze` must give the very same document, and `capture` must work.
//! * `no-fanout-no-v3`: PACKET_FANOUT and a TPACKET_V3 ring are refused with EINVAL, as a kernel
//!   before 3.1 does: `capture` must fall back to TPACKET_V2 and one socket by itself, and
//!   still match what the clients did.
//!
//! The capture half needs root (network namespaces, packet sockets) and tests/legacy/lab.sh's
//! servers and clients (nginx, redis-server, curl, redis-cli; .ci/run installs them). Names
//! wg-*, addresses 10.212.0.0/24 and fd00:212::/64 only.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn seccomp() -> &'static str {
    env!("CARGO_BIN_EXE_wiremap-seccomp")
}

/// `wiremap ARGS` under PROFILES (outermost first), its exit status and output.
fn run_under(profiles: &[&str], args: &[&str]) -> std::process::Output {
    let mut cmd = Vec::new();
    for p in profiles {
        cmd.extend([seccomp(), p, "--"]);
    }
    cmd.push(bin());
    cmd.extend_from_slice(args);
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("the launcher runs")
}

#[test]
fn the_profiles_reach_the_execed_program() {
    // The filter survives exec: the kernel reports it (mode 2 = filter) for the new image.
    for profile in ["linux-3.10", "no-fanout-no-v3"] {
        let out = Command::new(seccomp())
            .args([profile, "--", "cat", "/proc/self/status"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{profile}: {out:?}");
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(status.contains("\nSeccomp:\t2\n"), "{profile}: {status}");
        assert!(status.contains("\nNoNewPrivs:\t1\n"), "{profile}: {status}");
    }
    let plain = Command::new("cat")
        .arg("/proc/self/status")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("\nSeccomp:\t0\n"));
    // Unknown profile or missing command: usage, no exec.
    let out = Command::new(seccomp())
        .args(["linux-2.4", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn analyze_is_identical_on_the_linux_3_10_surface() {
    let lab = fixture("lab.pcap");
    let cases: [&[&str]; 3] = [
        &[],
        &["--threads", "2"],
        &["--threads", "2", "--filter", "tcp port 80 or udp port 53"],
    ];
    for extra in cases {
        let mut args = vec!["analyze", "-q"];
        args.extend_from_slice(extra);
        args.push(&lab);
        let plain = run_under(&[], &args);
        assert!(plain.status.success(), "{args:?}: {plain:?}");
        let doc: Value = serde_json::from_slice(&plain.stdout).unwrap();
        assert!(
            u(&doc["totals"]["l7_requests"]) > 0,
            "{args:?}: an empty document"
        );
        for profiles in [&["linux-3.10"][..], &["linux-3.10", "no-fanout-no-v3"]] {
            let old = run_under(profiles, &args);
            assert!(
                old.status.success(),
                "{profiles:?} {args:?}: {}\n{}",
                old.status,
                String::from_utf8_lossy(&old.stderr)
            );
            assert!(
                old.stdout == plain.stdout,
                "{profiles:?} {args:?}: the document differs"
            );
        }
    }
}

// ------------------------------------------------------------------------------ live capture

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy/lab.sh")
}

/// The lab's namespaces and servers, torn down on drop (also when an assertion fails).
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn up(dir: PathBuf) -> Lab {
        let lab = Lab { dir };
        let out = Command::new("bash")
            .arg(lab_script())
            .arg("up")
            .arg(&lab.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Run the clients; the expected edges they report.
    fn workload(&self, rounds: u32) -> Value {
        let out = Command::new("bash")
            .arg(lab_script())
            .arg("workload")
            .arg(&self.dir)
            .arg(rounds.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh workload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the workload prints JSON")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(lab_script())
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}

/// A running `wiremap capture` in the server namespace.
struct Capture {
    child: Child,
    err: PathBuf,
    out: PathBuf,
}

impl Capture {
    fn start(dir: &Path, name: &str, profiles: &[&str], args: &[&str]) -> Capture {
        let err = dir.join(format!("{name}.err"));
        let out = dir.join(format!("{name}.json"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "wg-srv"]);
        for p in profiles {
            cmd.args([seccomp(), p, "--"]);
        }
        cmd.arg(bin())
            .args(["capture", "--interface", "wgs0", "--threads", "2", "-o"])
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap());
        // ip netns exec and the launcher both exec: this pid is wiremap's.
        let child = cmd.spawn().expect("ip netns exec runs");
        let mut cap = Capture { child, err, out };
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if cap.stderr().contains("wiremap: capturing on") {
                break;
            }
            if let Ok(Some(st)) = cap.child.try_wait() {
                panic!("{name}: capture exited early ({st}): {}", cap.stderr());
            }
            assert!(
                Instant::now() < until,
                "{name}: capture never started: {}",
                cap.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cap
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then the document it wrote.
    fn stop(mut self, name: &str) -> Value {
        // SAFETY: signalling our own child by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{name}: capture did not stop on SIGTERM: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{name}: {status}: {}", self.stderr());
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: no document ({e}): {}", self.stderr()))
    }
}

/// The document's edges against the clients' (only those `keep` selects), exactly.
fn check_edges(name: &str, doc: &Value, expected: &Value, keep: &dyn Fn(&Value) -> bool) {
    let want: Vec<&Value> = expected["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| keep(e))
        .collect();
    let got = doc["edges"].as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: edges {:#}\nwanted {want:#?}",
        doc["edges"]
    );
    for w in want {
        let g = edge(
            doc,
            w["client"].as_str().unwrap(),
            w["server"].as_str().unwrap(),
            None,
        );
        let what = format!("{name}: {} -> {}", w["client"], w["server"]);
        assert_eq!(g["transport"], w["transport"], "{what}");
        assert_eq!(g["protocol"], w["protocol"], "{what}");
        for f in ["connections", "requests", "responses", "errors", "codes"] {
            assert_eq!(g[f], w[f], "{what}: {f}");
        }
        assert_eq!(u(&g["failed_connections"]), 0, "{what}");
    }
}

fn tool_present(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn capture_falls_back_by_itself_and_matches_the_clients() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root for network namespaces and packet sockets (CI runs as root)");
        return;
    }
    for tool in ["ip", "nginx", "redis-server", "redis-cli", "curl", "ss"] {
        assert!(tool_present(tool), "{tool} is missing: .ci/run installs it");
    }
    let dir = tmpdir("legacy-kernel");
    let lab = Lab::up(dir.join("lab"));
    let all = |_: &Value| true;
    let http = |e: &Value| e["protocol"] == "http";
    // (name, seccomp profiles outermost first, extra flags, expected ring version and
    // sockets, which expected edges the filter keeps)
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        u64,
        u64,
        &'a dyn Fn(&Value) -> bool,
    );
    let cases: [Case; 6] = [
        // This kernel has both features: the fallbacks below are the filters' doing.
        ("this kernel", &[], &[], 3, 2, &all),
        // Before 3.1: no fanout, no V3 (refused with EINVAL): V2 and one socket by itself.
        ("no-fanout-no-v3", &["no-fanout-no-v3"], &[], 2, 1, &all),
        (
            "no-fanout-no-v3, filter",
            &["no-fanout-no-v3"],
            &["--filter", "tcp port 80"],
            2,
            1,
            &http,
        ),
        // 3.10 itself has V3 (3.2) and fanout (3.1); only newer system calls are missing.
        ("linux-3.10", &["linux-3.10"], &[], 3, 2, &all),
        (
            "linux-3.10 + no-fanout-no-v3",
            &["linux-3.10", "no-fanout-no-v3"],
            &[],
            2,
            1,
            &all,
        ),
        (
            "forced --tpacket 2 --no-fanout",
            &[],
            &["--tpacket", "2", "--no-fanout"],
            2,
            1,
            &all,
        ),
    ];
    for (i, (name, profiles, flags, version, sockets, keep)) in cases.into_iter().enumerate() {
        let cap = Capture::start(&dir, &format!("case{i}"), profiles, flags);
        let expected = lab.workload(2);
        // The last responses are on the wire when the clients return; let the ring hand them over.
        std::thread::sleep(Duration::from_millis(300));
        let doc = cap.stop(name);
        let src = &doc["sources"][0];
        println!(
            "{name}: TPACKET_V{}, {} socket(s), {} packets, kernel_drops {}, forwarded {}",
            src["tpacket_version"],
            src["sockets"],
            src["packets"],
            src["kernel_drops"],
            src["forwarded"]
        );
        assert_eq!(src["kind"], "live", "{name}");
        assert_eq!(src["name"], "wgs0", "{name}");
        assert_eq!(u(&src["tpacket_version"]), version, "{name}: ring version");
        assert_eq!(u(&src["sockets"]), sockets, "{name}: sockets");
        assert_eq!(u(&src["kernel_drops"]), 0, "{name}: kernel drops");
        check_edges(name, &doc, &expected, keep);
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
