#!/usr/bin/env bash
# Live-capture lab for tests/live_capture.rs (root only).
#
#   lab.sh up DIR              namespaces, veth, nginx + redis-server + mariadb + dnsmasq
#                              (UDP and TCP) in wk-srv
#   lab.sh workload DIR ROUNDS the clients' workload from wk-cli; prints the expected edges
#                              (JSON, counted from the clients' own output) on stdout
#   lab.sh down DIR            stop the servers (by pid), delete the namespaces
#
#   wk-cli [wkc0] ------veth------ [wks0] wk-srv
#   10.214.0.2/24                  10.214.0.1/24
#   fd00:214::2/64                 fd00:214::1/64
#
# Only 10.214.0.0/24 and fd00:214::/64, inside our own namespaces (names wk-*). Static
# neighbours, no link-local addresses and an nft rule dropping the hosts' own MLD reports
# keep ARP/NDP/MLD out of the captures (as fixtures/lab/record.sh does): every packet on the
# veth is workload traffic, so packet totals can be compared across capture tools. MariaDB
# is set up as record.sh does it (private datadir, mariadb-install-db, fixtures/lab/setup.sql
# over the unix socket). Every wait is bounded.
set -euo pipefail

NS_S=wk-srv
NS_C=wk-cli
SRV4=10.214.0.1
CLI4=10.214.0.2
SRV6=fd00:214::1
CLI6=fd00:214::2
MAC_S=02:d6:00:00:00:01
MAC_C=02:d6:00:00:00:02

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SETUP_SQL="$HERE/../../fixtures/lab/setup.sql"

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

listening() { ip netns exec "$NS_S" ss "-l${1}nH" "sport = :$2" | grep -q .; }

wait_listen() {   # wait_listen t|u PORT NAME
    local i
    for i in $(seq 1 300); do
        listening "$1" "$2" && return 0
        sleep 0.1
    done
    die "$3 does not listen on $2"
}

up() {
    local dir=$1
    down "$dir"
    mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp" "$dir/nginx/html" "$dir/redis"
    ip netns add "$NS_S"
    ip netns add "$NS_C"
    ip -n "$NS_S" link set lo up
    ip -n "$NS_C" link set lo up
    ip -n "$NS_C" link add wkc0 address "$MAC_C" type veth peer name wks0 address "$MAC_S" netns "$NS_S"
    ip -n "$NS_C" link set wkc0 addrgenmode none
    ip -n "$NS_S" link set wks0 addrgenmode none
    for ns in "$NS_S" "$NS_C"; do
        ip netns exec "$ns" nft -f - <<'NFT'
table inet wk_lab {
    chain output {
        type filter hook output priority 0; policy accept;
        icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report } drop
    }
}
NFT
    done
    ip -n "$NS_C" addr add "$CLI4/24" dev wkc0
    ip -n "$NS_C" addr add "$CLI6/64" dev wkc0 nodad
    ip -n "$NS_S" addr add "$SRV4/24" dev wks0
    ip -n "$NS_S" addr add "$SRV6/64" dev wks0 nodad
    ip -n "$NS_C" link set wkc0 up
    ip -n "$NS_S" link set wks0 up
    ip -n "$NS_C" neigh replace "$SRV4" lladdr "$MAC_S" dev wkc0 nud permanent
    ip -n "$NS_C" neigh replace "$SRV6" lladdr "$MAC_S" dev wkc0 nud permanent
    ip -n "$NS_S" neigh replace "$CLI4" lladdr "$MAC_C" dev wks0 nud permanent
    ip -n "$NS_S" neigh replace "$CLI6" lladdr "$MAC_C" dev wks0 nud permanent

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
    : > "$dir/pids"
    ip netns exec "$NS_S" nginx -p "$dir/nginx/" -c "$dir/nginx.conf" -e logs/error.log \
        > "$dir/nginx.out" 2>&1 < /dev/null &
    echo $! >> "$dir/pids"
    ip netns exec "$NS_S" redis-server --bind "$SRV4" --port 6379 --protected-mode no \
        --save '' --appendonly no --dir "$dir/redis" --logfile "$dir/redis/redis.log" \
        > "$dir/redis.out" 2>&1 < /dev/null &
    echo $! >> "$dir/pids"
    ip netns exec "$NS_S" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$SRV4" --except-interface=lo --address=/lab.test/10.214.0.9 \
        --pid-file="$dir/dnsmasq.pid" --log-facility="$dir/dnsmasq.log" \
        > "$dir/dnsmasq.out" 2>&1 < /dev/null &
    echo $! >> "$dir/pids"
    mkdir -p "$dir/mysql-run/tmp"
    chown -R mysql:mysql "$dir/mysql-run"
    cat > "$dir/my.cnf" <<EOF
