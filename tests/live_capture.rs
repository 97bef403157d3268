//! Live capture against real servers: tests/live/lab.sh starts nginx, redis-server,
//! mariadb and dnsmasq (UDP and TCP) in namespace wk-srv and runs curl, redis-cli, mysql and
//! dig from wk-cli over a veth pair; `wiremap capture` listens on the server side. The
//! expected edges come from the clients' own output (curl's status codes and connection
//! counts, redis-cli's replies, mysql -vvv's OK/ERROR lines, dig's status), never from
//! wiremap. tcpdump captures the same interface at the same time: `wiremap analyze` of its
//! file must give the live document, and tshark's count of it the live packet total.
//! Tagged traffic: the recorded file, given a VLAN tag by tcprewrite, is replayed by
//! tcpreplay over a second veth pair (this kernel may have no 8021q module for VLAN
//! sub-interfaces); the receiving end's kernel strips the tag into the ring header.
//!
//! Needs root (namespaces, CAP_NET_RAW); skipped with a printed reason otherwise.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const IFACE: &str = "wks0";

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
        Capture::start_on("wk-srv", IFACE, dir, name, args)
    }

    fn start_on(ns: &str, iface: &str, dir: &Path, name: &str, args: &[&str]) -> Capture {
        Capture::start_env(ns, iface, dir, name, args, &[])
    }

    /// With `env` set for wiremap (the test-only fanout mode).
    fn start_env(
        ns: &str,
        iface: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Capture {
        let stderr = dir.join(format!("{name}.err"));
        let output = dir.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&output);
        let child = Command::new("ip")
            .envs(env.iter().copied())
            .args(["netns", "exec", ns, bin(), "capture", "-i", iface, "-o"])
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
        // The line that says the sockets are in place.
        wait_for_line(&mut c.child, &c.stderr, "capturing on", "wiremap");
        c
    }

    /// Send `sig`, wait (bounded) for a clean exit, return stderr.
    fn stop(mut self, sig: libc::c_int) -> (String, PathBuf) {
        let status = signal_and_wait(&mut self.child, sig, Duration::from_secs(20), "wiremap");
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "wiremap failed ({status}): {err}");
        (err, self.output.clone())
    }
}

