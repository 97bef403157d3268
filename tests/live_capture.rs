//! Live capture against real servers: tests/live/lab.sh starts nginx, redis-server and
//! dnsmasq in namespace wl-srv and runs curl, redis-cli and dig from wl-cli over a veth
//! pair; `wiremap capture` listens on the server side. The expected edges come from the
//! clients' own output (curl's status codes and connection counts, redis-cli's replies,
//! dig's status), never from wiremap.
//!
//! Needs root (namespaces, CAP_NET_RAW); skipped with a printed reason otherwise.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const IFACE: &str = "wls0";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/live/lab.sh")
}

fn lab_sh(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg("bash")
        .arg(lab_script())
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "lab.sh {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab, torn down even when an assertion fails.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn up(name: &str) -> Lab {
        let dir = tmpdir(name);
        let lab = Lab { dir };
        lab_sh(&["up", lab.dir.to_str().unwrap()]);
        lab
    }

    fn workload(&self, rounds: u32) -> Value {
        serde_json::from_str(&lab_sh(&[
            "workload",
            self.dir.to_str().unwrap(),
            &rounds.to_string(),
        ]))
        .expect("workload prints JSON")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .arg("60")
            .arg("bash")
            .arg(lab_script())
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// A running `wiremap capture` inside the server namespace.
struct Capture {
    child: Child,
    stderr: PathBuf,
    output: PathBuf,
}

impl Capture {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Capture {
        let stderr = dir.join(format!("{name}.err"));
        let output = dir.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&output);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                "wl-srv",
                bin(),
                "capture",
                "-i",
                IFACE,
                "-o",
            ])
            .arg(&output)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("wiremap starts");
        let mut c = Capture {
            child,
            stderr,
            output,
        };
        // Bounded wait for the line that says the sockets are in place.
        let t0 = Instant::now();
        loop {
            let err = std::fs::read_to_string(&c.stderr).unwrap_or_default();
            if err.contains("capturing on") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) || c.child.try_wait().unwrap().is_some() {
                let _ = c.child.kill();
                panic!("wiremap did not start capturing: {err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// Send `sig`, wait (bounded) for a clean exit, return stderr.
    fn stop(mut self, sig: libc::c_int) -> (String, PathBuf) {
        // SAFETY: signalling our own child by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("wiremap did not stop within 20 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "wiremap failed ({status}): {err}");
        (err, self.output.clone())
    }
}

/// The fields the clients can vouch for, per edge key.
type Edges = BTreeMap<String, BTreeMap<String, Value>>;

fn key(e: &Value) -> String {
    format!(
        "{} -> {} {}/{}",
        e["client"].as_str().unwrap(),
        e["server"].as_str().unwrap(),
        e["transport"].as_str().unwrap(),
        e["protocol"].as_str().unwrap()
    )
}

const FIELDS: [&str; 4] = ["connections", "requests", "responses", "errors"];

fn expected_edges(exp: &Value, keep: impl Fn(&str) -> bool) -> Edges {
    let mut m = Edges::new();
    for e in exp["edges"].as_array().unwrap() {
        if !keep(e["server"].as_str().unwrap()) {
            continue;
        }
        let mut f = BTreeMap::new();
        for k in FIELDS {
            f.insert(k.to_string(), e[k].clone());
        }
        f.insert("codes".into(), e["codes"].clone());
        m.insert(key(e), f);
    }
    m
}

/// Sum documents (one, or every interval) into the fields the clients vouch for.
fn observed_edges(docs: &[Value]) -> Edges {
    let mut m = Edges::new();
    for d in docs {
        for e in d["edges"].as_array().unwrap() {
            let f = m.entry(key(e)).or_default();
            for k in FIELDS {
                let v = f.get(k).map(u).unwrap_or(0) + u(&e[k]);
                f.insert(k.to_string(), Value::from(v));
            }
            let mut codes: BTreeMap<String, u64> = f
                .get("codes")
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default();
            for (c, n) in e["codes"].as_object().unwrap() {
                *codes.entry(c.clone()).or_default() += u(n);
            }
            f.insert("codes".into(), serde_json::to_value(codes).unwrap());
        }
    }
    m
}

fn normalise(e: Edges) -> Edges {
    // Codes as sorted maps so key order does not matter.
    e.into_iter()
        .map(|(k, mut f)| {
            if let Some(c) = f.get("codes") {
                let sorted: BTreeMap<String, u64> = serde_json::from_value(c.clone()).unwrap();
                f.insert("codes".into(), serde_json::to_value(sorted).unwrap());
            }
            (k, f)
        })
        .collect()
}

fn read_docs(path: &Path, lines: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("document written");
    if lines {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
            .collect()
    } else {
        vec![serde_json::from_str(&text).expect("one JSON document")]
    }
}

fn report(name: &str, docs: &[Value], err: &str) -> (u64, u64) {
    let packets: u64 = docs.iter().map(|d| u(&d["sources"][0]["packets"])).sum();
    let drops: u64 = docs
        .iter()
        .map(|d| u(&d["sources"][0]["kernel_drops"]))
        .sum();
    let s = &docs[0]["sources"][0];
    println!(
        "{name}: {} document(s), {packets} packets, kernel_drops {drops}, tpacket_version {}, sockets {}, forwarded {}",
        docs.len(),
        s["tpacket_version"],
        s["sockets"],
        docs.iter()
            .map(|d| d["sources"][0]["forwarded"].as_u64().unwrap_or(0))
            .sum::<u64>()
    );
    println!("{name}: stderr: {}", err.trim());
    (packets, drops)
}

#[test]
fn live_capture_matches_the_clients() {
    if !is_root() {
        println!("skipped: needs root for network namespaces and CAP_NET_RAW (CI runs as root)");
        return;
    }
    for tool in [
        "nginx",
        "redis-server",
        "dnsmasq",
        "curl",
        "redis-cli",
        "dig",
        "ip",
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
    let lab = Lab::up("live-capture");
    let all = |_: &str| true;

    // Default ring (V3 with fanout where the kernel has them), stopped by SIGTERM.
    let cap = Capture::start(&lab.dir, "default", &["--threads", "2"]);
    let exp = lab.workload(3);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    report("default", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["kind"], "live");
    assert_eq!(docs[0]["sources"][0]["name"], IFACE);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all))
    );

    // Forced TPACKET_V2 and one socket, stopped by SIGINT.
    let cap = Capture::start(
        &lab.dir,
        "v2",
        &["--tpacket", "2", "--no-fanout", "--threads", "2"],
    );
    let exp = lab.workload(3);
    let (err, out) = cap.stop(libc::SIGINT);
    let docs = read_docs(&out, false);
    report("v2-no-fanout", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["tpacket_version"], 2);
    assert_eq!(docs[0]["sources"][0]["sockets"], 1);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all))
    );

    // A kernel filter: only redis and DNS reach wiremap.
    let filter = "tcp port 6379 or udp port 53";
    let cap = Capture::start(&lab.dir, "filtered", &["--filter", filter]);
    let exp = lab.workload(2);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    report("filtered", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["filter"], filter);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, |s| s.ends_with(":6379") || s.ends_with(":53")))
    );

    // One-second intervals: several documents that sum to what the clients did, each with
    // its own window; SIGTERM mid-run flushes the last partial interval.
    for (name, extra) in [
        ("interval-fanout", &[][..]),
        ("interval-v2", &["--tpacket", "2", "--no-fanout"][..]),
    ] {
        let mut args = vec!["--interval", "1", "--threads", "2"];
        args.extend_from_slice(extra);
        let cap = Capture::start(&lab.dir, name, &args);
        let exp = lab.workload(8);
        let (err, out) = cap.stop(libc::SIGTERM);
        let docs = read_docs(&out, true);
        report(name, &docs, &err);
        assert!(
            docs.len() >= 2,
            "{name}: expected several interval documents, got {}",
            docs.len()
        );
        let windows: Vec<&str> = docs
            .iter()
            .map(|d| d["window"]["start"].as_str().unwrap())
            .collect();
        let mut sorted = windows.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, windows, "{name}: intervals in order, each once");
        assert_eq!(
            normalise(observed_edges(&docs)),
            normalise(expected_edges(&exp, all)),
            "{name}: the intervals sum to the clients' counts"
        );
    }
}

#[test]
fn without_cap_net_raw_one_clear_line_and_failure() {
    if !is_root() {
        println!("skipped: needs root to drop to an unprivileged user");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "capture",
            "-i",
            "lo",
            "--duration",
            "1",
        ])
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "capture without CAP_NET_RAW succeeded"
    );
    assert!(err.contains("CAP_NET_RAW"), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn cap_net_raw_alone_is_enough() {
    if !is_root() {
        println!("skipped: needs root to drop to an unprivileged user");
        return;
    }
    let out = Command::new("timeout")
        .args([
            "20",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+net_raw",
            "--ambient-caps=+net_raw",
            bin(),
            "capture",
            "-i",
            "lo",
            "--duration",
            "1",
        ])
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "capture with CAP_NET_RAW only: {err}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a document");
    assert_eq!(doc["sources"][0]["kind"], "live");
    println!("nobody + CAP_NET_RAW: {}", err.trim());
}
