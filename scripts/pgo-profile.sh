#!/usr/bin/env bash
# Profile-guided optimisation (PGO) for wiremap's release builds: records where the per-packet
# path branches and which calls are hot on generated traffic, for the compiler to lay the
# code out by it (measured: 4-8 % less CPU offline; live about 10 % less at 200 k packets/s,
# no difference at top speed; benches/HISTORY.md).
#
#   bash scripts/pgo-profile.sh          -> prints the path of the merged profile (.profdata)
#
# PGO_TARGET=TRIPLE (and PGO_CARGO_CONFIG=FILE) profile the `--target TRIPLE` build made
# with that cargo config instead of the host build (scripts/build-static.sh). Other
# environment (LIBPCAP_LIBDIR, ...) reaches the instrumented build as it is.
#
# Used by scripts/build-release.sh and scripts/build-static.sh; not needed for tests.
#
# 1. Builds wiremap with -Cprofile-generate (in $CARGO_TARGET_DIR/pgo-train, or
#    target/pgo-train) and wiremap-gen (plain release build).
# 2. Trains on captures wiremap-gen writes (seed 7, so never the benchmark's own files), each
#    a pure function of its arguments: the default mix, short connections (one request each,
#    20 k open at once) from 5,000 clients, long pooled connections; with 1 and 2 workers, with --records and --no-l7; and
#    on the recorded fixtures (fixtures/*.pcap*; each LVS run's captures together).
# 3. Trains the live path too: the same default-mix capture replayed at top speed by tcpreplay
#    into a veth pair inside a private network namespace (created here, removed on exit; no
#    address anywhere), captured by `wiremap capture` with V3 and fanout, with one worker, and
#    with V2 and no fanout. Without this the ring readers would be compiled as cold code and
#    live capture would be slower than a plain build (measured: 0.84-1.13 µs a packet
#    against 0.78-0.86).
# 4. Merges the raw profiles with an llvm-profdata that reads this rustc's format: rustup's
#    llvm-tools if installed, else the newest Debian llvm-profdata-N that merges them (Debian
#    12's llvm-19 does, for rustc's LLVM 22).
#
# Needs root (network namespace, packet sockets), iproute2 and tcpreplay; exits non-zero
# with one line saying what is missing otherwise, or that WIREMAP_PGO=0 asked for no profile
# (so the build scripts that call it need no switch of their own).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
WORK=$TARGET_DIR/pgo-train
NS=wm-pgo-$$
TRAIN_PACKETS=${PGO_TRAIN_PACKETS:-200000}

