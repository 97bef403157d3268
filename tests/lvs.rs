//! Load balancers (LVS NAT and FULLNAT): the lab's captures (fixtures/lvs/record.sh: an
//! nftables director DNATs a VIP to two real servers, round-robin, and for FULLNAT SNATs to its
//! local address) against the stitching the director's conntrack table recorded and the
//! requests the clients made (fixtures/lvs/*/expected.json) — never against wiremap's output.
//! Real-FULLNAT-like captures (sequence delta, no timestamps, TOA options, clock skew) are
//! derived from the NAT captures by tests/support/lvs_rewrite.rs.

mod common;
#[path = "support/lvs_rewrite.rs"]
mod lvs_rewrite;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::Path;

use common::*;
use lvs_rewrite::{Plan, ToaAt};
use serde_json::{json, Value};

const LOCAL4: &str = "10.213.8.1";
const LOCAL6: &str = "fd00:213:0:8::1";
const LB_LOCAL: [&str; 4] = [
    "--lb-local",
    "10.213.8.0/24",
    "--lb-local",
    "fd00:213:0:8::/64",
];

fn lab(mode: &str, file: &str) -> String {
    fixture(&format!("lvs/{mode}/{file}"))
}

fn expected(mode: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(lab(mode, "expected.json")).unwrap()).unwrap()
}

/// What the stitched edges must say beyond the counts.
struct Want<'a> {
    mode: &'a str,
    has: &'a [&'a str],
    not: &'a [&'a str],
    lb_local: bool,
}

fn id(ip: &str, port: u64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Every expected edge, with its counts, codes and (when stitched) its `nat`; nothing else;
/// VIPs as load balancers with their backends; the director never a client; totals once.
fn check(doc: &Value, exp: &Value, want: &Want, what: &str) {
    let edges = doc["edges"].as_array().unwrap();
    let want_edges = exp["edges"].as_array().unwrap();
    for w in want_edges {
        let g = edges
            .iter()
            .find(|e| {
                e["client"] == w["client"]
                    && e["server"] == w["server"]
                    && e["transport"] == w["transport"]
                    && e["protocol"] == w["protocol"]
            })
            .unwrap_or_else(|| panic!("{what}: no edge {w} in {:#}", doc["edges"]));
        let e = format!(
            "{what}: {} -> {} {}",
            w["client"], w["server"], w["transport"]
        );
        assert_eq!(g["connections"], w["connections"], "{e}: connections");
        assert_eq!(g["requests"], w["requests"], "{e}: requests");
        assert_eq!(g["responses"], w["requests"], "{e}: responses");
        assert_eq!(g["codes"], w["codes"], "{e}: codes");
        if w["nat"].is_null() {
            assert!(
                g.get("nat").is_none(),
                "{e}: not stitched, but {}",
                g["nat"]
            );
            continue;
        }
        let nat = &g["nat"];
        assert_eq!(nat["mode"], want.mode, "{e}: mode");
        assert_eq!(nat["clients"], w["nat"]["clients"], "{e}: real clients");
        let ev: Vec<&str> = nat["evidence"]
            .as_array()
            .unwrap_or_else(|| panic!("{e}: no nat: {g}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for h in want.has {
            assert!(ev.contains(h), "{e}: evidence {ev:?} lacks {h}");
        }
        for n in want.not {
            assert!(!ev.contains(n), "{e}: evidence {ev:?} has {n}");
        }
        if want.lb_local {
            let local = if w["server"].as_str().unwrap().starts_with('[') {
                LOCAL6
            } else {
                LOCAL4
            };
            assert_eq!(nat["lb_local"], json!([local]), "{e}: lb_local");
        }
    }
    assert_eq!(
        edges.len(),
        want_edges.len(),
        "{what}: edges {:#}",
        doc["edges"]
    );
    for (vip, backends) in exp["load_balancers"].as_object().unwrap() {
        let node = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == vip.as_str())
            .unwrap_or_else(|| panic!("{what}: no node {vip}"));
        assert_eq!(node["role"], "load_balancer", "{what}: {node}");
        assert_eq!(&node["backends"], backends, "{what}: backends of {vip}");
    }
    for n in doc["nodes"].as_array().unwrap() {
        assert!(
            n["ip"] != LOCAL4 && n["ip"] != LOCAL6,
            "{what}: the director's local address is a node: {n}"
        );
    }
    assert_eq!(
        doc["totals"]["l7_requests"], exp["l7_requests"],
        "{what}: an exchange seen on both legs counts once"
    );
    assert_eq!(u(&doc["limits"]["lb_stitch_late"]), 0, "{what}");
}

/// The edge with this key (transport included: DNS runs over UDP and TCP).
fn edge_t<'a>(doc: &'a Value, w: &Value) -> &'a Value {
    doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["client"] == w["client"]
                && e["server"] == w["server"]
                && e["transport"] == w["transport"]
                && e["protocol"] == w["protocol"]
        })
        .unwrap_or_else(|| panic!("no edge {w} in {:#}", doc["edges"]))
}

