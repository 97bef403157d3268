//! Where a capture comes from: a file, standard input (`-`), a pipe (`<(zcat …)`, a FIFO),
//! gzip-compressed or not. Each gives the document the plain file gives, but for the
//! source's name; a gzip stream cut short or broken is reported like a cut or broken file.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

/// `wiremap ARGS` with `input` written to its standard input in small pieces with pauses,
/// so the reader sees short reads, as from a pipe fed by a slow producer.
fn run_fed(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wiremap runs");
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    let feeder = std::thread::spawn(move || {
        for (i, piece) in input.chunks(7_001).enumerate() {
            // The reader may stop early on bad input: a closed pipe ends the feeding.
            if stdin.write_all(piece).is_err() {
                return;
            }
            if i % 4 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    });
    let out = child.wait_with_output().expect("wiremap ends");
    feeder.join().expect("the feeder ends");
    out
}

/// The document, with its sources' name (the only thing a path changes; a pcapng has a
/// source per interface) set aside, and that name.
fn doc_without_name(out: &Output) -> (serde_json::Value, String) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut names = std::collections::BTreeSet::new();
    for s in doc["sources"].as_array_mut().expect("sources") {
        names.insert(s["name"].as_str().unwrap_or_default().to_string());
        s["name"] = serde_json::Value::Null;
    }
    assert_eq!(names.len(), 1, "{names:?}");
    (doc, names.into_iter().next().unwrap_or_default())
}

