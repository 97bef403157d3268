#!/usr/bin/env bash
# Small real-traffic lab for tests/legacy_kernel.rs and benches/live-replay.sh (root only).
#
#   lab.sh up DIR              namespaces and veth; with servers: nginx + redis-server in wg-srv
#   lab.sh bare DIR            namespaces and veth only (the replay benchmark)
#   lab.sh workload DIR ROUNDS the clients' workload from wg-cli; prints the expected edges
#                              (JSON, counted from the clients' own output) on stdout
#   lab.sh down DIR            stop the servers (by pid), delete the namespaces
#
#   wg-cli [wgc0] ------veth------ [wgs0] wg-srv
#   10.212.0.2/24                  10.212.0.1/24
#   fd00:212::2/64                 fd00:212::1/64
#
# Only 10.212.0.0/24 and fd00:212::/64, inside our own namespaces (names wg-*). Static
# neighbours and no link-local addresses keep ARP/NDP out of the captures. Every wait is
# bounded. Servers are set up as fixtures/lab/record.sh does (private prefix and data dirs).
set -euo pipefail

NS_S=wg-srv
NS_C=wg-cli
SRV4=10.212.0.1
CLI4=10.212.0.2
SRV6=fd00:212::1
CLI6=fd00:212::2
MAC_S=02:d4:00:00:00:01
MAC_C=02:d4:00:00:00:02

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../support/lab-lib.sh
. "$HERE/../support/lab-lib.sh"

die() { echo "lab.sh: $*" >&2; exit 1; }

down() { lab_down "$1" "$NS_S" "$NS_C"; }

links() {
    local dir=$1
    down "$dir"
    mkdir -p "$dir"
    : > "$dir/pids"
    lab_ns_add "$NS_S" "$NS_C"
    lab_p2p "$NS_C" wgc0 "$MAC_C" "$CLI4/24 $CLI6/64" "$NS_S" wgs0 "$MAC_S" "$SRV4/24 $SRV6/64"
}

up() {
    local dir=$1
    links "$dir"
    mkdir -p "$dir/redis"
    lab_nginx_site "$dir/nginx" ok
    lab_nginx_conf "$dir/nginx.conf" "$SRV4" "$SRV6"
    lab_nginx_start "$NS_S" "$dir/nginx" "$dir/nginx.conf" "$dir/nginx.out"
    echo $! >> "$dir/pids"
    lab_redis_start "$NS_S" "$dir/redis" "$dir/redis.out" --bind "$SRV4"
    echo $! >> "$dir/pids"
    lab_wait_listen "$NS_S" tcp 80 nginx 100
    lab_wait_listen "$NS_S" tcp 6379 redis 100
}

workload() {
    local rounds=$2 r
    for r in $(seq 1 "$rounds"); do
        lab_http_round "$NS_C" "$SRV4" "$SRV6"
        lab_redis_round "$NS_C" "$SRV4" "SET k$r v" "INCR k$r" "PING"
    done
    cat <<EOF
{"edges":[
 $(lab_edge_json http4 "$CLI4" "$SRV4:80" tcp http),
 $(lab_edge_json http6 "$CLI6" "[$SRV6]:80" tcp http),
 $(lab_edge_json redis "$CLI4" "$SRV4:6379" tcp redis)
]}
EOF
}

case ${1:-} in
    up) up "$2" ;;
    bare) links "$2" ;;
    workload) workload "$2" "$3" ;;
    down) down "$2" ;;
    *) die "usage: lab.sh up|bare|workload|down DIR [ROUNDS]" ;;
esac
