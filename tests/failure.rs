//! Clean failure: a worker that panics, a worker that panics while the reader is blocked
//! sending to it, and a records file that cannot be written each end the run with exit
//! code 1 and one line on standard error naming what failed — never a hang (every run here
//! is bounded by a timeout) and never a panic trace.
//!
//! Worker panics are injected with the test hook `WIREMAP_FAULT_INJECT=panic-at-packet:N`.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run wiremap with `env`, killing it if it has not finished within `limit`.
/// Returns (exit code, stdout, stderr).
fn run_bounded(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, Vec<u8>, String) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tmpdir(&format!("failure-run{run}"));
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("wiremap runs");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wiremap {args:?} did not finish within {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read(&out_path).unwrap();
    let err = String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned();
    (status.code(), out, err)
}

/// `wiremap analyze -q` of `file` with `threads` workers, the reader running one of them or
/// not (`reader`: on, off).
fn analyze_args<'a>(threads: &'a str, reader: &'a str, file: &'a str) -> [&'a str; 7] {
    [
        "analyze",
        "-q",
        "--threads",
        threads,
        "--reader-worker",
        reader,
        file,
    ]
}

/// 1-based number of the first Ethernet/IPv4/TCP frame carrying payload, found with the
/// tests' own pcap reader (not wiremap's).
fn first_tcp_data_frame(path: &str) -> usize {
    let (linktype, recs) = read_pcap(path);
    assert_eq!(linktype, 1);
    recs.iter()
        .position(|r| {
            let d = &r.data;
            d.len() > 54 && d[12..14] == [0x08, 0x00] && d[23] == 6 && {
                let ihl = usize::from(d[14] & 0x0f) * 4;
                let doff = usize::from(d[14 + ihl + 12] >> 4) * 4;
                let total = usize::from(u16::from_be_bytes([d[16], d[17]]));
                total > ihl + doff
            }
        })
        .expect("the lab capture has TCP data")
        + 1
}

#[test]
fn a_worker_panic_is_one_line_naming_the_packet() {
    let lab = fixture("lab.pcap");
    let n = first_tcp_data_frame(&lab);
    let hook = format!("panic-at-packet:{n}");
    // Worker threads only, and the reading thread running a worker (with one worker, the
    // only one: the panic is on the reader's own thread).
    for (threads, reader) in [("1", "off"), ("2", "off"), ("1", "on"), ("2", "on")] {
        let (code, out, err) = run_bounded(
            &analyze_args(threads, reader, &lab),
            &[("WIREMAP_FAULT_INJECT", &hook)],
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(1), "threads {threads}, reader {reader}: {err}");
        assert!(out.is_empty(), "no document after an internal error");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("wiremap: internal error: worker ")
                && err.contains(&format!("failed at packet {n} of the input"))
                && err.contains("injected fault"),
            "{err}"
        );
        if (threads, reader) == ("1", "on") {
            assert!(
                err.starts_with("wiremap: internal error: worker 0 "),
                "{err}"
            );
        }
        // The place of the panic is named (file and line), not a backtrace.
        assert!(err.contains("src/pipeline/worker.rs:"), "{err}");
    }
    // Without the hook the same run succeeds: the failure is the injected one.
    let doc = analyze(&[&lab]);
    assert!(u(&doc["totals"]["packets"]) > 0);
}

/// One connection, so every packet goes to one worker: the reader fills that worker's queue
/// (4 batches of 512) and blocks sending to it. The hook makes the worker wait until its
/// queue is full before failing, so the reader is blocked at that moment.
#[test]
fn a_worker_panic_while_the_reader_is_blocked_does_not_hang() {
    let mut c = TcpConv::new(([10, 9, 2, 1], 40000), ([10, 9, 2, 2], 80), (1, 1));
    for _ in 0..60_000 {
        c.send(true, b"GET /x HTTP/1.1\r\n\r\n");
    }
    let dir = tmpdir("blocked");
    let f = dir.join("one-flow.pcap");
    write_pcap(&f, 1, &c.recs);
    let f = f.to_str().unwrap();
    // With the reading thread running worker 0 too ("on"), the one connection goes to one
    // of the two: to the reader's own (a panic on the reader's thread) or to the other
    // (the reader waits on its full queue instead of blocking the send).
    for (threads, reader, at) in [
        ("1", "off", "5"),
        ("2", "off", "30000"),
        ("2", "on", "30000"),
    ] {
        let started = Instant::now();
        let (code, out, err) = run_bounded(
            &analyze_args(threads, reader, f),
            &[("WIREMAP_FAULT_INJECT", &format!("panic-at-packet:{at}"))],
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("failed at packet {at} of the input")),
            "{err}"
        );
        println!(
            "threads {threads}, reader worker {reader}, panic at {at}: exit 1 after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_records_file_that_cannot_be_written_is_an_error() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("skipped: /dev/full is absent");
        return;
    }
    let lab = fixture("lab.pcap");
    let (code, out, err) = run_bounded(
        &["analyze", "-q", "--records", "/dev/full", &lab],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write records") && err.contains("No space left on device"),
        "{err}"
    );
    // The same records to a writable file: the lab has exchanges to write.
    let dir = tmpdir("records-ok");
    let rec = dir.join("records.jsonl");
    analyze(&["--records", rec.to_str().unwrap(), &lab]);
    assert!(std::fs::metadata(&rec).unwrap().len() > 0);
}

#[test]
fn a_misspelt_fault_hook_is_refused() {
    let (code, _, err) = run_bounded(
        &["analyze", "-q", &fixture("lab.pcap")],
        &[("WIREMAP_FAULT_INJECT", "panic-at:3")],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("WIREMAP_FAULT_INJECT"), "{err}");
}

/// Live capture: a worker that panics (fanout, the default, and one socket) ends the capture
/// with exit code 1 and a line naming the packet, not a hang or a trace. Root only (a packet
/// socket on `lo`); the traffic is UDP datagrams to 127.0.0.1:9, sent until wiremap exits.
#[test]
fn a_live_worker_panic_is_reported_with_its_packet() {
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root for a packet socket (CI runs as root)");
        return;
    }
    for mode in [&[][..], &["--no-fanout"][..]] {
        let dir = tmpdir("failure-live");
        let err_path = dir.join("stderr");
        let mut args = vec!["capture", "-i", "lo", "--duration", "30", "--threads", "2"];
        args.extend_from_slice(mode);
        let mut child = Command::new(bin())
            .args(&args)
            .env("WIREMAP_FAULT_INJECT", "panic-at-packet:20")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
            .spawn()
            .expect("wiremap runs");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(25) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("capture {mode:?} did not end after its worker's fault (a hang)");
            }
            // Sports vary so that both workers get packets.
            for _ in 0..4 {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let _ = s.send_to(b"x", "127.0.0.1:9");
            }
            let _ = sock.send_to(b"x", "127.0.0.1:9");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        println!("{mode:?}: {stderr}");
        assert_eq!(status.code(), Some(1), "{mode:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("internal error"))
            .unwrap_or_else(|| panic!("{mode:?}: no error line in {stderr}"));
        assert!(
            line.contains("failed at packet") && line.contains("injected fault"),
            "{mode:?}: {line}"
        );
        assert!(
            !stderr.contains("panicked at"),
            "{mode:?}: a panic trace: {stderr}"
        );
    }
}