fn analyze_threads(args: &[&str]) -> Value {
    let mut outs = Vec::new();
    for t in ["1", "2", "4"] {
        let mut a = vec!["analyze", "-q", "--threads", t];
        a.extend_from_slice(args);
        let out = run(&a);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outs.push(out.stdout);
    }
    assert!(
        outs.windows(2).all(|w| w[0] == w[1]),
        "{args:?}: output differs with --threads"
    );
    serde_json::from_slice(&outs[0]).unwrap()
}

const NAT_EV: Want = Want {
    mode: "nat",
    has: &["tuple"],
    not: &["toa", "vip-map"],
    lb_local: false,
};
const FULLNAT_EV: Want = Want {
    mode: "fullnat",
    has: &["payload"],
    not: &["isn", "tuple", "vip-map"],
    lb_local: true,
};

#[test]
fn director_pcapng_nat() {
    let exp = expected("nat");
    let doc = analyze_threads(&[&lab("nat", "director.pcapng")]);
    check(&doc, &exp, &NAT_EV, "nat director");
    // TCP legs are matched on client address, port and ISN too
    let tcp_isn = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["transport"] == "tcp" && !e["nat"].is_null())
        .all(|e| {
            e["nat"]["evidence"]
                .as_array()
                .unwrap()
                .contains(&json!("isn"))
        });
    assert!(tcp_isn);
}

#[test]
fn director_pcapng_fullnat() {
    let exp = expected("fullnat");
    let doc = analyze_threads(&[&lab("fullnat", "director.pcapng")]);
    check(&doc, &exp, &FULLNAT_EV, "fullnat director");
}

#[test]
fn client_and_server_files_together() {
    for (mode, want) in [("nat", &NAT_EV), ("fullnat", &FULLNAT_EV)] {
        let exp = expected(mode);
        let files = [
            lab(mode, "client.pcap"),
            lab(mode, "rs1.pcap"),
            lab(mode, "rs2.pcap"),
        ];
        let args: Vec<&str> = files.iter().map(String::as_str).collect();
        check(
            &analyze_threads(&args),
            &exp,
            want,
            &format!("{mode} client+servers"),
        );
        // every capture position at once: each leg counts once
        let all = [
            lab(mode, "client.pcap"),
            lab(mode, "director.pcapng"),
            lab(mode, "rs1.pcap"),
            lab(mode, "rs2.pcap"),
        ];
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        check(
            &analyze_threads(&args),
            &exp,
            want,
            &format!("{mode} all positions"),
        );
    }
}

/// The balanced connections' clients (address, port), from conntrack.
fn balanced(exp: &Value) -> HashSet<(IpAddr, u16)> {
    exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["balanced"] == true)
        .map(|c| {
            (
                c["client"].as_str().unwrap().parse().unwrap(),
                u(&c["client_port"]) as u16,
            )
        })
        .collect()
}

/// Rewrite the NAT lab's real-server captures as a FULLNAT director would have sent them.
fn rewritten(name: &str, skew_us: i64, toa: fn(usize) -> (ToaAt, u8)) -> Vec<String> {
    let exp = expected("nat");
    let dir = tmpdir(name);
    let mut files = Vec::new();
    for rs in ["rs1.pcap", "rs2.pcap"] {
        let (lt, recs) = read_pcap(&lab("nat", rs));
        let plan = Plan {
            local4: [10, 213, 8, 1],
            local6: "fd00:213:0:8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            skew_us,
            toa,
            // a different delta per connection, never 0, across the 2^32 wrap for some
            delta: |i| 0x9e37_79b9u32.wrapping_mul(i as u32 + 1) | 1,
            balanced: balanced(&exp),
        };
        let (out, conns) = lvs_rewrite::fullnat(&recs, &plan);
        assert!(conns.iter().filter(|c| c.rewritten).count() >= 8);
        let path = dir.join(rs);
        write_pcap(&path, lt, &out);
        files.push(path.to_string_lossy().into_owned());
    }
    files
}

