# shellcheck shell=bash
# Shared setup of the project's real-traffic labs, sourced by tests/live/lab.sh,
# tests/legacy/lab.sh, fixtures/lvs/record.sh and fixtures/lab/record.sh (root only).
#
# Each caller keeps its own namespace names, devices, MACs and addresses and defines
# `die MESSAGE` (these functions call it on failure). Servers started here run in the
# background with their output in a file (an inherited pipe would keep a caller that reads
# the script's output waiting for as long as they run): `$!` is the server's pid when the
# function returns; the caller keeps it and stops it. Every wait is bounded.

lab_ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# lab_ns_add NS... : new namespaces with lo up.
lab_ns_add() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
}

# lab_ns_teardown NS... : TERM what still runs in each namespace (by id), KILL it after 5 s,
# then delete the namespace. Absent namespaces are skipped (leftovers of an interrupted run).
lab_ns_teardown() {
    local ns pid i
    for ns in "$@"; do
        lab_ns_exists "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
        for i in $(seq 1 50); do
            [[ -z "$(ip netns pids "$ns" 2>/dev/null)" ]] && break
            sleep 0.1
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

# lab_stop TRIES PID... : TERM every pid, wait up to TRIES x 0.1 s for each, then KILL it.
lab_stop() {
    local tries=$1 pid i
    shift
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for i in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# lab_quiet_mld TABLE NS... : drop the hosts' own MLD reports on output. They go out at times
# that depend on the start-up timing; packet sockets see outgoing packets after the netfilter
# output hooks, so the captures hold none.
lab_quiet_mld() {
    local table=$1 ns
    shift
    for ns in "$@"; do
        ip netns exec "$ns" nft -f - <<NFT
table inet $table {
    chain output {
        type filter hook output priority 0; policy accept;
        icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report } drop
    }
}
NFT
    done
}

# lab_addr NS DEV ADDR/LEN... : addresses on a device; IPv6 ones without duplicate detection.
lab_addr() {
    local ns=$1 dev=$2 a
    shift 2
    for a in "$@"; do
        if [[ $a == *:* ]]; then
            ip -n "$ns" addr add "$a" dev "$dev" nodad
        else
            ip -n "$ns" addr add "$a" dev "$dev"
        fi
    done
}

# lab_neigh NS DEV MAC IP... : permanent neighbours (no ARP / neighbour discovery on the wire).
lab_neigh() {
    local ns=$1 dev=$2 mac=$3 ip
    shift 3
    for ip in "$@"; do
        ip -n "$ns" neigh replace "$ip" lladdr "$mac" dev "$dev" nud permanent
    done
}

# lab_p2p [--mld-fast] NS_A DEV_A MAC_A "ADDR/LEN..." NS_B DEV_B MAC_B "ADDR/LEN..."
# A veth pair between two namespaces with fixed MACs, no link-local addresses (addrgenmode
# none: no fe80::, no router solicitations), the given addresses, up, and each side's
# addresses as permanent neighbours of the other. --mld-fast: the unsolicited MLD reports
# sent on joining the solicited-node groups (from ::, repeated at random times within 1 s by
# default) go out within 10 ms, before any capture starts.
lab_p2p() {
    local fast=""
    [[ $1 == --mld-fast ]] && { fast=1; shift; }
    local ns_a=$1 dev_a=$2 mac_a=$3 addrs_a=$4 ns_b=$5 dev_b=$6 mac_b=$7 addrs_b=$8 side
    ip -n "$ns_a" link add "$dev_a" address "$mac_a" type veth peer name "$dev_b" address "$mac_b" netns "$ns_b"
    for side in "$ns_a $dev_a" "$ns_b $dev_b"; do
        set -- $side
        ip -n "$1" link set "$2" addrgenmode none
        [[ -z $fast ]] || ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.mldv2_unsolicited_report_interval=10" \
            "net.ipv6.conf.$2.mldv1_unsolicited_report_interval=10"
    done
    # shellcheck disable=SC2086
    lab_addr "$ns_a" "$dev_a" $addrs_a
    # shellcheck disable=SC2086
    lab_addr "$ns_b" "$dev_b" $addrs_b
    ip -n "$ns_a" link set "$dev_a" up
    ip -n "$ns_b" link set "$dev_b" up
    # shellcheck disable=SC2046,SC2086
    lab_neigh "$ns_a" "$dev_a" "$mac_b" $(printf '%s\n' $addrs_b | sed 's,/.*,,')
    # shellcheck disable=SC2046,SC2086
    lab_neigh "$ns_b" "$dev_b" "$mac_a" $(printf '%s\n' $addrs_a | sed 's,/.*,,')
}

# lab_listening NS tcp|udp PORT : something listens on PORT in NS.
lab_listening() {
    local flag=-ltnH
    [[ $2 == udp ]] && flag=-lunH
    ip netns exec "$1" ss "$flag" "sport = :$3" | grep -q .
}

# lab_wait_listen NS tcp|udp PORT NAME TRIES [PID] : bounded (TRIES x 0.1 s); with PID, fails
# as soon as that server has exited.
lab_wait_listen() {
    local ns=$1 proto=$2 port=$3 name=$4 tries=$5 pid=${6:-} i
    for i in $(seq 1 "$tries"); do
        lab_listening "$ns" "$proto" "$port" && return 0
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || die "$name exited before listening on $proto :$port in $ns"
        sleep 0.1
    done
    die "$name does not listen on $proto :$port in $ns"
}

# lab_nginx_site PREFIX INDEX-TEXT : nginx's prefix directory (logs, tmp, html/index.html).
lab_nginx_site() {
    mkdir -p "$1/logs" "$1/tmp" "$1/html"
    printf '%s\n' "$2" > "$1/html/index.html"
    chmod -R a+rX "$1"
}

# lab_nginx_conf FILE IP4 IP6 [SERVER-LINE...] : the labs' nginx: :80 on both addresses, files
# from html, /notfound 404, /boom 500, keep-alive 30 s, no access log; SERVER-LINEs are added
# to the server block (they may override the defaults there).
lab_nginx_conf() {
    local file=$1 ip4=$2 ip6=$3 line extra=""
    shift 3
    for line in "$@"; do extra+="        $line"$'\n'; done
    cat > "$file" <<EOF
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
        listen $ip4:80;
        listen [$ip6]:80;
        root html;
        location = /notfound { return 404; }
        location = /boom { return 500; }
${extra}    }
}
EOF
}

