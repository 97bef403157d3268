//! Replays the saved fuzz inputs: every file in `tests/fuzz-regressions/<target>/` goes
//! through the same harness as the cargo-fuzz target of that name (`tests/fuzz/`), and
//! must come back without a panic, in bounded time. Inputs that once crashed or hung are
//! kept there (named after what they found), with a few ordinary seeds per target.
//!
//! Fuzz again with `bash scripts/fuzz.sh [SECONDS]`.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "fuzz-regressions/harness.rs"]
mod harness;

/// Generous: the slowest saved input takes well under a second in release.
const MAX_PER_INPUT: Duration = Duration::from_secs(20);

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(&data));
        let took = start.elapsed();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if outcome.is_err() {
            failed.push(format!("{name}: panicked"));
        } else if took > MAX_PER_INPUT {
            failed.push(format!("{name}: took {took:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed: {failed:?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn http() {
    replay("http", harness::http);
}

#[test]
fn dns_udp() {
    replay("dns_udp", harness::dns_udp);
}

#[test]
fn dns_tcp() {
    replay("dns_tcp", harness::dns_tcp);
}

#[test]
fn mysql() {
    replay("mysql", harness::mysql);
}

#[test]
fn redis() {
    replay("redis", harness::redis);
}

#[test]
fn tls_sni() {
    replay("tls_sni", harness::tls_sni);
}

#[test]
fn decode() {
    replay("decode", harness::decode);
}

#[test]
fn capture_file() {
    replay("capture_file", harness::capture_file);
}

#[test]
fn pipeline() {
    replay("pipeline", harness::pipeline);
}
