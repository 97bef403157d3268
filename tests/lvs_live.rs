//! Load balancers, live: `wiremap capture` on the interfaces of the lab's director
//! (fixtures/lvs/record.sh, moved to namespaces wj-*, 10.215.0.0/16, fd00:215::/48) while the
//! clients make the workload, against the director's conntrack table and the clients' own
//! results (the script's expected.json) — never against wiremap's output. Root only.
//!
//! The director's client side and real-server side are separate veths and capture binds one
//! interface, so a live run sees one leg of each connection: the legs are attributed by
//! `--lvs-config` (and `--lb-local` for FULLNAT), the per-flow evidence that works on one
//! interface; pairing two legs (ISN, tuple, first bytes) is covered offline by tests/lvs.rs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

const CLI4: &str = "10.215.0.2";
const VIP4: &str = "10.215.9.10";
const VIP6: &str = "fd00:215:0:9::10";
const RS14: &str = "10.215.1.11";
const RS16: &str = "fd00:215:0:1::11";
const RS24: &str = "10.215.2.12";
const RS26: &str = "fd00:215:0:2::12";
const LOCAL4: &str = "10.215.8.1";
const LOCAL6: &str = "fd00:215:0:8::1";

/// `ipvsadm -Ln` as the director's rules say (record.sh `director_rules`), per mode.
fn write_configs(dir: &Path) {
    for (mode, fwd) in [("nat", "Masq"), ("fullnat", "FullNat")] {
        let mut t = String::from(
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
        for (proto, port) in [
            ("TCP", 80),
            ("TCP", 6379),
            ("TCP", 3306),
            ("UDP", 53),
            ("TCP", 53),
        ] {
            t.push_str(&format!("{proto}  {VIP4}:{port} rr\n"));
            for rs in [RS14, RS24] {
                t.push_str(&format!(
                    "  -> {rs}:{port:<20} {fwd:<7} 1      0          0\n"
                ));
            }
        }
        t.push_str(&format!("TCP  [{VIP6}]:80 rr\n"));
        for rs in [RS16, RS26] {
            t.push_str(&format!(
                "  -> [{rs}]:80             {fwd:<7} 1      0          0\n"
            ));
        }
        std::fs::write(dir.join(format!("{mode}.txt")), t).unwrap();
    }
}

/// What one live run must show, per edge key (client, server, transport, protocol):
/// connections, requests, codes, and the real clients when stitched. `seen` says which
/// backends' legs the interface carries (None: the client side).
fn expected_edges(exp: &Value, seen: Option<&[&str]>) -> BTreeMap<[String; 4], Value> {
    let mode = exp["mode"].as_str().unwrap();
    let conns = exp["connections"].as_array().unwrap();
    // The VIP the configuration puts in front of a backend (from conntrack's balanced legs).
    let vip_of = |c: &Value| -> String {
        conns
            .iter()
            .find(|o| {
                o["balanced"] == true
                    && o["backend"] == c["backend"]
                    && o["transport"] == c["transport"]
            })
            .unwrap_or_else(|| panic!("no balanced leg to {}", c["backend"]))["vip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut out: BTreeMap<[String; 4], Value> = BTreeMap::new();
    for c in conns {
        let backend = c["backend"].as_str().unwrap();
        let balanced = c["balanced"] == true;
        let client = c["client"].as_str().unwrap().to_string();
        let (from, to, nat) = match seen {
            // the client leg: as it is
            None if balanced => (client.clone(), c["vip"].as_str().unwrap().to_string(), None),
            Some(rs) if !rs.contains(&ip_of(backend)) => continue,
            Some(_) if balanced => (
                vip_of(c),
                backend.to_string(),
                Some(if mode == "nat" {
                    Some(client.clone())
                } else {
                    None
                }),
            ),
            // Direct traffic to a backend: from one side, a NAT config claims it for the VIP
            // (README, "What cannot be inferred"); with FULLNAT and --lb-local, a leg not from
            // the director's local address stays as it is.
            _ if mode == "nat" => (vip_of(c), backend.to_string(), Some(Some(client.clone()))),
            _ => (client.clone(), backend.to_string(), None),
        };
        let key = [
            from,
            to,
            c["transport"].as_str().unwrap().to_string(),
            c["protocol"].as_str().unwrap().to_string(),
        ];
        let e = out.entry(key).or_insert_with(
            || json!({"connections": 0, "requests": 0, "codes": {}, "nat": null, "clients": []}),
        );
        e["connections"] = json!(u(&e["connections"]) + 1);
        e["requests"] = json!(u(&e["requests"]) + u(&c["requests"]));
        for code in c["codes"].as_array().unwrap() {
            let k = code.as_str().unwrap();
            e["codes"][k] = json!(e["codes"][k].as_u64().unwrap_or(0) + 1);
        }
        if let Some(real) = nat {
            e["nat"] = json!(mode);
            if let Some(r) = real {
                let mut cl: Vec<String> = serde_json::from_value(e["clients"].clone()).unwrap();
                if !cl.contains(&r) {
                    cl.push(r);
                    cl.sort();
                }
                e["clients"] = json!(cl);
            }
        }
    }
    out
}

/// The address of an endpoint id (`ip:port` or `[ip]:port`).
fn ip_of(id: &str) -> &str {
    let (ip, _) = id.rsplit_once(':').unwrap();
    ip.trim_start_matches('[').trim_end_matches(']')
}

/// Sum interval documents (or take the one document) edge by edge.
fn summed(docs: &[Value], what: &str) -> BTreeMap<[String; 4], Value> {
    let mut out: BTreeMap<[String; 4], Value> = BTreeMap::new();
    for d in docs {
        assert_eq!(u(&d["limits"]["lb_stitch_late"]), 0, "{what}");
        for g in d["edges"].as_array().unwrap() {
            let key = ["client", "server", "transport", "protocol"]
                .map(|f| g[f].as_str().unwrap().to_string());
            let e = out.entry(key).or_insert_with(|| {
                json!({"connections": 0, "requests": 0, "responses": 0, "codes": {},
                       "nat": null, "clients": [], "evidence": [], "lb_local": []})
            });
            for f in ["connections", "requests", "responses"] {
                e[f] = json!(u(&e[f]) + u(&g[f]));
            }
            if let Some(codes) = g["codes"].as_object() {
                for (k, n) in codes {
                    e["codes"][k] = json!(e["codes"][k].as_u64().unwrap_or(0) + u(n));
                }
            }
            if g.get("nat").is_some() {
                // every interval's share of a stitched leg says the same
                let n = &g["nat"];
                if !e["nat"].is_null() {
                    assert_eq!(e["nat"], n["mode"], "{what}: {g}");
                    assert_eq!(e["evidence"], n["evidence"], "{what}: {g}");
                }
                e["nat"] = n["mode"].clone();
                e["evidence"] = n["evidence"].clone();
                e["lb_local"] = n.get("lb_local").cloned().unwrap_or(json!([]));
                let mut cl: Vec<String> = serde_json::from_value(e["clients"].clone()).unwrap();
                for c in n["clients"].as_array().unwrap() {
                    let c = c.as_str().unwrap().to_string();
                    if !cl.contains(&c) {
                        cl.push(c);
                        cl.sort();
                    }
                }
                e["clients"] = json!(cl);
            }
        }
    }
    out
}

fn check(docs: &[Value], exp: &Value, seen: Option<&[&str]>, what: &str) {
    let mode = exp["mode"].as_str().unwrap();
    let want = expected_edges(exp, seen);
    let got = summed(docs, what);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: edges"
    );
    for (k, w) in &want {
        let g = &got[k];
        let e = format!("{what}: {k:?}");
        assert_eq!(g["connections"], w["connections"], "{e}: connections");
        assert_eq!(g["requests"], w["requests"], "{e}: requests");
        assert_eq!(g["responses"], w["requests"], "{e}: responses");
        assert_eq!(g["codes"], w["codes"], "{e}: codes");
        assert_eq!(g["nat"], w["nat"], "{e}: nat");
        if w["nat"].is_null() {
            continue;
        }
        assert_eq!(g["evidence"], json!(["vip-map"]), "{e}: evidence");
        assert_eq!(g["clients"], w["clients"], "{e}: real clients");
        if mode == "fullnat" {
            let local = if k[1].starts_with('[') {
                LOCAL6
            } else {
                LOCAL4
            };
            assert_eq!(g["lb_local"], json!([local]), "{e}: lb_local");
        }
    }
    // the VIPs are load balancers with the configured backends, in every document that
    // names them; the director's local address is never a node
    let mut named = 0;
    for d in docs {
        for n in d["nodes"].as_array().unwrap() {
            assert!(n["ip"] != LOCAL4 && n["ip"] != LOCAL6, "{what}: {n}");
            if let Some(backends) = exp["load_balancers"].get(n["id"].as_str().unwrap()) {
                assert_eq!(n["role"], "load_balancer", "{what}: {n}");
                assert_eq!(&n["backends"], backends, "{what}: {n}");
                named += 1;
            }
        }
    }
    assert!(named > 0, "{what}: no VIP node");
    let requests: u64 = want.values().map(|w| u(&w["requests"])).sum();
    let total: u64 = docs.iter().map(|d| u(&d["totals"]["l7_requests"])).sum();
    assert_eq!(total, requests, "{what}: l7_requests");
}

fn read_docs(path: &Path, lines: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if lines {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    }
}

/// (name, interface, arguments, interval documents?, real-server addresses on it; None: the
/// client side)
type Run<'a> = (&'a str, &'a str, String, bool, Option<&'a [&'a str]>);

#[test]
fn live_capture_on_the_director_attributes_legs_like_conntrack() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to create network namespaces (CI runs as root)");
        return;
    }
    let dir = tmpdir("lvs-live-capture");
    write_configs(&dir);
    let cfg = dir.join("@MODE@.txt").to_string_lossy().into_owned();
    let lb = format!("--lvs-config {cfg} --lb-local 10.215.8.0/24 --lb-local fd00:215:0:8::/64");
    let runs: [Run; 6] = [
        ("cli", "wjd-c", format!("--threads 2 {lb}"), false, None),
        (
            "cli-int",
            "wjd-c",
            format!("--threads 2 --interval 1 {lb}"),
            true,
            None,
        ),
        (
            "rs1",
            "wjd-1",
            format!("--threads 2 {lb}"),
            false,
            Some(&[RS14, RS16]),
        ),
        (
            "rs1-int",
            "wjd-1",
            format!("--threads 1 --interval 1 {lb}"),
            true,
            Some(&[RS14, RS16]),
        ),
        (
            "rs1-fanout",
            "wjd-1",
            format!("--threads 2 --fanout {lb}"),
            false,
            Some(&[RS14, RS16]),
        ),
        (
            "rs2-int",
            "wjd-2",
            format!("--threads 2 --interval 1 {lb}"),
            true,
            Some(&[RS24, RS26]),
        ),
    ];
    let spec: Vec<String> = runs
        .iter()
        .map(|(n, i, a, _, _)| format!("{n} {i} {a}"))
        .collect();
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lvs/record.sh"))
        .arg(&dir)
        .env("LVS_LAB_PREFIX", "wj")
        .env("LVS_LAB_NET4", "10.215")
        .env("LVS_LAB_NET6", "fd00:215")
        .env("LVS_LAB_WIREMAP", bin())
        .env("LVS_LAB_LIVE", spec.join(";"))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "record.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["nat", "fullnat"] {
        let d = dir.join(mode);
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap())
                .unwrap();
        assert_eq!(exp["mode"], mode);
        // the workload went through the director as the script says
        assert!(exp["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["balanced"] == true && c["client"] == CLI4));
        for (name, _, _, lines, seen) in &runs {
            let docs = read_docs(&d.join(format!("live-{name}.json")), *lines);
            if *lines {
                assert!(docs.len() >= 3, "{mode} {name}: {} documents", docs.len());
            }
            check(&docs, &exp, *seen, &format!("live {mode} {name}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
