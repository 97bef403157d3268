#!/usr/bin/env bash
# The main job on a fixture, from a fresh machine: install the build dependency, build,
# and print the topology of fixtures/lab.pcap.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists libpcap 2>/dev/null && [ ! -e /usr/include/pcap.h ]; then
  echo "installing libpcap-dev (needed to compile filters)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libpcap-dev pkg-config >&2
fi
cargo build --release --quiet
exec ./target/release/wiremap analyze "${@:-fixtures/lab.pcap}"
