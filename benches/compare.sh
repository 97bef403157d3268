#!/usr/bin/env bash
# Times wiremap against its peers on the same capture, in one run, and prints ratios.
#
#   benches/compare.sh [--packets N] [--flows C] [--max-requests Q] [--runs R] [--scaling]
#                      [--lengths "N1 N2 ..."] [--keep]
#
# A capture of N packets with about C concurrent connections (mixed HTTP, Redis, MySQL, DNS;
# wiremap-gen) is analysed in turn by: wiremap analyze, ndpiReader -i FILE, tshark -r FILE
# -q -z conv,tcp, and tcpdump -r FILE -w /dev/null (the read floor: reading alone), in turn,
# R rounds; the table shows median wall time, packets per second, peak RSS, and wiremap's
# speed as a ratio to each: the ratio of the medians, and the median and range of the
# ratios within each round. Machines here are noisy: read the ratios and medians. A ratio
# counts only for a correct run: wiremap's document on each generated capture is checked
# against the generator's own answer (benches/gen/check_document.py: every edge's
# connections, requests, responses, errors, codes, packets and bytes, and the totals), and
# the script fails when they differ.
# --max-requests caps requests per TCP connection (wiremap-gen): with 1, 1 M packets can hold
# 100 k connections open at once. --scaling adds wiremap with 1 and 2 threads, and 10k / 100k /
# 1M concurrent flows (one request per connection, at least 11 packets per connection; see
# below). --lengths adds wiremap's peak RSS on captures of each length with the same
# concurrency (C), and the edges and flows tracked: memory should follow the flows open at
# once and the edges, not the length of the capture (each N needs N x ~480 bytes of /tmp).
# wiremap is the release build of scripts/build-release.sh (PGO where it can run: as root).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKETS=10000000
FLOWS=100000
RUNS=3
MAXREQ=0
SCALING=0
LENGTHS=""
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --packets) PACKETS=$2; shift 2 ;;
    --flows) FLOWS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --max-requests) MAXREQ=$2; shift 2 ;;
    --scaling) SCALING=1; shift ;;
    --lengths) LENGTHS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--packets N] [--flows C] [--max-requests Q] [--runs R] [--scaling] [--lengths \"N1 N2 ...\"] [--keep]" >&2; exit 2 ;;
  esac
done
for tool in tshark tcpdump ndpiReader /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install tshark tcpdump libndpi-bin time)" >&2; exit 1; }
done

# The binary users deploy: the release build optimised with a profile (scripts/build-release.sh;
# WIREMAP_PGO=0 times the plain `cargo build --release` one instead). It says which it built.
cargo build --release --quiet --bin wiremap-gen
WIREMAP=$(bash scripts/build-release.sh)
GEN=$PWD/target/release/wiremap-gen
WORK=$(mktemp -d /tmp/wiremap-compare.XXXXXX)
[[ $KEEP == 1 ]] || trap 'rm -rf "$WORK"' EXIT

capture() { # packets flows [mean µs between packets] -> path
  local step=${3:-10}
  local f="$WORK/gen-$1-$2-$MAXREQ-$step.pcap"
  [[ -e $f ]] || "$GEN" --packets "$1" --flows-concurrent "$2" --clients 5000 --seed 1 \
    --max-requests "$MAXREQ" --step-us "$step" -o "$f" --expected "$f.expected.json" >&2
  echo "$f"
}

# Every request counted? wiremap once more on capture $1 (untimed: the same binary and input
# as the timed runs), its document against the generator's answer. Prints one line; fails
# when they differ.
# (A file marks a difference: the scaling rows are checked inside a pipeline's subshell.)
check_counts() { # capture, then wiremap's extra arguments
  local f=$1; shift
  "$WIREMAP" analyze -q "$@" "$f" >"$WORK/check.json" 2>/dev/null \
    && python3 benches/gen/check_document.py "$WORK/check.json" "$f.expected.json" \
    || { touch "$WORK/counts-differ"; return 1; }
}

# median of "seconds rss_kb" lines: prints "median_seconds max_rss_kb"
median() { sort -n | awk '{t[NR]=$1; if ($2>m) m=$2} END {printf "%s %s\n", t[int((NR+1)/2)], m}'; }

measure() { # label, then the command
  local label=$1; shift
  local out=""
  for ((i = 0; i < RUNS; i++)); do
    /usr/bin/time -o "$WORK/time" -f "%e %M" "$@" >/dev/null 2>&1 || true
    out+=$(tail -1 "$WORK/time")$'\n'
  done
  printf '%s\t%s\n' "$label" "$(printf '%s' "$out" | median)"
}

FILE=$(capture "$PACKETS" "$FLOWS")
N=$(tcpdump -r "$FILE" -w /dev/null 2>&1 | awk '/packets/ {print $1; exit}' || true)
N=${N:-$PACKETS}
SIZE=$(du -m "$FILE" | cut -f1)
echo "capture: $FILE ($N packets, $SIZE MB, $FLOWS concurrent flows asked for: wiremap-gen says above how many were open at once); $RUNS runs each; page cache warm"
cat "$FILE" > /dev/null

# The four tools run in turn within each round, RUNS rounds: a slow or fast minute then
# touches every tool alike, and each round gives one ratio per tool (that tool's time over
# wiremap's in the same round), whose median and range are printed beside the ratio of
# the medians.
TOOLS=("wiremap analyze" "ndpiReader -i" "tshark -z conv,tcp" "tcpdump -w /dev/null")
tool_command() { # index -> the command, in CMD
  case $1 in
    0) CMD=("$WIREMAP" analyze -q "$FILE") ;;
    1) CMD=(ndpiReader -q -i "$FILE") ;;
    2) CMD=(tshark -r "$FILE" -q -z conv,tcp) ;;
    3) CMD=(tcpdump -r "$FILE" -w /dev/null) ;;
  esac
}
for ((i = 0; i < RUNS; i++)); do
  for t in 0 1 2 3; do
    tool_command "$t"
    /usr/bin/time -o "$WORK/time" -f "%e %M" "${CMD[@]}" >/dev/null 2>&1 || true
    tail -1 "$WORK/time" >>"$WORK/times.$t"
  done