[mysqld]
port = 3306
bind-address = $SRV4
skip-name-resolve
skip-log-bin
skip-ssl
performance_schema = OFF
innodb_buffer_pool_size = 16M
innodb_use_native_aio = 0
innodb_log_file_size = 8M
max_connections = 20
EOF
    local myargs=(--datadir="$dir/mysql" --socket="$dir/mysql-run/mysql.sock"
                  --pid-file="$dir/mysql-run/mysql.pid" --log-error="$dir/mysql-run/mysql.err"
                  --tmpdir="$dir/mysql-run/tmp" --user=mysql)
    timeout 120 ip netns exec "$NS_S" mariadb-install-db --defaults-file="$dir/my.cnf" "${myargs[@]}" \
        --auth-root-authentication-method=socket --skip-test-db > "$dir/mysql-install.log" 2>&1 \
        || die "mariadb-install-db failed: $(tail -5 "$dir/mysql-install.log")"
    ip netns exec "$NS_S" mariadbd --defaults-file="$dir/my.cnf" "${myargs[@]}" \
        > "$dir/mariadb.out" 2>&1 < /dev/null &
    echo $! >> "$dir/pids"
    wait_listen t 80 nginx
    wait_listen t 6379 redis
    wait_listen u 53 dnsmasq
    wait_listen t 53 dnsmasq
    wait_listen t 3306 mariadb
    local i
    for i in $(seq 1 100); do [[ -S $dir/mysql-run/mysql.sock ]] && break; sleep 0.1; done
    timeout 30 ip netns exec "$NS_S" mysql --no-defaults --socket="$dir/mysql-run/mysql.sock" -u root \
        < "$SETUP_SQL" > "$dir/setup.out" 2>&1 || die "setup.sql failed: $(cat "$dir/setup.out")"
}