# lab_nginx_start NS PREFIX CONF OUT : nginx in the foreground of a background job.
lab_nginx_start() {
    ip netns exec "$1" nginx -p "$2/" -c "$3" -e logs/error.log < /dev/null > "$4" 2>&1 &
}

# lab_redis_start NS DIR OUT [ARG...] : redis-server :6379, data and log in DIR, no
# persistence, not protected (the client is in another namespace); ARGs: --bind ADDRS... or
# a config file first.
lab_redis_start() {
    local ns=$1 dir=$2 out=$3
    shift 3
    ip netns exec "$ns" redis-server "$@" --port 6379 --protected-mode no --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" < /dev/null > "$out" 2>&1 &
}

# lab_dnsmasq_start NS DIR OUT ARG... : dnsmasq in the foreground, pid file and log in DIR.
lab_dnsmasq_start() {
    local ns=$1 dir=$2 out=$3
    shift 3
    ip netns exec "$ns" dnsmasq --keep-in-foreground --pid-file="$dir/dnsmasq.pid" \
        --log-facility="$dir/dnsmasq.log" "$@" < /dev/null > "$out" 2>&1 &
}

# lab_mariadb_conf FILE IP4 : the labs' my.cnf (as fixtures/lab/my.cnf, on IP4): plaintext, no
# name resolution, no binlog, small buffers.
lab_mariadb_conf() {
    cat > "$1" <<EOF
[mysqld]
port = 3306
bind-address = $2
skip-name-resolve
skip-log-bin
skip-ssl
performance_schema = OFF
innodb_buffer_pool_size = 16M
innodb_use_native_aio = 0
innodb_log_file_size = 8M
max_connections = 20
EOF
}