log() { printf '[pgo] %s\n' "$*" >&2; }
die() { printf '[pgo] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ${WIREMAP_PGO:-1} == 0 ]]; then log "no profile: WIREMAP_PGO=0 asks for none"; exit 1; fi
[[ $EUID -eq 0 ]] || die "needs root: the live path is trained in a private network namespace"
for tool in cargo rustc ip tcpreplay; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done

cleanup() {
    set +e
    [[ -n ${CAPTURE_PID:-} ]] && kill -KILL "$CAPTURE_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$REPO"
# One profile run at a time per target folder (the build folder and raw profiles are shared).
mkdir -p "$WORK"
exec 9> "$WORK/.lock"
flock 9

log "building the instrumented wiremap${PGO_TARGET:+ for $PGO_TARGET} and wiremap-gen"
cargo build --release --quiet --bin wiremap-gen >&2
if [[ -n ${PGO_TARGET:-} ]]; then
    # The profile must come from the build it will optimise: symbol names carry a hash of
    # the target, so a host build's profile would match nothing in a --target build. The
    # flag goes through --config, where it joins the config's own rustflags for the target
    # (RUSTFLAGS would replace them).
    CARGO_TARGET_DIR=$WORK/build cargo ${PGO_CARGO_CONFIG:+--config "$PGO_CARGO_CONFIG"} \
        --config "target.$PGO_TARGET.rustflags=['-Cprofile-generate=$WORK/raw']" \
        build --release --quiet --target "$PGO_TARGET" --bin wiremap >&2
    BIN=$WORK/build/$PGO_TARGET/release/wiremap
else
    CARGO_TARGET_DIR=$WORK/build RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/raw" \
        cargo build --release --quiet --bin wiremap >&2
    BIN=$WORK/build/release/wiremap
fi
# Emptied after the build: build scripts and proc-macros are instrumented too, and write
# their own profiles while cargo runs them.
rm -rf "$WORK/raw" "$WORK/captures"
mkdir -p "$WORK/raw" "$WORK/captures"
GEN=$TARGET_DIR/release/wiremap-gen
# One raw profile per process (%p), merged at the end.
export LLVM_PROFILE_FILE=$WORK/raw/wiremap-%p-%m.profraw

C=$WORK/captures
log "generating the training captures ($TRAIN_PACKETS packets each)"
gen() { "$GEN" --seed 7 "$@" >/dev/null 2>&1 || die "wiremap-gen $* failed"; }
gen --packets "$TRAIN_PACKETS" -o "$C/mix.pcap"
gen --packets "$TRAIN_PACKETS" --flows-concurrent 20000 --clients 5000 --max-requests 1 \
    -o "$C/short.pcap"
gen --packets $((TRAIN_PACKETS / 2)) --pooled 8 -o "$C/pooled.pcap"

log "training offline"
offline() { "$BIN" analyze -o /dev/null "$@" >/dev/null 2>&1 || die "training run failed: wiremap analyze $*"; }
offline "$C/mix.pcap"
offline "$C/short.pcap"
offline "$C/pooled.pcap"
offline --threads 1 "$C/short.pcap"
offline --records /dev/null "$C/mix.pcap"
offline --no-l7 "$C/mix.pcap"
for f in fixtures/*.pcap fixtures/*.pcapng; do
    [[ -f $f ]] && offline --records /dev/null "$f"
done
for d in fixtures/lvs/*/; do
    # Every vantage point of one load-balancer run together: the stitching path.
    [[ -f $d/client.pcap ]] && offline "$d"/*.pcap "$d"/*.pcapng
done

log "training live capture (veth pair in network namespace $NS)"
{
    ip netns add "$NS" &&
        ip -n "$NS" link set lo up &&
        ip -n "$NS" link add pgo0 type veth peer name pgo1 &&
        ip -n "$NS" link set pgo0 up &&
        ip -n "$NS" link set pgo1 up
} >&2 || die "cannot make the network namespace $NS with a veth pair"
live() {   # live LIMIT [capture args]
    local limit=$1 err=$WORK/capture.err i
    shift
    ip netns exec "$NS" "$BIN" capture -i pgo1 -o /dev/null "$@" 2> "$err" &
    CAPTURE_PID=$!
    for i in $(seq 1 200); do grep -q 'capturing on' "$err" 2>/dev/null && break; sleep 0.05; done
    grep -q 'capturing on' "$err" || die "live training: wiremap capture did not start: $(tail -n 1 "$err")"
    ip netns exec "$NS" tcpreplay -q -i pgo0 --topspeed --limit="$limit" "$C/mix.pcap" >/dev/null 2>&1 \
        || die "live training: tcpreplay failed"
    sleep 0.5
    kill -INT "$CAPTURE_PID"
    for i in $(seq 1 100); do kill -0 "$CAPTURE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CAPTURE_PID" 2>/dev/null || true   # still running after 10 s: fails below
    wait "$CAPTURE_PID" || die "live training: wiremap capture $* failed: $(tail -n 1 "$err")"
    CAPTURE_PID=""
    grep -q '^wiremap: [1-9][0-9]* packets' "$err" || die "live training saw no packets: $(tail -n 1 "$err")"
}
live "$TRAIN_PACKETS"
live $((TRAIN_PACKETS / 2)) --threads 1
live $((TRAIN_PACKETS / 4)) --tpacket 2 --no-fanout

# An llvm-profdata that reads these raw profiles: the raw format follows LLVM's version.
raws=("$WORK"/raw/*.profraw)
[[ -e ${raws[0]} ]] || die "no raw profile was written"
host=$(rustc -vV | sed -n 's/^host: //p')
candidates=("$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata")
while read -r c; do candidates+=("$c"); done < <(compgen -c llvm-profdata | sort -rV | uniq)
merged=$WORK/merged.profdata
PROFDATA=""
for c in "${candidates[@]}"; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" merge -o "$merged" "${raws[@]}" 2>/dev/null; then
        PROFDATA=$c
        break
    fi
done
[[ -n $PROFDATA ]] || die "no llvm-profdata reads rustc $(rustc -vV | sed -n 's/^LLVM version: //p')'s profiles (Debian: apt-get install llvm-19)"
# Named by content: a new profile is a new -Cprofile-use path, so cargo rebuilds with it.
sum=$(sha256sum "$merged" | cut -c1-16)
find "$WORK" -maxdepth 1 -name 'wiremap-*.profdata' -mmin +60 -delete
out=$WORK/wiremap-$sum.profdata
mv -f "$merged" "$out"
log "profile: ${#raws[@]} runs merged by $PROFDATA"
echo "$out"
