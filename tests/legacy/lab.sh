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

die() { echo "lab.sh: $*" >&2; exit 1; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

down() {
    local dir=$1 pid ns i
    if [[ -f "$dir/pids" ]]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done < "$dir/pids"
        while read -r pid; do
            for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        done < "$dir/pids"
        rm -f "$dir/pids"
    fi
    for ns in "$NS_S" "$NS_C"; do
        ns_exists "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

listening() { ip netns exec "$NS_S" ss -ltnH "sport = :$1" | grep -q .; }

wait_listen() {   # wait_listen PORT NAME
    local i
    for i in $(seq 1 100); do
        listening "$1" && return 0
        sleep 0.1
    done
    die "$2 does not listen on $1"
}

links() {
    local dir=$1
    down "$dir"
    mkdir -p "$dir"
    : > "$dir/pids"
    ip netns add "$NS_S"
    ip netns add "$NS_C"
    ip -n "$NS_S" link set lo up
    ip -n "$NS_C" link set lo up
    ip -n "$NS_C" link add wgc0 address "$MAC_C" type veth peer name wgs0 address "$MAC_S" netns "$NS_S"
    ip -n "$NS_C" link set wgc0 addrgenmode none
    ip -n "$NS_S" link set wgs0 addrgenmode none
    ip -n "$NS_C" addr add "$CLI4/24" dev wgc0
    ip -n "$NS_C" addr add "$CLI6/64" dev wgc0 nodad
    ip -n "$NS_S" addr add "$SRV4/24" dev wgs0
    ip -n "$NS_S" addr add "$SRV6/64" dev wgs0 nodad
    ip -n "$NS_C" link set wgc0 up
    ip -n "$NS_S" link set wgs0 up
    ip -n "$NS_C" neigh replace "$SRV4" lladdr "$MAC_S" dev wgc0 nud permanent
    ip -n "$NS_C" neigh replace "$SRV6" lladdr "$MAC_S" dev wgc0 nud permanent
    ip -n "$NS_S" neigh replace "$CLI4" lladdr "$MAC_C" dev wgs0 nud permanent
    ip -n "$NS_S" neigh replace "$CLI6" lladdr "$MAC_C" dev wgs0 nud permanent
}

up() {
    local dir=$1
    links "$dir"
    mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp" "$dir/nginx/html" "$dir/redis"
    echo ok > "$dir/nginx/html/index.html"
    chmod -R a+rX "$dir/nginx"
    cat > "$dir/nginx.conf" <<EOF
user www-data;
worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_timeout 30s;
    server {
        listen $SRV4:80;
        listen [$SRV6]:80;
        root html;
        location = /notfound { return 404; }
        location = /boom { return 500; }
    }
}
EOF
    # Servers get their own output files: an inherited pipe would keep a caller that reads
    # this script's output waiting for as long as they run.
    ip netns exec "$NS_S" nginx -p "$dir/nginx/" -c "$dir/nginx.conf" -e logs/error.log \
        < /dev/null > "$dir/nginx.out" 2>&1 &
    echo $! >> "$dir/pids"
    ip netns exec "$NS_S" redis-server --bind "$SRV4" --port 6379 --protected-mode no \
        --save '' --appendonly no --dir "$dir/redis" --logfile "$dir/redis/redis.log" \
        < /dev/null > "$dir/redis.out" 2>&1 &
    echo $! >> "$dir/pids"
    wait_listen 80 nginx
    wait_listen 6379 redis
}

workload() {
    local dir=$1 rounds=$2 r out code nconn line
    local http_c=0 http_r=0 http6_c=0 http6_r=0 redis_c=0 redis_r=0
    declare -A hc h6c rc
    for r in $(seq 1 "$rounds"); do
        # One connection, two requests (keep-alive); curl says how many connections it made.
        out=$(timeout 10 ip netns exec "$NS_C" curl -sS -o /dev/null -o /dev/null \
            -w '%{http_code} %{num_connects}\n' "http://$SRV4/" "http://$SRV4/notfound") \
            || die "curl v4 failed"
        while read -r code nconn; do
            [[ $code =~ ^[0-9]{3}$ && $code != 000 ]] || die "curl v4: no response"
            http_c=$((http_c + nconn)); http_r=$((http_r + 1)); hc[$code]=$(( ${hc[$code]:-0} + 1 ))
        done <<< "$out"
        out=$(timeout 10 ip netns exec "$NS_C" curl -sS -g -o /dev/null \
            -w '%{http_code} %{num_connects}\n' "http://[$SRV6]/boom") || die "curl v6 failed"
        read -r code nconn <<< "$out"
        [[ $code =~ ^[0-9]{3}$ && $code != 000 ]] || die "curl v6: no response"
        http6_c=$((http6_c + nconn)); http6_r=$((http6_r + 1)); h6c[$code]=$(( ${h6c[$code]:-0} + 1 ))
        # One connection and one command per redis-cli; its reply says whether it failed.
        for cmd in "SET k$r v" "INCR k$r" "PING"; do
            # shellcheck disable=SC2086
            line=$(timeout 10 ip netns exec "$NS_C" redis-cli -h "$SRV4" $cmd) || die "redis-cli failed"
            [[ -n $line ]] || die "redis-cli: no reply to $cmd"
            redis_c=$((redis_c + 1)); redis_r=$((redis_r + 1))
            case $line in
                ERR\ *|WRONGTYPE\ *) code=${line%% *} ;;
                *) code=OK ;;
            esac
            rc[$code]=$(( ${rc[$code]:-0} + 1 ))
        done
    done
    codes() { local -n m=$1; local k s=""; for k in "${!m[@]}"; do s+="\"$k\":${m[$k]},"; done; echo "{${s%,}}"; }
    errs() { local -n m=$1; local k n=0; for k in "${!m[@]}"; do
        [[ $2 == http && $k -ge 400 ]] && n=$((n + m[$k])); [[ $2 == redis && $k != OK ]] && n=$((n + m[$k])); done; echo $n; }
    cat <<EOF
{"edges":[
 {"client":"$CLI4","server":"$SRV4:80","transport":"tcp","protocol":"http","connections":$http_c,"requests":$http_r,"responses":$http_r,"errors":$(errs hc http),"codes":$(codes hc)},
 {"client":"$CLI6","server":"[$SRV6]:80","transport":"tcp","protocol":"http","connections":$http6_c,"requests":$http6_r,"responses":$http6_r,"errors":$(errs h6c http),"codes":$(codes h6c)},
 {"client":"$CLI4","server":"$SRV4:6379","transport":"tcp","protocol":"redis","connections":$redis_c,"requests":$redis_r,"responses":$redis_r,"errors":$(errs rc redis),"codes":$(codes rc)}
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
