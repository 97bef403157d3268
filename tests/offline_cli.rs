//! The command line: filters agree with tcpdump, `wiremap filter` prints what `tcpdump -d`
//! prints, output is identical whatever `--threads` is, and bad input fails cleanly.

mod common;
use common::*;
use std::process::Command;

#[test]
fn filters_pass_exactly_the_packets_tcpdump_passes() {
    let captures = [
        "zeek/wikipedia.pcap",
        "zeek/dns-edns-ecs.pcap",
        "zeek/vlan-collisions.pcap",
        "suricata-verify/http-ipv6/input.pcap",
    ];
    let exprs = [
        "tcp",
        "udp port 53",
        "tcp port 80 and tcp[tcpflags] & tcp-syn != 0",
        "host 192.168.1.104 or ip6",
        "not arp and greater 200",
        "vlan and tcp",
        "ip6 and udp",
        "tcp[13] & 0x10 != 0 and len < 100",
    ];
    for c in captures {
        let Some(p) = peer(c) else { return };
        for e in exprs {
            let Some(want) = tcpdump_count(&p, e) else {
                // tcpdump refuses it for this link type: so must wiremap.
                let out = run(&["analyze", "-q", "--filter", e, &p]);
                assert_eq!(out.status.code(), Some(2), "{c}: '{e}'");
                continue;
            };
            let doc = analyze(&["--filter", e, &p]);
            assert_eq!(u(&doc["totals"]["packets"]), want, "{c}: '{e}'");
            assert_eq!(doc["sources"][0]["filter"], e);
        }
        // Sources count what was read, before the filter.
        let all = tcpdump_count(&p, "").unwrap();
        let doc = analyze(&["--filter", "udp port 9", &p]);
        assert_eq!(u(&doc["sources"][0]["packets"]), all);
    }
}

#[test]
fn filter_command_prints_the_program_tcpdump_prints() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    // get.pcap's snapshot length is 65535, which sets the accepting `ret`.
    for e in [
        "tcp port 80",
        "udp and (port 53 or port 5353)",
        "ip6 and tcp",
        "vlan 42 and host 10.0.0.1",
        "tcp[13] & 2 != 0",
    ] {
        let ours = run(&["filter", "--snaplen", "65535", e]);
        assert!(ours.status.success());
        let theirs = Command::new("tcpdump")
            .args(["-r", &p, "-d", e])
            .output()
            .unwrap();
        assert!(
            theirs.status.success(),
            "{}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "'{e}'"
        );
    }
    // Another link type, checked against a capture of that link type.
    if let Some(sll2) = peer("suricata-verify/decode-sll2-01/input.pcap") {
        let ours = run(&["filter", "--linktype", "LINUX_SLL2", "tcp port 80"]);
        let theirs = Command::new("tcpdump")
            .args(["-r", &sll2, "-d", "tcp port 80"])
            .output()
            .unwrap();
        assert_eq!(ours.stdout, theirs.stdout);
    }
}

#[test]
fn names_come_from_etc_files_or_are_refused() {
    // /etc/hosts always names localhost; /etc/services names http.
    let ours = run(&["filter", "host localhost and port http"]);
    let numeric = run(&["filter", "host 127.0.0.1 and port 80"]);
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    assert_eq!(ours.stdout, numeric.stdout);
    let bad = run(&["filter", "host no-such-host.invalid"]);
    assert_eq!(bad.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("/etc/hosts") && msg.lines().count() == 1,
        "{msg}"
    );
}

#[test]
fn a_bad_filter_is_one_line_and_exit_2_with_no_output() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    let out = run(&["analyze", "--filter", "tcp port", &p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn output_is_byte_identical_whatever_the_thread_count() {
    for c in [
        "zeek/wikipedia.pcap",
        "zeek/dns-edns-ecs.pcap",
        "zeek/http/methods.pcap",
        "zeek/redis/django-cloud.pcapng",
    ] {
        let Some(p) = peer(c) else { return };
        let outs: Vec<Vec<u8>> = ["1", "2", "4"]
            .iter()
            .map(|t| {
                let o = run(&["analyze", "-q", "--threads", t, &p]);
                assert!(o.status.success());
                o.stdout
            })
            .collect();
        assert_eq!(outs[0], outs[1], "{c}: 1 vs 2 threads");
        assert_eq!(outs[0], outs[2], "{c}: 1 vs 4 threads");
    }
}

#[test]
fn unusable_inputs_are_one_line_exit_3_and_no_document() {
    let dir = tmpdir("bad");
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, b"this is not a capture\n").unwrap();
    let garbage = dir.join("garbage.pcap");
    std::fs::write(
        &garbage,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let short = dir.join("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4]).unwrap();
    let missing = dir.join("missing.pcap");
    for (f, word) in [
        (&missing, "cannot open"),
        (&empty, "empty"),
        (&text, "not a pcap"),
        (&garbage, "not a pcap"),
        (&short, "cut short"),
    ] {
        let out = run(&["analyze", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{f:?}");
        assert!(out.stdout.is_empty(), "{f:?}: no partial JSON");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{f:?}: {err}");
        assert!(
            err.contains(f.to_str().unwrap()) && err.contains(word),
            "{f:?}: {err}"
        );
    }
}

#[test]
fn a_capture_cut_mid_record_warns_and_reports_what_came_before() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    let bytes = std::fs::read(&p).unwrap();
    let (_, recs) = read_pcap(&p);
    // Keep the header and the first 5 records whole, then half of the 6th.
    let mut cut_at = 24;
    for r in &recs[..5] {
        cut_at += 16 + r.data.len();
    }
    let dir = tmpdir("cut");
    let f = dir.join("cut.pcap");
    std::fs::write(&f, &bytes[..cut_at + 16 + recs[5].data.len() / 2]).unwrap();
    let out = run(&["analyze", "-q", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("middle of a record"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&doc["totals"]["packets"]), 5);
}

#[test]
fn a_corrupt_record_after_good_ones_gives_the_partial_document_and_exit_4() {
    let Some(p) = peer("zeek/http/get.pcap") else {
        return;
    };
    let (lt, recs) = read_pcap(&p);
    let dir = tmpdir("corrupt");
    let f = dir.join("corrupt.pcap");
    write_pcap(&f, lt, &recs[..4]);
    let mut bytes = std::fs::read(&f).unwrap();
    // A record header claiming 2 GiB of data.
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0x80]);
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&f, &bytes).unwrap();
    let out = run(&["analyze", "-q", f.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&doc["totals"]["packets"]), 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = run(&["analyze", "--help"]);
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("Examples:") && h.contains("Exit codes"), "{h}");
}
