#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (tests/fuzz/corpus/<target>/), in the input formats of
tests/fuzz-regressions/harness.rs.

  seeds.py REPO_DIR PEER_PCAPS_DIR OUT_DIR

Parser targets get each TCP stream's (or UDP flow's) payloads as records, direction by
the side that sent first; `decode` gets raw frames with their link type; `capture_file` gets
capture files (whole and cut, plain and gzip-compressed); `pipeline` gets captures converted to its record format.
Needs tshark and editcap. The corpora stay out of git.
"""
import gzip
import hashlib
import os
import ssl
import struct
import subprocess
import sys
import tempfile

LINKTYPES = [1, 113, 276, 101, 228, 229, 0, 108, 12]
PARSER_MAX = 16 * 1024
FILE_MAX = 64 * 1024


def write(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rec(hdr, body):
    return bytes([hdr]) + struct.pack("<H", len(body)) + body


def as_pcap(path):
    """A pcap (not pcapng) copy of path, for reading records here."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"\x0a\x0d\x0d\x0a":
        return path, None
    tmp = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False)
    tmp.close()
    r = subprocess.run(["editcap", "-F", "pcap", path, tmp.name], capture_output=True)
    if r.returncode != 0:
        os.unlink(tmp.name)
        return None, None
    return tmp.name, tmp.name


def pcap_records(path):
    """(linktype, [(ts_sec, ts_frac, data, orig_len)]) of a classic pcap."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 24:
        return None, []
    magic = struct.unpack("<I", buf[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        return None, []
    linktype = struct.unpack(e + "I", buf[20:24])[0] & 0x0FFFFFFF
    off, out = 24, []
    while off + 16 <= len(buf):
        sec, frac, incl, orig = struct.unpack(e + "IIII", buf[off:off + 16])
        off += 16
        out.append((sec, frac, buf[off:off + incl], orig))
        off += incl
    return linktype, out


def streams(path, l4):
    """{stream: [(dir, payload)]} from tshark; dir 0 for the side that sent first."""
    if l4 == "tcp":
        fields = ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "tcp.payload"]
        flt = "tcp.len > 0"
    else:
        fields = ["udp.stream", "ip.src", "ipv6.src", "udp.srcport", "udp.payload"]
        flt = "udp.length > 8"
    cmd = ["tshark", "-r", path, "-Y", flt, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    r = subprocess.run(cmd, capture_output=True, text=True)
    got, first = {}, {}
    for line in r.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 5 or not parts[4]:
            continue
        stream, ip4, ip6, port, hexdata = parts
        src = (ip4 or ip6, port)
        first.setdefault(stream, src)
        try:
            data = bytes.fromhex(hexdata.replace(":", ""))
        except ValueError:
            continue
        got.setdefault(stream, []).append((0 if first[stream] == src else 1, data))
    return got


def parser_seeds(out, target, l4, path):
    for pkts in streams(path, l4).values():
        for cfg in (0, 1):
            data = bytes([cfg])
            for d, p in pkts:
                if len(data) + len(p) + 3 > PARSER_MAX:
                    break
                data += rec(d, p)
            if len(data) > 1:
                write(out, target, data)


def tls_seeds(out):
    """A ClientHello (with SNI) from Python's ssl, and a hand-made ServerHello."""
    try:
        ctx = ssl.create_default_context()
        inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, outg, server_hostname="example.com")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outg.read()
    except Exception:
        hello = b""
    body = struct.pack(">H", 0x0303) + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00"
    sh = b"\x02" + struct.pack(">I", len(body))[1:] + body
    server = b"\x16\x03\x03" + struct.pack(">H", len(sh)) + sh
    for cfg in (0, 1, 0x10):
        write(out, "tls_sni", bytes([cfg]) + rec(0, hello) + rec(1, server) + rec(0, b"\x17\x03\x03\x00\x05hello"))
        write(out, "tls_sni", bytes([cfg]) + rec(0x18, hello))


def main():
    repo, peer, out = sys.argv[1:4]
    manifest = os.path.join(peer, "MANIFEST.tsv")
    files = []
    if os.path.exists(manifest):
        with open(manifest) as f:
            next(f)
            for line in f:
                cols = line.rstrip("\n").split("\t")
                files.append((os.path.join(peer, cols[0]), cols[3], int(cols[12])))
    fixtures = [os.path.join(repo, "fixtures", n) for n in sorted(os.listdir(os.path.join(repo, "fixtures")))
                if ".pcap" in n]

    for path, protos, size in files:
        if size > 300_000:
            continue
        if "HTTP" in protos:
            parser_seeds(out, "http", "tcp", path)
        if "DNS" in protos:
            parser_seeds(out, "dns_udp", "udp", path)
            parser_seeds(out, "dns_tcp", "tcp", path)
        if "MySQL" in protos:
            parser_seeds(out, "mysql", "tcp", path)
        if "Redis" in protos:
            parser_seeds(out, "redis", "tcp", path)
    for path in fixtures:
        for t in ("http", "mysql", "redis", "dns_tcp"):
            parser_seeds(out, t, "tcp", path)
        parser_seeds(out, "dns_udp", "udp", path)
    tls_seeds(out)

    for path in fixtures + [p for p, _, s in files if s <= FILE_MAX]:
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) <= FILE_MAX:
            write(out, "capture_file", raw)
        write(out, "capture_file", raw[: min(len(raw), FILE_MAX) * 2 // 3])
        # Compressed captures are read as they are: whole, and the stream cut short.
        packed = gzip.compress(raw[:FILE_MAX * 4], mtime=0)
        if len(packed) <= FILE_MAX:
            write(out, "capture_file", packed)
        write(out, "capture_file", packed[: min(len(packed), FILE_MAX) * 2 // 3])
        pcap, tmp = as_pcap(path)
        if pcap is None:
            continue
        linktype, recs = pcap_records(pcap)
        if tmp:
            os.unlink(tmp)
        if linktype not in LINKTYPES:
            continue
        idx = LINKTYPES.index(linktype)
        # decode: a few frames per seed.
        for i in range(0, min(len(recs), 64), 4):
            data = bytes([idx]) + b"".join(rec(1, r[2]) for r in recs[i:i + 4])
            write(out, "decode", data)
        # pipeline: the capture in the harness's record format (1 ms apart).
        data = bytes([idx])
        for _, _, frame, orig in recs:
            if len(data) + len(frame) + 3 > FILE_MAX:
                break
            data += rec(1 | (0x80 if orig > len(frame) else 0), frame)
        write(out, "pipeline", data)
        write(out, "pipeline", bytes([idx | 0x20]) + data[1:])


if __name__ == "__main__":
    main()
