#!/usr/bin/env python3
"""Paired timing of wiremap builds: runs each binary in turn on the same capture, N rounds,
and prints the medians of wall time and CPU time (user + system, all threads), each as a
change against the first binary. Alternating runs share the machine's slow and fast minutes,
so this compares builds where a table of absolute times cannot.

    python3 benches/ab.py N CAPTURE BINARY...
    e.g. python3 benches/ab.py 15 /tmp/gen.pcap /tmp/wiremap-before target/release/wiremap
"""
import resource
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    rounds, capture, binaries = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    walls = {b: [] for b in binaries}
    cpus = {b: [] for b in binaries}
    for _ in range(rounds):
        for b in binaries:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([b, "analyze", "-q", capture], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            walls[b].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[b].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    base = None
    for b in binaries:
        wall, cpu = statistics.median(walls[b]), statistics.median(cpus[b])
        base = base or (wall, cpu)
        print(f"{b:40} wall {wall:.4f} s ({100 * (wall / base[0] - 1):+.1f} %)"
              f"  cpu {cpu:.4f} s ({100 * (cpu / base[1] - 1):+.1f} %)")


main()