fn no_toa(_: usize) -> (ToaAt, u8) {
    (ToaAt::None, 0)
}

/// TOA on the SYN in some connections, on the handshake's ACK in others; kinds 254 and 200.
fn some_toa(i: usize) -> (ToaAt, u8) {
    match i % 4 {
        0 => (ToaAt::Syn, 254),
        1 => (ToaAt::Ack, 254),
        2 => (ToaAt::Ack, 200),
        _ => (ToaAt::Syn, 200),
    }
}

/// The NAT lab's expectations, as a FULLNAT director would have produced them.
fn as_fullnat(exp: &Value) -> Value {
    let mut e = exp.clone();
    e["mode"] = json!("fullnat");
    e
}

#[test]
fn sequence_shifted_fullnat_with_clock_skew_matches_by_payload() {
    let exp = as_fullnat(&expected("nat"));
    // the servers' clock 300 ms ahead of the client's
    let servers = rewritten("lvs-shifted", 300_000, no_toa);
    let client = lab("nat", "client.pcap");
    let args = [client.as_str(), servers[0].as_str(), servers[1].as_str()];
    let doc = analyze_threads(&args);
    check(&doc, &exp, &FULLNAT_EV, "shifted fullnat +300ms");
    // only one of the two real servers captured: its legs are stitched, the other server's
    // client legs wait in vain and are counted once
    let one = analyze_threads(&[args[0], args[1]]);
    for w in exp["edges"].as_array().unwrap() {
        let rs1 = w["server"].as_str().unwrap().contains(":1::11]")
            || w["server"].as_str().unwrap().starts_with("10.213.1.11");
        let found = one["edges"].as_array().unwrap().iter().find(|e| {
            e["client"] == w["client"]
                && e["server"] == w["server"]
                && e["transport"] == w["transport"]
        });
        if w["nat"].is_null() && !w["server"].as_str().unwrap().starts_with("10.213.1.11") {
            // client legs (and rs1's direct traffic, seen in both files)
            assert_eq!(found.unwrap()["requests"], w["requests"], "{w}");
        } else if rs1 {
            let g = found.unwrap_or_else(|| panic!("no {w}"));
            assert_eq!(g["requests"], w["requests"], "{w}");
            assert_eq!(g["connections"], w["connections"], "{w}");
        } else {
            assert!(found.is_none(), "rs2 was not captured: {w}");
        }
    }
    assert_eq!(one["totals"]["l7_requests"], exp["l7_requests"]);
    // with a window narrower than the skew, DNS queries (unique ids) find no other leg
    let narrow = analyze(&["--lb-window", "0.1", args[0], args[1], args[2]]);
    assert!(narrow["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["transport"] != "udp" || e["nat"].is_null()));
}

#[test]
fn negative_clock_skew_needs_the_vip_map_to_tell_the_legs_apart() {
    let exp = as_fullnat(&expected("nat"));
    // the servers' clock 150 µs behind: each real-server leg is seen before its client
    // leg's (the director forwards in microseconds), but before the connection ends
    let servers = rewritten("lvs-behind", -150, no_toa);
    let cfg = ipvsadm_config(&expected("nat"), "FullNat");
    let client = lab("nat", "client.pcap");
    let doc = analyze_threads(&[
        "--lvs-config",
        cfg.as_str(),
        client.as_str(),
        servers[0].as_str(),
        servers[1].as_str(),
    ]);
    check(
        &doc,
        &exp,
        &Want {
            mode: "fullnat",
            has: &["payload"],
            not: &["isn", "tuple"],
            lb_local: true,
        },
        "shifted fullnat -150us with --lvs-config",
    );
    // 300 ms behind: connections shorter than that have ended (and their requests were
    // summed) before their client leg is seen. Counted, not silent.
    let servers = rewritten("lvs-far-behind", -300_000, no_toa);
    let doc = analyze(&[
        "--lvs-config",
        cfg.as_str(),
        client.as_str(),
        &servers[0],
        &servers[1],
    ]);
    assert!(u(&doc["limits"]["lb_stitch_late"]) > 0, "{}", doc["limits"]);
}

#[test]
fn toa_with_the_client_leg_stitches_and_says_toa() {
    let exp = as_fullnat(&expected("nat"));
    let servers = rewritten("lvs-toa-pair", 200_000, some_toa);
    let client = lab("nat", "client.pcap");
    let doc = analyze_threads(&[client.as_str(), servers[0].as_str(), servers[1].as_str()]);
    check(&doc, &exp, &FULLNAT_EV, "toa + client leg");
    for e in doc["edges"].as_array().unwrap() {
        if e["transport"] == "tcp" && !e["nat"].is_null() {
            assert!(
                e["nat"]["evidence"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("toa")),
                "{e}"
            );
        }
    }
}

/// Expected edges when only the real servers are seen: per the lab's connections.
fn server_side_edges(exp: &Value, tcp_client: fn(&Value) -> (String, Value)) -> Value {
    type Key = (String, String, String, String);
    type Sums = (u64, u64, BTreeMap<String, u64>, Value);
    let mut edges: BTreeMap<Key, Sums> = BTreeMap::new();
    let mut l7 = 0;
    for c in exp["connections"].as_array().unwrap() {
        let (client, nat) = if c["balanced"] == true {
            tcp_client(c)
        } else {
            (c["client"].as_str().unwrap().to_string(), Value::Null)
        };
        let key = (
            client,
            c["backend"].as_str().unwrap().to_string(),
            c["transport"].as_str().unwrap().to_string(),
            c["protocol"].as_str().unwrap().to_string(),
        );
        let e = edges
            .entry(key)
            .or_insert((0, 0, BTreeMap::new(), Value::Null));
        // direct and load-balanced traffic of one client to one server share the edge
        if !nat.is_null() {
            e.3 = nat;
        }
        e.0 += 1;
        e.1 += u(&c["requests"]);
        l7 += u(&c["requests"]);
        for code in c["codes"].as_array().unwrap() {
            *e.2.entry(code.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let edges: Vec<Value> = edges
        .into_iter()
        .map(
            |((client, server, transport, protocol), (n, r, codes, nat))| {
                json!({"client": client, "server": server, "transport": transport,
                   "protocol": protocol, "connections": n, "requests": r, "codes": codes,
                   "nat": nat})
            },
        )
        .collect();
    json!({"edges": edges, "l7_requests": l7, "load_balancers": {}})
}

#[test]
fn server_side_with_toa_only_names_the_real_clients() {
    let exp = expected("nat");
    let servers = rewritten("lvs-toa-only", 0, some_toa);
    let args = [
        LB_LOCAL[0],
        LB_LOCAL[1],
        LB_LOCAL[2],
        LB_LOCAL[3],
        &servers[0],
        &servers[1],
    ];
    let doc = analyze_threads(&args);
    // TCP: real client -> RS with toa; UDP (no TOA): the director, named by --lb-local
    let want = server_side_edges(&exp, |c| {
        if c["transport"] == "tcp" {
            let client = c["client"].as_str().unwrap().to_string();
            (client.clone(), json!({"clients": [client]}))
        } else {
            let local = if c["client"].as_str().unwrap().contains(':') {
                LOCAL6
            } else {
                LOCAL4
            };
            (local.to_string(), json!({"clients": []}))
        }
    });
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(
        edges.len(),
        want["edges"].as_array().unwrap().len(),
        "{:#}",
        doc["edges"]
    );
    for w in want["edges"].as_array().unwrap() {
        let g = edge_t(&doc, w);
        assert_eq!(g["connections"], w["connections"], "{w}");
        assert_eq!(g["requests"], w["requests"], "{w}");
        assert_eq!(g["codes"], w["codes"], "{w}");
        if w["nat"].is_null() {
            assert!(g["nat"].is_null(), "{g}");
            continue;
        }
        let ev = if w["transport"] == "tcp" {
            json!(["toa"])
        } else {
            json!(["lb-local"])
        };
        assert_eq!(g["nat"]["mode"], "fullnat", "{g}");
        assert_eq!(g["nat"]["evidence"], ev, "{g}");
        assert_eq!(g["nat"]["clients"], w["nat"]["clients"], "{g}");
        let local = if w["server"].as_str().unwrap().starts_with('[') {
            LOCAL6
        } else {
            LOCAL4
        };
        assert_eq!(g["nat"]["lb_local"], json!([local]), "{g}");
    }
    // the director's address is a load balancer (its UDP backends), never a client
    let node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == LOCAL4)
        .unwrap();
    assert_eq!(node["role"], "load_balancer", "{node}");
    assert_eq!(
        node["backends"],
        json!(["10.213.1.11:53", "10.213.2.12:53"])
    );
    assert_eq!(doc["totals"]["l7_requests"], want["l7_requests"]);
    // without --lb-local the UDP legs are plain edges from the director's address
    let plain = analyze(&[&servers[0], &servers[1]]);
    let n = plain["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == LOCAL4)
        .unwrap();
    assert_eq!(n["role"], "client");
}

/// `ipvsadm -Ln` text for the lab's VIPs, from conntrack's view (expected.json).
fn ipvsadm_config(exp: &Value, forward: &str) -> String {
    let mut services: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for c in exp["connections"].as_array().unwrap() {
        if c["balanced"] == true {
            services
                .entry((
                    c["transport"].as_str().unwrap().to_uppercase(),
                    c["vip"].as_str().unwrap().to_string(),
                ))
                .or_default()
                .insert(c["backend"].as_str().unwrap().to_string());
        }
    }
    let mut t = String::from(
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );
    for ((proto, vip), reals) in services {
        t.push_str(&format!("{proto}  {vip} rr\n"));
        for r in reals {
            t.push_str(&format!("  -> {r:<28} {forward:<7} 1      0          2\n"));
        }
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tmpdir(&format!("ipvsadm-{forward}-{n}"));
    let p = dir.join("ipvsadm.txt");
    std::fs::write(&p, t).unwrap();
    p.to_string_lossy().into_owned()
}

/// A filter that leaves out the lab's direct (not load-balanced) connections.
fn without_direct(exp: &Value) -> String {
    let ports: Vec<String> = exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["balanced"] == false)
        .map(|c| format!("port {}", u(&c["client_port"])))
        .collect();
    format!("not ({})", ports.join(" or "))
}

#[test]
fn lvs_config_with_the_real_servers_only() {
    // NAT: the servers see the real clients; the config names the VIP in front of them.
    // Direct traffic to a backend cannot be told apart from one side: the filter leaves it out.
    let exp = expected("nat");
    let cfg = ipvsadm_config(&exp, "Masq");
    let filter = without_direct(&exp);
    let (rs1, rs2) = (lab("nat", "rs1.pcap"), lab("nat", "rs2.pcap"));
    let doc = analyze_threads(&["--lvs-config", &cfg, "--filter", &filter, &rs1, &rs2]);
    let want = server_side_edges(&exp, |c| {
        (
            c["vip"].as_str().unwrap().to_string(),
            json!({"clients": [c["client"]]}),
        )
    });
    for w in want["edges"].as_array().unwrap() {
        if w["nat"].is_null() {
            continue; // the filtered direct traffic
        }
        let g = edge_t(&doc, w);
        assert_eq!(g["connections"], w["connections"], "{w}");
        assert_eq!(g["requests"], w["requests"], "{w}");
        assert_eq!(g["nat"]["mode"], "nat", "{g}");
        assert_eq!(g["nat"]["evidence"], json!(["vip-map"]), "{g}");
        assert_eq!(g["nat"]["clients"], w["nat"]["clients"], "{g}");
    }
    assert_eq!(
        doc["edges"].as_array().unwrap().len(),
        want["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| !w["nat"].is_null())
            .count()
    );
    for (vip, backends) in exp["load_balancers"].as_object().unwrap() {
        let n = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == vip.as_str())
            .unwrap();
        assert_eq!(n["role"], "load_balancer");
        assert_eq!(&n["backends"], backends);
    }

    // FULLNAT without TOA: the config names the VIPs, --lb-local the director; the direct
    // traffic (not from the director's address) stays as it is.
    let exp = expected("fullnat");
    let cfg = ipvsadm_config(&exp, "FullNat");
    let (rs1, rs2) = (lab("fullnat", "rs1.pcap"), lab("fullnat", "rs2.pcap"));
    let mut args = vec!["--lvs-config", cfg.as_str()];
    args.extend_from_slice(&LB_LOCAL);
    args.extend_from_slice(&[&rs1, &rs2]);
    let doc = analyze_threads(&args);
    let want = server_side_edges(&exp, |c| {
        (
            c["vip"].as_str().unwrap().to_string(),
            json!({"clients": []}),
        )
    });
    assert_eq!(
        doc["edges"].as_array().unwrap().len(),
        want["edges"].as_array().unwrap().len(),
        "{:#}",
        doc["edges"]
    );
    for w in want["edges"].as_array().unwrap() {
        let g = edge_t(&doc, w);
        assert_eq!(g["connections"], w["connections"], "{w}");
        assert_eq!(g["requests"], w["requests"], "{w}");
        if w["nat"].is_null() {
            assert!(g["nat"].is_null(), "{g}");
        } else {
            assert_eq!(g["nat"]["mode"], "fullnat", "{g}");
            assert_eq!(g["nat"]["evidence"], json!(["vip-map"]), "{g}");
            assert_eq!(g["nat"]["clients"], json!([]), "{g}");
        }
    }
    assert!(doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["ip"] != LOCAL4 && n["ip"] != LOCAL6));
}

#[test]
fn lvs_config_with_the_client_side_only() {
    let exp = expected("nat");
    let cfg = ipvsadm_config(&exp, "Masq");
    // (direct traffic to a backend looks like a load-balanced leg from one side: left out)
    let filter = without_direct(&exp);
    let doc = analyze_threads(&[
        "--lvs-config",
        &cfg,
        "--filter",
        &filter,
        &lab("nat", "client.pcap"),
    ]);
    // the client legs as they are, the VIPs named as load balancers with their backends
    for (vip, backends) in exp["load_balancers"].as_object().unwrap() {
        let n = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == vip.as_str())
            .unwrap();
        assert_eq!(n["role"], "load_balancer");
        assert_eq!(&n["backends"], backends);
    }
    let direct: Vec<String> = exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["balanced"] == false)
        .map(|c| c["vip"].as_str().unwrap().to_string())
        .collect();
    let client_legs: Vec<&Value> = exp["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["nat"].is_null() && !direct.contains(&e["server"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(doc["edges"].as_array().unwrap().len(), client_legs.len());
    for w in client_legs {
        let g = edge_t(&doc, w);
        assert_eq!(g["requests"], w["requests"]);
        assert!(g["nat"].is_null());
    }
    let direct_requests = exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["balanced"] == false)
        .map(|c| u(&c["requests"]))
        .sum::<u64>();
    assert_eq!(
        u(&doc["totals"]["l7_requests"]),
        u(&exp["l7_requests"]) - direct_requests
    );
}

#[test]
fn mixed_balanced_and_direct_traffic_with_a_config() {
    // The director's capture holds direct traffic to a backend too (curl and dig to rs1):
    // seen untranslated on both sides, it stays direct even though the config lists rs1.
    for (mode, forward, want) in [
        ("nat", "Masq", &NAT_EV),
        ("fullnat", "FullNat", &FULLNAT_EV),
    ] {
        let exp = expected(mode);
        assert!(exp["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["balanced"] == false));
        let cfg = ipvsadm_config(&exp, forward);
        let doc = analyze_threads(&["--lvs-config", &cfg, &lab(mode, "director.pcapng")]);
        check(
            &doc,
            &exp,
            want,
            &format!("{mode} director with --lvs-config"),
        );
    }
}

#[test]
fn the_fixtures_are_what_the_script_says() {
    // conntrack's raw table is committed beside the expectations derived from it
    for mode in ["nat", "fullnat"] {
        let ct = std::fs::read_to_string(lab(mode, "conntrack.txt")).unwrap();
        let exp = expected(mode);
        for c in exp["connections"].as_array().unwrap() {
            let needle = format!("sport={} dport=", u(&c["client_port"]));
            assert!(ct.contains(&needle), "{mode}: {c} not in conntrack.txt");
            let backend = c["backend"].as_str().unwrap();
            assert!(
                ct.lines().any(|l| l.contains(&needle)
                    && l.contains(&format!(
                        "src={}",
                        backend
                            .trim_start_matches('[')
                            .rsplit_once(if backend.starts_with('[') { "]:" } else { ":" })
                            .unwrap()
                            .0
                    ))),
                "{mode}: {backend} not the real server of {c}"
            );
        }
        assert!(Path::new(&lab(mode, "director.pcapng")).exists());
        assert_eq!(id("10.0.0.1", 80), "10.0.0.1:80");
    }
}

/// Run wiremap under GNU time; returns (stdout as JSON, peak RSS in KiB).
fn run_measured(args: &[&str]) -> (Value, u64) {
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("WIREMAP_MAXRSS_KB=%M")
        .arg(bin())
        .args(args)
        .output()
        .expect("GNU time is installed (package `time`)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("WIREMAP_MAXRSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (serde_json::from_slice(&out.stdout).unwrap(), rss)
}

/// An Ethernet/IPv4 SYN from `src` to `dst` carrying a TOA option (kind 254).
fn toa_syn(src: ([u8; 4], u16), dst: ([u8; 4], u16), toa: ([u8; 4], u16), ts_usec: u64) -> Rec {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x70, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&[254, 8]);
    f.extend_from_slice(&toa.1.to_be_bytes());
    f.extend_from_slice(&toa.0);
    Rec {
        ts_sec: (ts_usec / 1_000_000) as u32,
        ts_usec: (ts_usec % 1_000_000) as u32,
        orig_len: f.len() as u32,
        data: f,
    }
}

#[test]
fn a_flood_of_toa_options_stays_bounded() {
    // 200,000 SYNs from a "director" within one second, each with a TOA option naming another
    // client: the leg index and the edges stay bounded, and the hits are counted.
    let n = 200_000u32;
    let recs: Vec<Rec> = (0..n)
        .map(|i| {
            toa_syn(
                (
                    [10, 213, 8, 1 + (i / 60000) as u8],
                    (1024 + i % 60000) as u16,
                ),
                ([10, 213, 1, 11], 80),
                ([10, 213, 100 + (i >> 16) as u8, (i >> 8) as u8], i as u16),
                1_000_000 + u64::from(i) * 4,
            )
        })
        .collect();
    let dir = tmpdir("lvs-toa-flood");
    let path = dir.join("toa-flood.pcap");
    write_pcap(&path, 1, &recs);
    let (doc, rss_kb) = run_measured(&[
        "analyze",
        "-q",
        "--lb-max-entries",
        "4096",
        "--max-edges",
        "100",
        path.to_str().unwrap(),
    ]);
    println!(
        "toa flood: {} edges, {rss_kb} KiB peak RSS, {}",
        doc["edges"].as_array().unwrap().len(),
        doc["limits"]
    );
    assert!(u(&doc["limits"]["lb_index_full"]) > 0, "{}", doc["limits"]);
    assert!(doc["edges"].as_array().unwrap().len() <= 100);
    assert!(u(&doc["limits"]["edges_folded"]) > 0);
    assert_eq!(u(&doc["totals"]["failed_connections"]), u64::from(n));
    assert!(rss_kb < 400 * 1024, "peak RSS {rss_kb} KiB");
}

#[test]
fn identical_first_requests_stay_bounded_and_unstitched() {
    // 20,000 connections from distinct clients with the same first request to one service,
    // all within the window: one first-bytes key, its slot overflows (counted), and legs to
    // the same service are never taken for the two legs of one connection.
    let mut recs = Vec::new();
    let n = 20_000u32;
    for i in 0..n {
        let client = (
            [
                10,
                213,
                100 + (i / 250 / 250) as u8,
                (i / 250 % 250) as u8 + 1,
            ],
            40000 + (i % 250) as u16,
        );
        let mut c = TcpConv::new(
            client,
            ([10, 213, 1, 11], 80),
            (i.wrapping_mul(7919), 1000 + i),
        );
        c.send(true, b"GET / HTTP/1.1\r\nHost: lvs\r\n\r\n");
        c.send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        c.close();
        for mut r in c.recs {
            // one connection every 50 µs
            let t = u64::from(r.ts_sec) * 1_000_000 + u64::from(r.ts_usec) + u64::from(i) * 50;
            r.ts_sec = (t / 1_000_000) as u32;
            r.ts_usec = (t % 1_000_000) as u32;
            recs.push(r);
        }
    }
    recs.sort_by_key(|r| (r.ts_sec, r.ts_usec));
    let dir = tmpdir("lvs-same-bytes");
    let path = dir.join("same-bytes.pcap");
    write_pcap(&path, 1, &recs);
    let (doc, rss_kb) = run_measured(&[
        "analyze",
        "-q",
        "--lb-max-entries",
        "1024",
        path.to_str().unwrap(),
    ]);
    println!("same first bytes: {rss_kb} KiB peak RSS, {}", doc["limits"]);
    assert!(u(&doc["limits"]["lb_index_full"]) > 0, "{}", doc["limits"]);
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 80, "one edge per client address");
    assert!(edges
        .iter()
        .all(|e| e["server"] == "10.213.1.11:80" && e.get("nat").is_none()));
    assert_eq!(
        edges.iter().map(|e| u(&e["requests"])).sum::<u64>(),
        u64::from(n)
    );
    assert_eq!(
        edges.iter().map(|e| u(&e["connections"])).sum::<u64>(),
        u64::from(n)
    );
    assert!(rss_kb < 400 * 1024, "peak RSS {rss_kb} KiB");
}

#[test]
fn freshly_recorded_lab_matches_the_directors_conntrack() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to create network namespaces (CI runs as root)");
        return;
    }
    for tool in [
        "nginx",
        "redis-server",
        "dnsmasq",
        "dumpcap",
        "tcpdump",
        "dig",
        "curl",
        "redis-cli",
        "nft",
        "conntrack",
    ] {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success());
        assert!(
            found.unwrap_or(false),
            "{tool} is missing: .ci/run installs it"
        );
    }
    let dir = tmpdir("lvs-live");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lvs/record.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "record.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (mode, want) in [("nat", &NAT_EV), ("fullnat", &FULLNAT_EV)] {
        let d = dir.join(mode);
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap())
                .unwrap();
        let f = |n: &str| d.join(n).to_string_lossy().into_owned();
        let director = f("director.pcapng");
        check(
            &analyze_threads(&[&director]),
            &exp,
            want,
            &format!("live {mode} director"),
        );
        let (c, r1, r2) = (f("client.pcap"), f("rs1.pcap"), f("rs2.pcap"));
        check(
            &analyze_threads(&[&c, &r1, &r2]),
            &exp,
            want,
            &format!("live {mode} client+servers"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn captures_without_a_load_balancer_are_never_stitched() {
    // Every peer capture (real traffic from other projects, no LVS in any of them): not one
    // edge may be re-attributed.
    let Some(root) = peer("") else { return };
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng")
                && e.metadata().is_ok_and(|m| m.len() < 50 << 20)
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut read = 0;
    for f in &files {
        let out = run(&["analyze", "-q", f.to_str().unwrap()]);
        let Ok(doc) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue; // not a capture wiremap reads (exit 3): other tests cover those
        };
        read += 1;
        for e in doc["edges"].as_array().unwrap() {
            assert!(e.get("nat").is_none(), "{}: stitched {e}", f.display());
        }
        for n in doc["nodes"].as_array().unwrap() {
            assert_ne!(n["role"], "load_balancer", "{}: {n}", f.display());
        }
    }
    println!("{read} peer captures, none stitched");
    assert!(read > 10 || files.is_empty());
}

#[test]
fn identical_requests_of_two_clients_with_one_server_captured() {
    // The NAT lab's connections that went to rs2 are moved to a second client, 10.213.0.3,
    // and rs2 is not captured: the client legs of 10.213.0.2 and 10.213.0.3 carry identical
    // first requests ("GET /"), and only 10.213.0.2's have a real-server leg (rs1, FULLNAT-like,
    // clock +300 ms). Every rs1 leg must be paired with 10.213.0.2's own client leg.
    let exp = expected("nat");
    let to_rs2: HashSet<u16> = exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["backend"].as_str().unwrap().starts_with("10.213.2.12"))
        .map(|c| u(&c["client_port"]) as u16)
        .collect();
    assert!(to_rs2.len() >= 5);
    let (lt, recs) = read_pcap(&lab("nat", "client.pcap"));
    let two = lvs_rewrite::readdress(&recs, [10, 213, 0, 2], [10, 213, 0, 3], &to_rs2);
    let dir = tmpdir("lvs-two-clients");
    let client = dir.join("client.pcap");
    write_pcap(&client, lt, &two);
    let servers = rewritten("lvs-two-clients-rs", 300_000, no_toa);
    let doc = analyze_threads(&[client.to_str().unwrap(), &servers[0]]);
    let mut stitched = 0;
    for e in doc["edges"].as_array().unwrap() {
        if e["nat"].is_null() {
            continue;
        }
        stitched += u(&e["requests"]);
        assert!(
            e["server"].as_str().unwrap().contains("1::11]")
                || e["server"].as_str().unwrap().starts_with("10.213.1.11"),
            "{e}"
        );
        if !e["server"].as_str().unwrap().starts_with('[') {
            assert_eq!(e["nat"]["clients"], json!(["10.213.0.2"]), "{e}");
        }
    }
    // every request rs1 served (from conntrack and the clients), on a stitched edge
    let rs1_requests: u64 = exp["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["balanced"] == true
                && !c["backend"].as_str().unwrap().starts_with("10.213.2.12")
                && !c["backend"].as_str().unwrap().contains(":2::12]")
        })
        .map(|c| u(&c["requests"]))
        .sum();
    assert_eq!(stitched, rs1_requests, "{:#}", doc["edges"]);
    assert_eq!(doc["totals"]["l7_requests"], exp["l7_requests"]);
}
