#!/usr/bin/env python3
"""Compare a wiremap document with the answer wiremap-gen wrote for the same capture.

    benches/gen/check_document.py DOC.json EXPECTED.json

Every expected edge (client, server, transport, protocol) must be in the document with the
same connections, requests, responses, errors, codes, packets and bytes (TCP edges also
failed_connections, and no retransmissions or missed bytes: the generator writes neither),
and no other edge; totals packets, flows and l7_requests must be equal. Latency is not
predicted by the generator, so it is not compared. The rules of tests/generated.rs
(`assert_matches_expected`; change both together), for captures too large for a test. Prints one line; exit 0 when everything matches, 1
with the first differences otherwise.
"""
import json
import sys

FIELDS = ("connections", "requests", "responses", "errors", "codes", "packets", "bytes")
TOTALS = ("packets", "flows", "l7_requests")


def edge_key(e):
    return (e["client"], e["server"], e["transport"], e["protocol"])


def differences(doc, exp, most=10):
    got = {edge_key(e): e for e in doc["edges"]}
    out = []
    for w in exp["edges"]:
        g = got.pop(edge_key(w), None)
        if g is None:
            out.append(f"missing edge {edge_key(w)}")
            continue
        for f in FIELDS:
            if g.get(f) != w.get(f):
                out.append(f"{edge_key(w)} {f}: {g.get(f)} != expected {w.get(f)}")
        if w["transport"] == "tcp":
            if g.get("failed_connections") != w.get("failed_connections"):
                out.append(f"{edge_key(w)} failed_connections: {g.get('failed_connections')}")
            for f in ("retransmissions", "missed_bytes"):
                if g.get("tcp", {}).get(f, 0) != 0:
                    out.append(f"{edge_key(w)} tcp.{f}: {g['tcp'][f]}, expected 0")
    out.extend(f"unexpected edge {k}" for k in list(got)[:most])
    for f in TOTALS:
        if doc["totals"].get(f) != exp["totals"].get(f):
            out.append(f"totals.{f}: {doc['totals'].get(f)} != expected {exp['totals'].get(f)}")
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as d, open(sys.argv[2]) as e:
        doc, exp = json.load(d), json.load(e)
    diff = differences(doc, exp)
    t = exp["totals"]
    if diff:
        print(f"counts: wiremap differs from the generator's answer ({len(diff)} differences):")
        for line in diff[:10]:
            print(f"  {line}")
        return 1
    print(
        f"counts: wiremap's document equals the generator's answer: {len(exp['edges'])} edges, "
        f"{t['flows']} flows, {t['l7_requests']} requests, {t['packets']} packets"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