workload() {
    local dir=$1 rounds=$2 r out code nconn line
    local http_c=0 http_r=0 http6_c=0 http6_r=0 redis_c=0 redis_r=0 dns_r=0
    local my_c=0 my_r=0 dnst_c=0 dnst_r=0 n rc_my
    declare -A hc h6c rc dc mc tc
    for r in $(seq 1 "$rounds"); do
        # One connection, two requests (keep-alive).
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
        # Four connections of one command each (redis-cli reading commands from a pipe
        # also sends COMMAND DOCS first); the replies say which failed and how.
        for cmd in "SET k$r v" "INCR k$r" "LPUSH k$r x" "PING"; do
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
        out=$(timeout 10 ip netns exec "$NS_C" dig +tries=1 +time=3 "@$SRV4" lab.test A) \
            || die "dig failed"
        code=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<< "$out")
        [[ -n $code ]] || die "dig: no status"
        dns_r=$((dns_r + 1)); dc[$code]=$(( ${dc[$code]:-0} + 1 ))
        # One MariaDB session (batch mode: exactly the script's statements, one COM_QUERY
        # each, then COM_QUIT, which is not a request): three statements succeed, the fourth
        # fails with ERROR 1146 and ends the session (exit status 1).
        rc_my=0
        out=$(timeout 20 ip netns exec "$NS_C" mysql --no-defaults --protocol=TCP --skip-ssl \
            -h "$SRV4" -P 3306 -u app -plab-secret -vvv shop -e \
            "SELECT COUNT(*) FROM items; INSERT INTO items (name) VALUES ('r$r'); SELECT id, name FROM items ORDER BY id; SELECT * FROM missing_table" 2>&1) \
            || rc_my=$?
        [[ $rc_my -eq 1 ]] || die "mysql: exit $rc_my (wanted 1): $out"
        n=$(grep -cE '^(Query OK|[0-9]+ rows? in set|Empty set)' <<< "$out" || true)
        my_c=$((my_c + 1)); my_r=$((my_r + n)); mc[OK]=$(( ${mc[OK]:-0} + n ))
        while read -r code; do
            [[ -n $code ]] || continue
            my_r=$((my_r + 1)); mc["ERR $code"]=$(( ${mc["ERR $code"]:-0} + 1 ))
        done <<< "$(sed -n 's/^ERROR \([0-9]*\) .*/\1/p' <<< "$out")"
        # DNS over TCP: one dig +tcp, one connection, one query (a name dnsmasq does not
        # serve, so the answer is an error code; which one is read from dig).
        out=$(timeout 10 ip netns exec "$NS_C" dig +tcp +tries=1 +time=3 "@$SRV4" example.invalid A) \
            || die "dig +tcp failed"
        code=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<< "$out")
        [[ -n $code ]] || die "dig +tcp: no status"
        dnst_c=$((dnst_c + 1)); dnst_r=$((dnst_r + 1)); tc[$code]=$(( ${tc[$code]:-0} + 1 ))
        sleep 0.1
    done
    codes() { local -n m=$1; local k s=""; for k in "${!m[@]}"; do s+="\"$k\":${m[$k]},"; done; echo "{${s%,}}"; }
    errs() { local -n m=$1; local k n=0; for k in "${!m[@]}"; do [[ $2 == http && $k -ge 400 ]] && n=$((n + m[$k])); [[ $2 == redis && $k != OK ]] && n=$((n + m[$k])); [[ $2 == dns && $k != NOERROR ]] && n=$((n + m[$k])); [[ $2 == mysql && $k != OK ]] && n=$((n + m[$k])); done; echo $n; }
    cat <<EOF
{"edges":[
 {"client":"$CLI4","server":"$SRV4:80","transport":"tcp","protocol":"http","connections":$http_c,"requests":$http_r,"responses":$http_r,"errors":$(errs hc http),"codes":$(codes hc)},
 {"client":"$CLI6","server":"[$SRV6]:80","transport":"tcp","protocol":"http","connections":$http6_c,"requests":$http6_r,"responses":$http6_r,"errors":$(errs h6c http),"codes":$(codes h6c)},
 {"client":"$CLI4","server":"$SRV4:6379","transport":"tcp","protocol":"redis","connections":$redis_c,"requests":$redis_r,"responses":$redis_r,"errors":$(errs rc redis),"codes":$(codes rc)},
 {"client":"$CLI4","server":"$SRV4:53","transport":"udp","protocol":"dns","connections":$dns_r,"requests":$dns_r,"responses":$dns_r,"errors":$(errs dc dns),"codes":$(codes dc)},
 {"client":"$CLI4","server":"$SRV4:3306","transport":"tcp","protocol":"mysql","connections":$my_c,"requests":$my_r,"responses":$my_r,"errors":$(errs mc mysql),"codes":$(codes mc)},
 {"client":"$CLI4","server":"$SRV4:53","transport":"tcp","protocol":"dns","connections":$dnst_c,"requests":$dnst_r,"responses":$dnst_r,"errors":$(errs tc dns),"codes":$(codes tc)}
]}
EOF
}

case ${1:-} in
    up) up "$2" ;;
    workload) workload "$2" "$3" ;;
    down) down "$2" ;;
    *) die "usage: lab.sh up|workload|down DIR [ROUNDS]" ;;
esac
