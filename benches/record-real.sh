#!/usr/bin/env bash
# A large capture of real servers under real load generators, for benches/live-replay.sh
# (REPLAY_PCAP=FILE) and benches/compare.sh: the generated capture's counterpart.
#
#   bash benches/record-real.sh OUT.pcap [SCALE]       (root; a benchmark tool, not a test)
#
# tests/legacy/lab.sh's namespaces (wg-cli 10.212.0.2 -> wg-srv 10.212.0.1, a veth pair, no
# offloads so every frame is one packet). In wg-srv: nginx (lab.sh up), redis-server (lab.sh
# up) and mariadb (the labs' my.cnf and fixtures/lab/setup.sql). From wg-cli, at the same
# time, the stock load generators:
#   * ab -k (apache2-utils): SCALE x 30,000 keep-alive GETs of / and SCALE x 3,000 of the
#     404 page, 8 connections each;
#   * redis-benchmark: SCALE x 20,000 each of SET, GET, INCR, LPUSH, RPOP and HSET, 16
#     connections, no pipelining;
#   * mariadb-slap: SCALE x 6,000 queries (a point SELECT), 4 connections.
# tcpdump records wgs0 (whole frames). The MAC addresses are then rewritten to ones no
# namespace has, so replaying the file into wg-cli reaches packet sockets on wg-srv and
# nothing else (no resets from wg-srv's stack). The clients' own counts go to OUT.clients,
# to check what an analyser makes of the file against.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../tests/support/lab-lib.sh
. "$REPO/tests/support/lab-lib.sh"
die() { echo "record-real.sh: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: record-real.sh OUT.pcap [SCALE]"
[[ $EUID -eq 0 ]] || die "needs root (namespaces, capture)"
for tool in ab redis-benchmark mariadb-slap tcpdump tcprewrite ethtool nginx redis-server mariadbd; do
    command -v "$tool" >/dev/null || die "missing $tool (Debian: apache2-utils, redis-tools, mariadb-client, tcpdump, tcpreplay, ethtool, nginx, redis-server, mariadb-server)"
done
OUT=$1
SCALE=${2:-1}
[[ $SCALE =~ ^[1-9][0-9]?$ ]] || die "SCALE is 1 to 99"

WORK=$(mktemp -d /tmp/wg-real.XXXXXX)
LAB=$WORK/lab
CAP_PID=""
cleanup() {
    set +e
    [[ -n $CAP_PID ]] && kill "$CAP_PID" 2>/dev/null
    bash "$REPO/tests/legacy/lab.sh" down "$LAB"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SRV=10.212.0.1
bash "$REPO/tests/legacy/lab.sh" up "$LAB"
chmod 755 "$WORK"   # mariadbd runs as mysql and needs to reach its data dir below it
lab_mariadb_conf "$LAB/my.cnf" "$SRV"
lab_mariadb_start wg-srv "$LAB" "$LAB/my.cnf"
echo $! >> "$LAB/pids"
lab_mariadb_setup wg-srv "$LAB" "$REPO/fixtures/lab/setup.sql"
lab_wait_listen wg-srv tcp 3306 mariadb 100
for side in "wg-cli wgc0" "wg-srv wgs0"; do
    read -r ns dev <<< "$side"
    ip netns exec "$ns" ethtool -K "$dev" gro off gso off tso off >/dev/null 2>&1 || true
done

ip netns exec wg-srv tcpdump -n -i wgs0 -s 0 -B 262144 -w "$WORK/raw.pcap" 2> "$WORK/tcpdump.err" &
CAP_PID=$!
for _ in $(seq 1 200); do grep -q 'listening on' "$WORK/tcpdump.err" 2>/dev/null && break; sleep 0.05; done
grep -q 'listening on' "$WORK/tcpdump.err" || die "tcpdump did not start: $(cat "$WORK/tcpdump.err")"

cli() { ip netns exec wg-cli timeout 600 "$@"; }
cli ab -k -q -c 8 -n $((SCALE * 30000)) "http://$SRV/" > "$WORK/ab-ok.out" 2>&1 &
p1=$!
cli ab -k -q -c 8 -n $((SCALE * 3000)) "http://$SRV/notfound" > "$WORK/ab-404.out" 2>&1 &
p2=$!
cli redis-benchmark -h "$SRV" -c 16 -n $((SCALE * 20000)) -t set,get,incr,lpush,rpop,hset \
    --csv > "$WORK/redis.out" 2>&1 &
p3=$!
cli mariadb-slap --host="$SRV" --user=app --password=lab-secret --create-schema=shop \
    --no-drop --concurrency=4 --number-of-queries=$((SCALE * 6000)) \
    --query="SELECT name FROM items WHERE id = 1" > "$WORK/slap.out" 2>&1 &
p4=$!
rc=0
for p in $p1 $p2 $p3 $p4; do wait "$p" || rc=1; done
sleep 1
kill -INT "$CAP_PID"
wait "$CAP_PID" || true
CAP_PID=""
cat "$WORK"/ab-ok.out "$WORK"/ab-404.out "$WORK"/redis.out "$WORK"/slap.out > "$WORK/clients.all"
(( rc == 0 )) || die "a load generator failed: $(tail -n 20 "$WORK/clients.all")"
grep -qx '0 packets dropped by kernel' "$WORK/tcpdump.err" \
    || die "tcpdump lost packets while recording: $(cat "$WORK/tcpdump.err")"

tcprewrite --enet-smac=02:d4:00:00:0f:02 --enet-dmac=02:d4:00:00:0f:01 \
    --infile="$WORK/raw.pcap" --outfile="$OUT"

{
    echo "http_requests $(awk '/^Complete requests:/ { s += $3 } END { print s }' "$WORK"/ab-*.out)"
    echo "http_non_2xx $(awk '/^Non-2xx responses:/ { s += $3 } END { print s + 0 }' "$WORK"/ab-*.out)"
    echo "http_failed $(awk '/^Failed requests:/ { s += $3 } END { print s }' "$WORK"/ab-*.out)"
    echo "redis_benchmark_commands $((SCALE * 20000 * 6))"
    echo "mysql_queries $((SCALE * 6000))"
} > "$OUT.clients"
echo "record-real.sh: $(grep -o '[0-9]* packets captured' "$WORK/tcpdump.err") into $OUT; the clients' counts in $OUT.clients" >&2
cat "$OUT.clients" >&2