/// `got` equals `want`, or a panic naming the first top-level field that differs (the
/// documents are too long to print whole).
fn assert_same(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    if got != want {
        let field = want
            .as_object()
            .and_then(|w| w.keys().find(|k| got.get(k.as_str()) != w.get(k.as_str())))
            .cloned()
            .unwrap_or_default();
        panic!(
            "{what}: documents differ, first in \"{field}\": {} vs {}",
            got[&field], want[&field]
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The captures every check runs on: classic pcap and pcapng, both recorded by the project.
fn captures() -> [String; 2] {
    [fixture("lab.pcap"), fixture("lab-router.pcapng")]
}

#[test]
fn standard_input_gives_the_document_the_file_gives() {
    for f in captures() {
        let (want, _) = doc_without_name(&run(&["analyze", "-q", &f]));
        let out = run_fed(&["analyze", "-q", "-"], std::fs::read(&f).unwrap());
        let (got, name) = doc_without_name(&out);
        assert_same(&got, &want, &f);
        assert_eq!(name, "-");
        assert!(want["totals"]["packets"].as_u64().unwrap() > 100, "{f}");
    }
}

#[test]
fn a_named_pipe_is_read_like_a_file() {
    let dir = tmpdir("fifo");
    for (i, f) in captures().iter().enumerate() {
        let (want, _) = doc_without_name(&run(&["analyze", "-q", f]));
        let fifo = dir.join(format!("capture-{i}"));
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let (src, dst) = (f.clone(), fifo.clone());
        // Opening a FIFO for writing waits for its reader: wiremap, started next.
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(dst).unwrap();
            w.write_all(&std::fs::read(src).unwrap()).unwrap();
        });
        let out = run(&["analyze", "-q", fifo.to_str().unwrap()]);
        writer.join().unwrap();
        // Its size is 0, which once read as "empty file".
        let (got, name) = doc_without_name(&out);
        assert_same(&got, &want, f);
        assert_eq!(name, fifo.to_str().unwrap());
    }
}

#[test]
fn gzip_compressed_captures_are_read_as_they_are() {
    let dir = tmpdir("gzip");
    for (i, f) in captures().iter().enumerate() {
        let plain = std::fs::read(f).unwrap();
        let (want, _) = doc_without_name(&run(&["analyze", "-q", f]));
        // One member, as a file and on standard input.
        let gz = dir.join(format!("capture-{i}.gz"));
        std::fs::write(&gz, gzip(&plain)).unwrap();
        let (got, _) = doc_without_name(&run(&["analyze", "-q", gz.to_str().unwrap()]));
        assert_same(&got, &want, &format!("{f}: gzip file"));
        let (got, _) = doc_without_name(&run_fed(&["analyze", "-q", "-"], gzip(&plain)));
        assert_same(&got, &want, &format!("{f}: gzip on standard input"));
        // Two members, split inside a record (`cat a.gz b.gz`): one stream, as gzip reads it.
        let mut two = gzip(&plain[..plain.len() / 3]);
        two.extend(gzip(&plain[plain.len() / 3..]));
        let (got, _) = doc_without_name(&run_fed(&["analyze", "-q", "-"], two));
        assert_same(&got, &want, &format!("{f}: two gzip members"));
    }
}

/// How many whole classic-pcap records `bytes` (a capture's start) holds: counted here,
/// independently of wiremap's reader.
fn whole_records(bytes: &[u8]) -> u64 {
    let mut at = 24;
    let mut n = 0;
    while let Some(h) = bytes.get(at..at + 16) {
        let caplen = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if at + 16 + caplen > bytes.len() {
            break;
        }
        at += 16 + caplen;
        n += 1;
    }
    n
}

#[test]
fn a_gzip_stream_cut_short_warns_and_reports_what_came_before() {
    let f = fixture("lab.pcap");
    let plain = std::fs::read(&f).unwrap();
    assert_eq!(plain[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let gz = gzip(&plain);
    let cut = &gz[..gz.len() * 3 / 5];
    // What a gzip reader gets out of the cut stream before it fails.
    let mut prefix = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(cut);
    let mut buf = [0u8; 4096];
    while let Ok(n) = dec.read(&mut buf) {
        if n == 0 {
            break;
        }
        prefix.extend_from_slice(&buf[..n]);
    }
    let want = whole_records(&prefix);
    assert!(
        want > 10 && (prefix.len() as u64) < plain.len() as u64,
        "{want}"
    );
    let out = run_fed(&["analyze", "-q", "-"], cut.to_vec());
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("warning")
            && err.contains("standard input")
            && err.contains("gzip stream ends early"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&doc["totals"]["packets"]), want);
}

#[test]
fn broken_or_empty_inputs_are_one_line_and_no_document() {
    let text = b"this is not a capture\n".to_vec();
    let mut broken = gzip(&std::fs::read(fixture("lab.pcap")).unwrap());
    // Past the 10-byte gzip header, the compressed data replaced by noise.
    for (i, b) in broken.iter_mut().enumerate().skip(10) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    for (input, code, words) in [
        (Vec::new(), 3, ["standard input", "empty"]),
        (gzip(b""), 3, ["standard input", "empty"]),
        (gzip(&text), 3, ["standard input", "not a pcap"]),
        (broken, 3, ["standard input", "gzip"]),
    ] {
        let out = run_fed(&["analyze", "-q", "-"], input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(out.stdout.is_empty(), "no document: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(words.iter().all(|w| err.contains(w)), "{words:?}: {err}");
    }
    // Standard input can be read once.
    let out = run(&["analyze", "-q", "-", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only once"));
}

#[test]
fn other_compressions_are_named_with_the_command_that_reads_them() {
    let dir = tmpdir("compressed");
    // Each format's leading bytes (its magic number), then noise.
    for (lead, format, tool) in [
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd", "zstdcat"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz", "xzcat"),
        (&b"BZh9"[..], "bzip2", "bzcat"),
        (&[0x04, 0x22, 0x4d, 0x18][..], "lz4", "lz4cat"),
    ] {
        let f = dir.join(format!("capture.{format}"));
        let mut bytes = lead.to_vec();
        bytes.extend((0..200u32).map(|i| (i * 37) as u8));
        std::fs::write(&f, bytes).unwrap();
        let out = run(&["analyze", "-q", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{format}-compressed")) && err.contains(tool),
            "{format}: {err}"
        );
    }
}

#[test]
fn a_gzip_stream_corrupt_after_its_start_gives_the_partial_document_and_exit_4() {
    let plain = std::fs::read(fixture("lab.pcap")).unwrap();
    let all = whole_records(&plain);
    let mut gz = gzip(&plain);
    // The compressed data's second half replaced by noise.
    let from = gz.len() / 2;
    for (i, b) in gz.iter_mut().enumerate().skip(from) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    let out = run_fed(&["analyze", "-q", "-"], gz);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Inflating noise fails, or yields bytes the capture's reader then refuses.
    assert!(
        err.contains("standard input") && (err.contains("gzip") || err.contains("corrupt")),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a document");
    let got = u(&doc["totals"]["packets"]);
    assert!(got > 0 && got < all, "{got} of {all}");
}
