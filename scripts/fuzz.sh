#!/usr/bin/env bash
# Fuzz every target in tests/fuzz/ for SECONDS each (default 60), one after another.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). Seed corpora are made
# on first use from fixtures/ and ../shared/peer-pcaps (tshark, editcap, python3) into
# tests/fuzz/corpus/ (not in git). A crash stops its target and leaves the input in
# tests/fuzz/artifacts/<target>/; after fixing it, copy the input (minimised with
# `cargo +nightly fuzz tmin --fuzz-dir tests/fuzz <target> <file>`) to
# tests/fuzz-regressions/<target>/ so `cargo test --test fuzz_regressions` replays it.
set -u
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(http dns_udp dns_tcp mysql redis tls_sni decode capture_file pipeline)
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs nightly Rust and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi

if [ ! -d tests/fuzz/corpus ]; then
    if command -v tshark >/dev/null && command -v python3 >/dev/null; then
        python3 tests/fuzz/seeds.py . ../shared/peer-pcaps tests/fuzz/corpus
    else
        echo "fuzz.sh: no tshark/python3: starting from the saved regression inputs only" >&2
    fi
fi

failed=()
for t in "${targets[@]}"; do
    mkdir -p "tests/fuzz/corpus/$t"
    case $t in
        capture_file | pipeline) max_len=65536 ;;
        *) max_len=16384 ;;
    esac
    echo "== $t ($secs s)"
    # The saved regression inputs are seeds too (read-only second corpus directory).
    cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" \
        "tests/fuzz/corpus/$t" "tests/fuzz-regressions/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len="$max_len" \
        2>&1 | grep -E '^#[0-9]+[[:space:]]+DONE|ERROR|panicked|SUMMARY|Test unit written|^Done'
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: found a problem in: ${failed[*]} (inputs in tests/fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]}"
