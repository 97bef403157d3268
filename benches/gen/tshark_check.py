#!/usr/bin/env python3
"""Compare a wiremap-gen capture with its --expected file, as tshark reads the capture.

    python3 benches/gen/tshark_check.py out.pcap out.expected.json

Prints one line per check ("ok" or "MISMATCH") and exits 1 on any mismatch. Needs tshark (4.x).
Meant for small captures (tshark is slow: ~10k packets/s per pass, and this makes a few passes).
"""
import collections
import json
import subprocess
import sys


def tshark(pcap, *args):
    cmd = ["tshark", "-r", pcap, "-d", "tcp.port==6379,resp", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def fields(pcap, flt, *names):
    args = ["-Y", flt, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for n in names:
        args += ["-e", n]
    return [line.split("\t") for line in tshark(pcap, *args).splitlines()]


def main():
    pcap, exp_path = sys.argv[1], sys.argv[2]
    exp = json.load(open(exp_path))
    tot, per = exp["totals"], exp["per_protocol"]
    got = {}
    bad = 0

    def check(name, have, want):
        nonlocal bad
        ok = have == want
        bad += not ok
        print(f"{'ok      ' if ok else 'MISMATCH'} {name}: tshark {have}, expected {want}")

    check("packets", int(tshark(pcap, "-T", "fields", "-e", "frame.number").splitlines()[-1]), tot["packets"])
    check("malformed packets", len(tshark(pcap, "-Y", "_ws.malformed").splitlines()), 0)
    check("expert warnings/errors", len(tshark(pcap, "-Y", '_ws.expert.severity >= "warning"').splitlines()), 0)
    check("tcp.analysis.flags", len(tshark(pcap, "-Y", "tcp.analysis.flags").splitlines()), 0)
    conv = lambda kind: sum(1 for l in tshark(pcap, "-q", "-z", f"conv,{kind}").splitlines() if "<->" in l)
    check("TCP conversations", conv("tcp"), tot["tcp_connections"])
    check("UDP conversations (no 5-tuple reuse within 60 s assumed)", conv("udp"), tot["udp_flows"])
    check("SYN-ACKs", len(tshark(pcap, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==1").splitlines()), tot["tcp_connections"])

    # HTTP
    req = len(tshark(pcap, "-Y", "http.request").splitlines())
    codes = collections.Counter(r[0] for r in fields(pcap, "http.response", "http.response.code"))
    check("HTTP requests", req, per["tcp/http"]["requests"])
    check("HTTP responses", sum(codes.values()), per["tcp/http"]["responses"])
    check("HTTP errors (>= 400)", sum(v for k, v in codes.items() if int(k) >= 400), per["tcp/http"]["errors"])

    # MySQL: COM_QUERY (3) are the requests; COM_QUIT (1) is not.
    cmds = collections.Counter(c for r in fields(pcap, "mysql.command", "mysql.command") for c in r[0].split("|"))
    check("MySQL COM_QUERY", cmds.get("3", 0), per["tcp/mysql"]["requests"])
    check("MySQL COM_QUIT = connections", cmds.get("1", 0), per["tcp/mysql"]["connections"])
    errs = collections.Counter(c for r in fields(pcap, "mysql.error_code", "mysql.error_code") for c in r[0].split("|"))
    check("MySQL ERR 1146", errs.get("1146", 0), per["tcp/mysql"]["errors"])

    # Redis: each top-level array sent to the server is one command; each error reply one error.
    cmds = sum(len(r[0].split("|")) for r in fields(pcap, "tcp.dstport==6379 && resp.array", "resp.array.length"))
    check("Redis commands", cmds, per["tcp/redis"]["requests"])
    errs = collections.Counter(
        e.split(" ")[0] for r in fields(pcap, "tcp.srcport==6379 && resp.error", "resp.error") for e in r[0].split("|")
    )
    check("Redis error replies", sum(errs.values()), per["tcp/redis"]["errors"])
    for k in ("ERR", "WRONGTYPE"):
        check(f"Redis {k}", errs.get(k, 0), tot["codes"].get(k, 0))

    # DNS
    for tr in ("udp", "tcp"):
        q = fields(pcap, f"{tr} && dns.flags.response==0", "dns.id")
        r = fields(pcap, f"{tr} && dns.flags.response==1", "dns.flags.rcode")
        n = sum(len(x[0].split("|")) for x in q)
        rc = collections.Counter(c for x in r for c in x[0].split("|"))
        check(f"DNS/{tr} queries", n, per[f"{tr}/dns"]["requests"])
        check(f"DNS/{tr} responses", sum(rc.values()), per[f"{tr}/dns"]["responses"])
        check(f"DNS/{tr} NXDOMAIN", rc.get("3", 0), per[f"{tr}/dns"]["errors"])

    # Codes across all edges.
    check("HTTP codes", {k: v for k, v in sorted(codes.items())},
          {k: v for k, v in sorted(tot["codes"].items()) if k.isdigit()})
    print("all checks passed" if bad == 0 else f"{bad} check(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