# lab_mariadb_start NS DIR CNF : a private datadir (DIR/mysql; socket, pid, log and tmp in
# DIR/mysql-run) made by mariadb-install-db, then mariadbd (output in DIR/mariadb.out).
lab_mariadb_start() {
    local ns=$1 dir=$2 cnf=$3
    mkdir -p "$dir/mysql-run/tmp"
    chown -R mysql:mysql "$dir/mysql-run"
    local args=(--datadir="$dir/mysql" --socket="$dir/mysql-run/mysql.sock"
                --pid-file="$dir/mysql-run/mysql.pid" --log-error="$dir/mysql-run/mysql.err"
                --tmpdir="$dir/mysql-run/tmp" --user=mysql)
    timeout 120 ip netns exec "$ns" mariadb-install-db --defaults-file="$cnf" "${args[@]}" \
        --auth-root-authentication-method=socket --skip-test-db > "$dir/mysql-install.log" 2>&1 \
        || die "mariadb-install-db failed in $ns: $(tail -20 "$dir/mysql-install.log")"
    ip netns exec "$ns" mariadbd --defaults-file="$cnf" "${args[@]}" < /dev/null > "$dir/mariadb.out" 2>&1 &
}

# lab_mariadb_setup NS DIR SQL : once mariadbd (lab_mariadb_start DIR) has its socket, run SQL
# as root over it (the lab's schema and user: fixtures/lab/setup.sql).
lab_mariadb_setup() {
    local ns=$1 dir=$2 sql=$3 i
    for i in $(seq 1 100); do [[ -S $dir/mysql-run/mysql.sock ]] && break; sleep 0.1; done
    [[ -S $dir/mysql-run/mysql.sock ]] || die "mariadb socket missing in $ns"
    timeout 30 ip netns exec "$ns" mysql --no-defaults --socket="$dir/mysql-run/mysql.sock" -u root \
        < "$sql" > "$dir/setup.out" 2>&1 || die "setup.sql failed in $ns: $(cat "$dir/setup.out")"
}

# lab_preflight NARGS TOOL... : the recorders' checks (fixtures/*/record.sh): one argument
# (OUTDIR), root, every tool there; exit status 2 otherwise.
lab_preflight() {
    local n=$1 tool
    shift
    if [[ $n -ne 1 ]]; then
        echo "usage: $0 OUTDIR" >&2
        exit 2
    fi
    if [[ $EUID -ne 0 ]]; then
        echo "record.sh: must run as root (network namespaces, captures)" >&2
        exit 2
    fi
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "record.sh: missing tool: $tool" >&2; exit 2; }
    done
}