/// Bounded wait (10 s) until `child`'s stderr file holds `line`; kills it and fails if not.
fn wait_for_line(child: &mut Child, stderr: &Path, line: &str, what: &str) {
    let t0 = Instant::now();
    loop {
        let err = std::fs::read_to_string(stderr).unwrap_or_default();
        if err.contains(line) {
            return;
        }
        if t0.elapsed() > Duration::from_secs(10) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("{what} did not start: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `sig` to `child` and wait for it to exit within `limit` (killed and failed if not).
fn signal_and_wait(
    child: &mut Child,
    sig: libc::c_int,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not stop within {limit:?} of signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tcpdump writing a file in a namespace, started and stopped like a capture.
struct Tcpdump {
    child: Child,
    stderr: PathBuf,
    file: PathBuf,
}

impl Tcpdump {
    fn start(ns: &str, iface: &str, dir: &Path, name: &str) -> Tcpdump {
        let stderr = dir.join(format!("{name}.tcpdump.err"));
        let file = dir.join(format!("{name}.pcap"));
        let child = Command::new("ip")
            // Immediate mode: libpcap's default 1 s buffer timeout would leave the last
            // packets in tcpdump's ring when SIGINT arrives.
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-n",
                "-U",
            ])
            .args(["-B", "16384", "-Z", "root", "-i", iface])
            .arg("-w")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("tcpdump starts");
        let mut t = Tcpdump {
            child,
            stderr,
            file,
        };
        wait_for_line(&mut t.child, &t.stderr, "listening on", "tcpdump");
        t
    }

    /// SIGINT, bounded wait; the file, checked to have lost nothing.
    fn stop(mut self) -> PathBuf {
        signal_and_wait(
            &mut self.child,
            libc::SIGINT,
            Duration::from_secs(10),
            "tcpdump",
        );
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            err.lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump dropped packets: {err}"
        );
        let count = |what: &str| {
            err.lines()
                .find_map(|l| l.trim().strip_suffix(what)?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("tcpdump did not say '{what}': {err}"))
        };
        assert_eq!(
            count("packets captured"),
            count("packets received by filter"),
            "tcpdump stopped before writing every packet: {err}"
        );
        self.file.clone()
    }
}

/// tshark's packet count of a file (with an optional display filter).
fn tshark_count(file: &Path, display: Option<&str>) -> u64 {
    let mut c = Command::new("tshark");
    c.arg("-n").arg("-r").arg(file);
    if let Some(d) = display {
        c.args(["-Y", d]);
    }
    let out = c
        .arg("-T")
        .arg("fields")
        .arg("-e")
        .arg("frame.number")
        .output();
    let out = out.expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A document without what legitimately differs between a live capture and the file of
/// the same packets: the sources, the window, and timing (latencies and handshake RTTs are
/// measured from each capture's own timestamps; their count must still agree).
fn without_timing(doc: &Value) -> Value {
    let mut d = doc.clone();
    let o = d.as_object_mut().unwrap();
    o.remove("sources");
    o.remove("window");
    for e in o["edges"].as_array_mut().unwrap() {
        let count = e["latency_us"]["count"].clone();
        e["latency_us"] = serde_json::json!({ "count": count });
        if let Some(t) = e.get_mut("tcp").and_then(|t| t.as_object_mut()) {
            t.remove("rtt_us");
        }
    }
    d
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

/// The test-only fanout mode that spreads every connection over the sockets (round robin):
/// every owner gets part of each connection late, through forwarding.
const SPREAD: &[(&str, &str)] = &[("WIREMAP_TEST_FANOUT_MODE", "lb")];

fn forwarded(docs: &[Value]) -> u64 {
    docs.iter()
        .map(|d| d["sources"][0]["forwarded"].as_u64().unwrap_or(0))
        .sum()
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
        "mariadbd",
        "mariadb-install-db",
        "mysql",
        "dnsmasq",
        "curl",
        "redis-cli",
        "dig",
        "ip",
        "nft",
        "tcpdump",
        "tshark",
        "tcprewrite",
        "tcpreplay",
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
    let t_start = Instant::now();
    let lab = Lab::up("live-capture");
    println!("lab up in {:?}", t_start.elapsed());
    let all = |_: &str| true;

    // The default: fanout (V3 where the kernel has it), stopped by SIGTERM, while tcpdump
    // records the same interface. Both are in place before the workload starts, and the lab
    // sends nothing but the workload, so both see the same packets.
    let td = Tcpdump::start("wk-srv", IFACE, &lab.dir, "fanout");
    let cap = Capture::start(&lab.dir, "fanout", &["--threads", "2"]);
    let exp_fanout = lab.workload(3);
    let exp = exp_fanout.clone();
    std::thread::sleep(Duration::from_millis(300));
    let (err, out) = cap.stop(libc::SIGTERM);
    let pcap = td.stop();
    let docs = read_docs(&out, false);
    let (packets, _) = report("fanout", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["kind"], "live");
    assert_eq!(docs[0]["sources"][0]["name"], IFACE);
    assert_eq!(docs[0]["sources"][0]["sockets"], 2);
    // Linux 4.3+ (this machine): the group's program gives every packet to the socket of
    // the worker that owns its connection, so nothing is forwarded.
    assert!(err.contains("fanout cbpf"), "fanout mode: {err}");
    assert_eq!(forwarded(&docs), 0, "fanout cbpf forwarded packets");
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all))
    );
    // Live equals offline: the file of the same packets gives the same document.
    let offline = analyze(&[pcap.to_str().unwrap()]);
    assert_eq!(
        without_timing(&docs[0]),
        without_timing(&offline),
        "live and offline documents of the same packets differ"
    );
    let counted = tshark_count(&pcap, None);
    println!("fanout: tshark counts {counted} packets in tcpdump's file");
    assert_eq!(packets, counted, "live packet total vs tshark's count");
    assert_eq!(u(&docs[0]["totals"]["packets"]), counted);

    // The kernel's own hash (what kernels before 4.3 use): connections land on sockets
    // regardless of their owner, about half the packets are forwarded, counts still match.
    let cap = Capture::start_env(
        "wk-srv",
        IFACE,
        &lab.dir,
        "hash",
        &["--threads", "2"],
        &[("WIREMAP_TEST_FANOUT_MODE", "hash")],
    );
    let exp = lab.workload(1);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    let (packets, _) = report("hash", &docs, &err);
    assert!(err.contains("fanout hash"), "fanout mode: {err}");
    assert!(forwarded(&docs) > 0 && forwarded(&docs) < packets);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all)),
        "fanout by the kernel's hash"
    );

    // Fanout where the kernel spreads every connection over both sockets (round robin):
    // each owner gets about half of each connection late, forwarded, and must still see
    // them in packet-time order.
    let cap = Capture::start_env(
        "wk-srv",
        IFACE,
        &lab.dir,
        "spread",
        &["--threads", "2"],
        SPREAD,
    );
    let exp = lab.workload(2);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    let (packets, _) = report("spread", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["sockets"], 2);
    // Round robin hands each socket every other packet: about half are not the reader's.
    assert!(
        forwarded(&docs) * 4 >= packets && forwarded(&docs) * 4 <= packets * 3,
        "spread: {} of {packets} forwarded",
        forwarded(&docs)
    );
    assert_eq!(u(&docs[0]["limits"]["reorder_forced"]), 0);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all)),
        "spread over both sockets"
    );

    // The reorder bound: with none at all, a spread connection's packets go as they come
    // and the document counts them (the run still ends cleanly with every packet).
    let cap = Capture::start_env(
        "wk-srv",
        IFACE,
        &lab.dir,
        "spread-unbuffered",
        &["--threads", "2", "--reorder-bytes", "0"],
        SPREAD,
    );
    lab.workload(1);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    let (packets, _) = report("spread-unbuffered", &docs, &err);
    let forced = u(&docs[0]["limits"]["reorder_forced"]);
    println!("spread-unbuffered: reorder_forced {forced}");
    assert!(forced > 0 && forced <= packets, "{forced} of {packets}");
    assert_eq!(u(&docs[0]["totals"]["packets"]), packets);
    assert!(err.contains("out of time order"), "{err}");

    // One socket, software dispatch to two workers.
    let cap = Capture::start(&lab.dir, "no-fanout", &["--no-fanout", "--threads", "2"]);
    let exp = lab.workload(2);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    report("no-fanout", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["sockets"], 1);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all))
    );

    // One worker: the ring's reader processes what it reads on its own thread (V3 blocks,
    // and V2 frames).
    for (name, args, version) in [
        ("one-thread", &["--threads", "1"][..], 3),
        (
            "one-thread-v2",
            &["--threads", "1", "--tpacket", "2"][..],
            2,
        ),
    ] {
        let cap = Capture::start(&lab.dir, name, args);
        let exp = lab.workload(2);
        let (err, out) = cap.stop(libc::SIGTERM);
        let docs = read_docs(&out, false);
        report(name, &docs, &err);
        assert_eq!(docs[0]["sources"][0]["sockets"], 1, "{name}");
        assert_eq!(docs[0]["sources"][0]["tpacket_version"], version, "{name}");
        assert_eq!(
            normalise(observed_edges(&docs)),
            normalise(expected_edges(&exp, all)),
            "{name}"
        );
    }

    // Forced TPACKET_V2 and one socket, stopped by SIGINT.
    let cap = Capture::start(
        &lab.dir,
        "v2",
        &["--tpacket", "2", "--no-fanout", "--threads", "2"],
    );
    let exp = lab.workload(2);
    let (err, out) = cap.stop(libc::SIGINT);
    let docs = read_docs(&out, false);
    report("v2-no-fanout", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["tpacket_version"], 2);
    assert_eq!(docs[0]["sources"][0]["sockets"], 1);
    assert_eq!(
        normalise(observed_edges(&docs)),
        normalise(expected_edges(&exp, all))
    );

    // A kernel filter: only redis and DNS over UDP reach wiremap.
    let filter = "tcp port 6379 or udp port 53";
    let cap = Capture::start(
        &lab.dir,
        "filtered",
        &["--filter", filter, "--threads", "2"],
    );
    let exp = lab.workload(2);
    let (err, out) = cap.stop(libc::SIGTERM);
    let docs = read_docs(&out, false);
    report("filtered", &docs, &err);
    assert_eq!(docs[0]["sources"][0]["filter"], filter);
    let wanted: Edges = expected_edges(&exp, |s| s.ends_with(":6379") || s.ends_with(":53"))
        .into_iter()
        .filter(|(k, _)| !k.ends_with("tcp/dns"))
        .collect();
    assert_eq!(normalise(observed_edges(&docs)), normalise(wanted));

    // One-second intervals: several documents that sum to what the clients did, each with
    // its own window; SIGTERM mid-run flushes the last partial interval.
    for (name, extra, env) in [
        ("interval-fanout", &["--threads", "2"][..], &[][..]),
        ("interval-spread", &["--threads", "2"][..], SPREAD),
        (
            "interval-v2",
            &["--threads", "2", "--tpacket", "2", "--no-fanout"][..],
            &[][..],
        ),
        ("interval-one-thread", &["--threads", "1"][..], &[][..]),
    ] {
        let mut args = vec!["--interval", "1"];
        args.extend_from_slice(extra);
        let cap = Capture::start_env("wk-srv", IFACE, &lab.dir, name, &args, env);
        let exp = lab.workload(6);
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

    // The first run's packets again, VLAN-tagged.
    vlan::replay_tests(&lab.dir, &pcap, &exp_fanout);
    println!("live capture test: {:?}", t_start.elapsed());
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

/// VLAN-tagged traffic: the recorded workload, tagged by tcprewrite, replayed by tcpreplay
/// from wkv0 to wkv1 (a veth pair in namespace wk-vl, no addresses: nothing else is sent).
mod vlan {
    use super::*;

    const NS: &str = "wk-vl";

    /// The namespace, deleted even when an assertion fails.
    struct Ns;

    impl Ns {
        fn up() -> Ns {
            // A leftover of an interrupted run (our own name only).
            let _ = Command::new("ip")
                .args(["netns", "del", NS])
                .stderr(Stdio::null())
                .status();
            run_ok(Command::new("ip").args(["netns", "add", NS]));
            let ns = Ns;
            for args in [
                &[
                    "link", "add", "wkv0", "type", "veth", "peer", "name", "wkv1",
                ][..],
                &["link", "set", "wkv0", "addrgenmode", "none"],
                &["link", "set", "wkv1", "addrgenmode", "none"],
                &["link", "set", "wkv0", "up"],
                &["link", "set", "wkv1", "up"],
            ] {
                run_ok(Command::new("ip").args(["-n", NS]).args(args));
            }
            ns
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", NS]).status();
        }
    }

    fn tag(dir: &Path, pcap: &Path, id: u16) -> PathBuf {
        let out = dir.join(format!("vlan{id}.pcap"));
        run_ok(
            Command::new("tcprewrite")
                .arg("--enet-vlan=add")
                .arg(format!("--enet-vlan-tag={id}"))
                .args(["--enet-vlan-cfi=0", "--enet-vlan-pri=0", "-i"])
                .arg(pcap)
                .arg("-o")
                .arg(&out),
        );
        out
    }

    fn replay(file: &Path) {
        run_ok(
            Command::new("timeout")
                // 1000 packets/s: quick, and slow enough for tcpdump writing each packet
                // as it comes (immediate mode).
                .args([
                    "30",
                    "ip",
                    "netns",
                    "exec",
                    NS,
                    "tcpreplay",
                    "-q",
                    "--pps=1000",
                ])
                .args(["-i", "wkv0"])
                .arg(file),
        );
        // Let the receiving rings hand over their last block before the captures stop.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn http(exp: &Value) -> Edges {
        expected_edges(exp, |s| s.ends_with(":80"))
    }

    fn doubled(e: Edges) -> Edges {
        let twice = |v: &Value| -> Value {
            match v {
                Value::Number(n) => Value::from(n.as_u64().unwrap() * 2),
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, n)| (k.clone(), Value::from(u(n) * 2)))
                        .collect(),
                ),
                other => other.clone(),
            }
        };
        e.into_iter()
            .map(|(k, f)| (k, f.iter().map(|(n, v)| (n.clone(), twice(v))).collect()))
            .collect()
    }

    /// `rxvlan`: the receiving veth's rx-vlan-offload setting (ethtool), or None to leave it.
    fn tagged_run(dir: &Path, v100: &Path, untagged: &Path, exp: &Value, rxvlan: Option<&str>) {
        let name = format!("vlan-rx{}", rxvlan.unwrap_or("-default"));
        if let Some(set) = rxvlan {
            run_ok(
                Command::new("ip")
                    .args(["netns", "exec", NS, "ethtool", "-K", "wkv1", "rxvlan", set]),
            );
        }
        let td = Tcpdump::start(NS, "wkv1", dir, &name);
        let start = |iface: &str, suffix: &str, args: &[&str]| {
            Capture::start_on(NS, iface, dir, &format!("{name}-{suffix}"), args)
        };
        let spread = |iface: &str, suffix: &str| {
            let n = format!("{name}-{suffix}");
            Capture::start_env(NS, iface, dir, &n, &["--threads", "2"], SPREAD)
        };
        // Fanout (the default with two threads) on both ends, and one socket for comparison.
        let rcv = start("wkv1", "rcv", &["--threads", "2"]);
        let rcv1 = start("wkv1", "rcv1", &["--threads", "2", "--no-fanout"]);
        let rcv_spread = spread("wkv1", "rcvspread");
        let rcv80 = start("wkv1", "rcv80", &["--filter", "tcp port 80"]);
        let rcv_vlan80 = start("wkv1", "rcvvlan80", &["--filter", "vlan and tcp port 80"]);
        let snd = start("wkv0", "snd", &["--threads", "2"]);
        let snd1 = start("wkv0", "snd1", &["--threads", "2", "--no-fanout"]);
        let snd_spread = spread("wkv0", "sndspread");
        let snd80 = start("wkv0", "snd80", &["--filter", "tcp port 80"]);
        replay(v100);
        let mut docs = BTreeMap::new();
        for (k, c) in [
            ("rcv", rcv),
            ("rcv1", rcv1),
            ("rcvspread", rcv_spread),
            ("rcv80", rcv80),
            ("rcvvlan80", rcv_vlan80),
            ("snd", snd),
            ("snd1", snd1),
            ("sndspread", snd_spread),
            ("snd80", snd80),
        ] {
            let (err, out) = c.stop(libc::SIGTERM);
            let d = read_docs(&out, false);
            report(&format!("{name}-{k}"), &d, &err);
            docs.insert(k, d);
        }
        let file = td.stop();
        let all = |_: &str| true;
        let n = tshark_count(untagged, None);

        // Received: the kernel took the tag into the ring header; wiremap put it back, so
        // the document is the one of the untagged file (the tag changes no count), with
        // fanout, with one socket, and with every connection spread over both sockets.
        let offline = without_timing(&analyze(&[untagged.to_str().unwrap()]));
        for k in ["rcv", "rcv1", "rcvspread"] {
            let d = &docs[k];
            let sockets = if k == "rcv1" { 1 } else { 2 };
            assert_eq!(d[0]["sources"][0]["sockets"], sockets, "{name}-{k}");
            assert_eq!(u(&d[0]["sources"][0]["packets"]), n, "{name}-{k}: packets");
            assert_eq!(
                normalise(observed_edges(d)),
                normalise(expected_edges(exp, all)),
                "{name}-{k}: tagged traffic, live"
            );
            assert_eq!(
                without_timing(&d[0]),
                offline,
                "{name}-{k}: live tagged vs the untagged file"
            );
        }
        // The kernel filter runs on the frame without its tag: `tcp port 80` matches...
        let rcv80 = &docs["rcv80"];
        assert_eq!(
            u(&rcv80[0]["sources"][0]["packets"]),
            tshark_count(untagged, Some("tcp.port == 80")),
            "{name}: live 'tcp port 80' on tagged traffic"
        );
        assert_eq!(normalise(observed_edges(rcv80)), normalise(http(exp)));
        // ...and `vlan and …` (which tests the frame for an inline tag) matches nothing.
        assert_eq!(u(&docs["rcvvlan80"][0]["sources"][0]["packets"]), 0);

        // tcpdump's file holds the tags again (libpcap puts them back too): there the same
        // traffic needs `vlan and tcp port 80`, and `tcp port 80` matches nothing.
        assert_eq!(tshark_count(&file, Some("vlan.id == 100")), n);
        let f = file.to_str().unwrap();
        assert_eq!(
            u(&analyze(&["--filter", "tcp port 80", f])["totals"]["packets"]),
            0
        );
        let off80 = analyze(&["--filter", "vlan and tcp port 80", f]);
        assert_eq!(normalise(observed_edges(&[off80])), normalise(http(exp)));

        // Sent: a frame a packet socket transmits keeps its tag inline on the sending
        // veth, so there the kernel filter sees the tag and `tcp port 80` matches nothing;
        // the tag is decoded from the frame and the edges are the same. This is where the
        // kernel's fanout hash spreads connections over both sockets by itself (it
        // dissects the tagged frames differently per direction): fanout must still match.
        for k in ["snd", "snd1", "sndspread"] {
            let d = &docs[k];
            let sockets = if k == "snd1" { 1 } else { 2 };
            assert_eq!(d[0]["sources"][0]["sockets"], sockets, "{name}-{k}");
            assert_eq!(u(&d[0]["sources"][0]["packets"]), n, "{name}-{k}: packets");
            assert_eq!(u(&d[0]["limits"]["reorder_forced"]), 0, "{name}-{k}");
            assert_eq!(
                normalise(observed_edges(d)),
                normalise(expected_edges(exp, all)),
                "{name}-{k}: sending side"
            );
        }
        assert_eq!(u(&docs["snd80"][0]["sources"][0]["packets"]), 0);
    }

    pub fn replay_tests(dir: &Path, untagged: &Path, exp: &Value) {
        let _ns = Ns::up();
        let v100 = tag(dir, untagged, 100);
        let v200 = tag(dir, untagged, 200);
        let n = tshark_count(untagged, None);
        assert_eq!(tshark_count(&v100, Some("vlan.id == 100")), n);

        // What the capture attaches is what libpcap compiles for the live interface.
        let mine = run_ok(Command::new("ip").args([
            "netns",
            "exec",
            NS,
            bin(),
            "filter",
            "--interface",
            "wkv1",
            "tcp port 80",
        ]));
        let theirs = run_ok(Command::new("ip").args([
            "netns",
            "exec",
            NS,
            "tcpdump",
            "-d",
            "-s",
            "65600",
            "-i",
            "wkv1",
            "tcp port 80",
        ]));
        assert_eq!(mine, theirs, "wiremap filter --interface vs tcpdump -d");

        // rx-vlan-offload on and off where ethtool can switch it (veth can).
        let ethtool = Command::new("ip")
            .args(["netns", "exec", NS, "ethtool", "-k", "wkv1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ethtool {
            tagged_run(dir, &v100, untagged, exp, Some("on"));
            tagged_run(dir, &v100, untagged, exp, Some("off"));
        } else {
            println!("vlan: ethtool missing, rx-vlan-offload left as it is");
            tagged_run(dir, &v100, untagged, exp, None);
        }

        // The same connections on VLAN 100 and then on VLAN 200: with --vlan-key they are
        // two connections each (every count doubles); without it one, the second copy's
        // segments being retransmissions.
        let keyed = Capture::start_on(NS, "wkv1", dir, "vlan-key", &["--vlan-key"]);
        let plain = Capture::start_on(NS, "wkv1", dir, "vlan-nokey", &[]);
        replay(&v100);
        replay(&v200);
        let (err, out) = keyed.stop(libc::SIGTERM);
        let keyed = read_docs(&out, false);
        report("vlan-key", &keyed, &err);
        let (err, out) = plain.stop(libc::SIGTERM);
        let plain = read_docs(&out, false);
        report("vlan-nokey", &plain, &err);
        assert_eq!(u(&keyed[0]["sources"][0]["packets"]), 2 * n);
        assert_eq!(
            normalise(observed_edges(&keyed)),
            normalise(doubled(expected_edges(exp, |_| true))),
            "--vlan-key: one connection per VLAN"
        );
        let want = expected_edges(exp, |_| true);
        let got = observed_edges(&plain);
        for (k, f) in &want {
            if k.contains(" tcp/") {
                assert_eq!(
                    got[k]["connections"], f["connections"],
                    "{k} without --vlan-key"
                );
            }
        }
        for e in plain[0]["edges"].as_array().unwrap() {
            if e["transport"] == "tcp" {
                assert!(u(&e["tcp"]["retransmissions"]) > 0, "{e}");
            }
        }
    }
}