done
echo
printf '%-24s %12s %14s %12s %18s %22s\n' tool "median s" "packets/s" "peak RSS MB" "wiremap speed x" "per round: median (range)"
python3 - "$WORK" "$N" "${TOOLS[@]}" <<'PY'
import statistics, sys
work, n, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = [[tuple(map(float, l.split())) for l in open(f"{work}/times.{t}")] for t in range(len(tools))]
wm = [r[0] for r in rows[0]]
for label, runs in zip(tools, rows):
    secs = [r[0] for r in runs]
    med, rss = statistics.median(secs), max(r[1] for r in runs)
    ratio = med / statistics.median(wm) if statistics.median(wm) > 0 else 0
    paired = [s / w for s, w in zip(secs, wm) if w > 0]
    per_round = (f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})"
                 if paired else "-")
    pps = n / med if med > 0 else 0
    print(f"{label:<24} {med:12.2f} {pps:14.0f} {rss / 1024:12.0f} {ratio:18.2f} {per_round:>22}")
PY
echo "(wiremap speed x = that tool's median time / wiremap's: >1 means wiremap is faster;"
echo " for tcpdump it is the read floor, wiremap's distance from reading alone. Per round: the"
echo " same ratio within each round of the four tools run in turn, its median and range)"
check_counts "$FILE" || true

if [[ $SCALING == 1 ]]; then
  echo
  echo "scaling: wiremap on $N packets"
  printf '%-34s %12s %14s %12s %8s\n' case "median s" "packets/s" "peak RSS MB" counts
  for t in 1 2; do
    measure "threads=$t" "$WIREMAP" analyze -q --threads "$t" "$FILE"
  done | while IFS=$'\t' read -r label stats; do
    read -r secs rss <<<"$stats"
    awk -v l="$label" -v s="$secs" -v r="$rss" -v n="$N" 'BEGIN {printf "%-34s %12.2f %14.0f %12.0f\n", l, s, n/s, r/1024}'
  done
  # By connections open at once. A connection of one request is about 10 packets, so each
  # row's capture has one request per connection and at least 11 packets per connection
  # asked for (1 M open at once takes 11 M packets, ~3 GB of /tmp); the generator's summary
  # line says how many were open at once. Packets come closer together as connections get
  # more (10 µs apart up to 100 k, 1 µs at 1 M: a host with a million connections is a
  # busy one), so a connection's packets stay about a second apart: at 10 µs and 1 M open,
  # answers came up to 69 s after their question, past the 60 s UDP and the 10 s closed
  # linger timeouts, which split flows the generator counts as one. The flow limit is
  # raised to twice the connections open at once: closed connections linger 10 s and UDP
  # flows 60 s, so at 1 M open the table holds more than 1 M flows (the default,
  # --max-flows 1000000, evicts and says so in limits.flows_evicted).
  echo "(by open connections: one request per connection; each capture's own packet count;"
  echo " counts: wiremap's document against the generator's answer for that capture)"
  for c in 10000 100000 1000000; do
    n=$((11 * c > PACKETS ? 11 * c : PACKETS))
    step=$((1000000 / c)); step=$((step > 10 ? 10 : step < 1 ? 1 : step))
    maxflows=$((2 * c > 1000000 ? 2 * c : 1000000))
    f=$(MAXREQ=1 capture "$n" "$c" "$step")
    m=$(tcpdump -r "$f" -w /dev/null 2>&1 | awk '/packets/ {print $1; exit}' || true)
    stats=$(measure "concurrent flows=$c" "$WIREMAP" analyze -q --max-flows "$maxflows" "$f")
    counts=exact
    check_counts "$f" --max-flows "$maxflows" >/dev/null || counts=DIFFER
    printf '%s\t%s\t%s\n' "$stats" "${m:-$n}" "$counts"
    [[ $KEEP == 1 || $f == "$FILE" ]] || rm -f "$f" "$f.expected.json"
  done | while IFS=$'\t' read -r label stats n counts; do
    read -r secs rss <<<"$stats"
    awk -v l="$label ($n packets)" -v s="$secs" -v r="$rss" -v n="$n" -v c="$counts" \
      'BEGIN {printf "%-34s %12.2f %14.0f %12.0f %8s\n", l, s, n/s, r/1024, c}'
  done
fi

if [[ -n $LENGTHS ]]; then
  echo
  echo "memory by capture length: $FLOWS concurrent flows asked for, one run each"
  printf '%-12s %12s %12s %10s %14s\n' packets seconds "peak RSS MB" edges displaced
  for n in $LENGTHS; do
    f=$(capture "$n" "$FLOWS")
    /usr/bin/time -o "$WORK/time" -f "%e %M" "$WIREMAP" analyze -q "$f" >"$WORK/doc.json" 2>/dev/null
    read -r secs rss <"$WORK/time"
    python3 - "$n" "$secs" "$rss" "$WORK/doc.json" <<'PY'
import json, sys
n, secs, rss, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = json.load(open(path))
print(f"{n:<12} {secs:12.2f} {rss / 1024:12.0f} {len(d['edges']):10d} {d['limits']['resources_displaced']:14d}")
PY
    [[ $KEEP == 1 ]] || rm -f "$f"
  done
fi

[[ ! -e $WORK/counts-differ ]] || { echo "compare.sh: wiremap's counts differ from the generator's answer" >&2; exit 1; }