# lab_wait_for TRIES CMD... : bounded poll, 0.1 s between tries; status 1 if CMD never succeeded.
lab_wait_for() {
    local tries=$1 i
    shift
    for i in $(seq 1 "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# lab_work_done RC WORK KEEP LOG... : a recorder's last words: after a failure (RC != 0) the
# tails of the LOG files (paths or globs below WORK); then WORK is removed unless KEEP is set.
lab_work_done() {
    local rc=$1 work=$2 keep=$3 f g
    shift 3
    [[ -n $work && -d $work ]] || return 0
    if [[ $rc -ne 0 ]]; then
        echo "failed (rc=$rc); logs:" >&2
        for f in "$@"; do
            for g in "$work"/$f; do
                [[ -f $g ]] && { echo "--- $g" >&2; tail -n 20 "$g" >&2; }
            done
        done
    fi
    if [[ -n $keep ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}

# lab_down DIR NS... : stop the servers listed in DIR/pids (lab.sh up), delete the namespaces.
lab_down() {
    local dir=$1
    shift
    if [[ -f "$dir/pids" ]]; then
        # shellcheck disable=SC2046
        lab_stop 50 $(cat "$dir/pids")
        rm -f "$dir/pids"
    fi
    lab_ns_teardown "$@"
}

# ---------------------------------------------------------------------------- client tallies
# The expected edges of tests/live/lab.sh and tests/legacy/lab.sh, counted from the clients'
# own output: per edge key (any word), connections made and the code of every answer.
declare -gA LAB_CONNS=() LAB_REQS=() LAB_CODES=()

lab_conns() { LAB_CONNS[$1]=$(( ${LAB_CONNS[$1]:-0} + $2 )); }   # lab_conns EDGE N
lab_answer() {   # lab_answer EDGE CODE : one request answered with CODE
    LAB_REQS[$1]=$(( ${LAB_REQS[$1]:-0} + 1 ))
    LAB_CODES[$1#$2]=$(( ${LAB_CODES[$1#$2]:-0} + 1 ))
}

# lab_edge_json EDGE CLIENT SERVER TRANSPORT PROTOCOL : the edge as the topology contract
# counts it (every request answered; errors: HTTP >= 400, DNS not NOERROR, others not OK).
lab_edge_json() {
    local e=$1 k code n errors=0 codes=""
    for k in "${!LAB_CODES[@]}"; do
        [[ ${k%%#*} == "$e" ]] || continue
        code=${k#*#}; n=${LAB_CODES[$k]}
        codes+="\"$code\":$n,"
        case $5 in
            http) [[ $code -ge 400 ]] && errors=$((errors + n)) ;;
            dns) [[ $code != NOERROR ]] && errors=$((errors + n)) ;;
            *) [[ $code != OK ]] && errors=$((errors + n)) ;;
        esac
    done
    printf '{"client":"%s","server":"%s","transport":"%s","protocol":"%s","connections":%d,"requests":%d,"responses":%d,"errors":%d,"codes":{%s}}' \
        "$2" "$3" "$4" "$5" "${LAB_CONNS[$e]:-0}" "${LAB_REQS[$e]:-0}" "${LAB_REQS[$e]:-0}" "$errors" "${codes%,}"
}

# lab_http_round NS SRV4 SRV6 : from NS, one connection with two requests (keep-alive: GET /
# and GET /notfound) to SRV4:80 (edge http4), one GET /boom to [SRV6]:80 (edge http6); curl
# says how many connections it made.
lab_http_round() {
    local ns=$1 srv4=$2 srv6=$3 out code nconn
    out=$(timeout 10 ip netns exec "$ns" curl -sS -o /dev/null -o /dev/null \
        -w '%{http_code} %{num_connects}\n' "http://$srv4/" "http://$srv4/notfound") \
        || die "curl v4 failed"
    while read -r code nconn; do
        [[ $code =~ ^[0-9]{3}$ && $code != 000 ]] || die "curl v4: no response"
        lab_conns http4 "$nconn"; lab_answer http4 "$code"
    done <<< "$out"
    out=$(timeout 10 ip netns exec "$ns" curl -sS -g -o /dev/null \
        -w '%{http_code} %{num_connects}\n' "http://[$srv6]/boom") || die "curl v6 failed"
    read -r code nconn <<< "$out"
    [[ $code =~ ^[0-9]{3}$ && $code != 000 ]] || die "curl v6: no response"
    lab_conns http6 "$nconn"; lab_answer http6 "$code"
}

# lab_redis_round NS SRV4 CMD... : one redis-cli (one connection) per command (edge redis);
# its reply says whether it failed and how (ERR, WRONGTYPE; anything else is OK).
lab_redis_round() {
    local ns=$1 srv4=$2 cmd line code
    shift 2
    for cmd in "$@"; do
        # shellcheck disable=SC2086
        line=$(timeout 10 ip netns exec "$ns" redis-cli -h "$srv4" $cmd) || die "redis-cli failed"
        [[ -n $line ]] || die "redis-cli: no reply to $cmd"
        case $line in
            ERR\ *|WRONGTYPE\ *) code=${line%% *} ;;
            *) code=OK ;;
        esac
        lab_conns redis 1; lab_answer redis "$code"
    done
}

# lab_dig NS ARGS... : dig's status (NOERROR, NXDOMAIN, ...) on stdout.
lab_dig() {
    local ns=$1 out code
    shift
    out=$(timeout 10 ip netns exec "$ns" dig +tries=1 +time=3 "$@") || die "dig $* failed"
    code=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<< "$out")
    [[ -n $code ]] || die "dig $*: no status"
    echo "$code"
}
