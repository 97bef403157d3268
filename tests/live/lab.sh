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
# shellcheck source=../support/lab-lib.sh
. "$HERE/../support/lab-lib.sh"

die() { echo "lab.sh: $*" >&2; exit 1; }

down() { lab_down "$1" "$NS_S" "$NS_C"; }

up() {
    local dir=$1
    down "$dir"
    mkdir -p "$dir/redis"
    lab_ns_add "$NS_S" "$NS_C"
    lab_quiet_mld wk_lab "$NS_S" "$NS_C"
    lab_p2p "$NS_C" wkc0 "$MAC_C" "$CLI4/24 $CLI6/64" "$NS_S" wks0 "$MAC_S" "$SRV4/24 $SRV6/64"

    : > "$dir/pids"
    lab_nginx_site "$dir/nginx" ok
    lab_nginx_conf "$dir/nginx.conf" "$SRV4" "$SRV6"
    lab_nginx_start "$NS_S" "$dir/nginx" "$dir/nginx.conf" "$dir/nginx.out"
    echo $! >> "$dir/pids"
    lab_redis_start "$NS_S" "$dir/redis" "$dir/redis.out" --bind "$SRV4"
    echo $! >> "$dir/pids"
    lab_dnsmasq_start "$NS_S" "$dir" "$dir/dnsmasq.out" --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$SRV4" --except-interface=lo --address=/lab.test/10.214.0.9
    echo $! >> "$dir/pids"
    lab_mariadb_conf "$dir/my.cnf" "$SRV4"
    lab_mariadb_start "$NS_S" "$dir" "$dir/my.cnf"
    echo $! >> "$dir/pids"
    lab_wait_listen "$NS_S" tcp 80 nginx 300
    lab_wait_listen "$NS_S" tcp 6379 redis 300
    lab_wait_listen "$NS_S" udp 53 dnsmasq 300
    lab_wait_listen "$NS_S" tcp 53 dnsmasq 300
    lab_wait_listen "$NS_S" tcp 3306 mariadb 300
    lab_mariadb_setup "$NS_S" "$dir" "$SETUP_SQL"
}

workload() {
    local rounds=$2 r out code n rc_my
    for r in $(seq 1 "$rounds"); do
        lab_http_round "$NS_C" "$SRV4" "$SRV6"
        # Four connections of one command each (redis-cli reading commands from a pipe
        # also sends COMMAND DOCS first); the replies say which failed and how.
        lab_redis_round "$NS_C" "$SRV4" "SET k$r v" "INCR k$r" "LPUSH k$r x" "PING"
        code=$(lab_dig "$NS_C" "@$SRV4" lab.test A)
        lab_conns dns 1; lab_answer dns "$code"
        # One MariaDB session (batch mode: exactly the script's statements, one COM_QUERY
        # each, then COM_QUIT, which is not a request): three statements succeed, the fourth
        # fails with ERROR 1146 and ends the session (exit status 1).
        rc_my=0
        out=$(timeout 20 ip netns exec "$NS_C" mysql --no-defaults --protocol=TCP --skip-ssl \
            -h "$SRV4" -P 3306 -u app -plab-secret -vvv shop -e \
            "SELECT COUNT(*) FROM items; INSERT INTO items (name) VALUES ('r$r'); SELECT id, name FROM items ORDER BY id; SELECT * FROM missing_table" 2>&1) \
            || rc_my=$?
        [[ $rc_my -eq 1 ]] || die "mysql: exit $rc_my (wanted 1): $out"
        lab_conns mysql 1
        n=$(grep -cE '^(Query OK|[0-9]+ rows? in set|Empty set)' <<< "$out" || true)
        for ((; n > 0; n--)); do lab_answer mysql OK; done
        while read -r code; do
            [[ -z $code ]] || lab_answer mysql "ERR $code"
        done <<< "$(sed -n 's/^ERROR \([0-9]*\) .*/\1/p' <<< "$out")"
        # DNS over TCP: one dig +tcp, one connection, one query (a name dnsmasq does not
        # serve, so the answer is an error code; which one is read from dig).
        code=$(lab_dig "$NS_C" +tcp "@$SRV4" example.invalid A)
        lab_conns dnst 1; lab_answer dnst "$code"
        sleep 0.1
    done
    cat <<EOF
{"edges":[
 $(lab_edge_json http4 "$CLI4" "$SRV4:80" tcp http),
 $(lab_edge_json http6 "$CLI6" "[$SRV6]:80" tcp http),
 $(lab_edge_json redis "$CLI4" "$SRV4:6379" tcp redis),
 $(lab_edge_json dns "$CLI4" "$SRV4:53" udp dns),
 $(lab_edge_json mysql "$CLI4" "$SRV4:3306" tcp mysql),
 $(lab_edge_json dnst "$CLI4" "$SRV4:53" tcp dns)
]}
EOF
}

case ${1:-} in
    up) up "$2" ;;
    workload) workload "$2" "$3" ;;
    down) down "$2" ;;
    *) die "usage: lab.sh up|workload|down DIR [ROUNDS]" ;;
esac
