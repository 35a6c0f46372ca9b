#!/usr/bin/env bash
# Every benchmark scenario, side by side with plain nginx, on this machine, loopback only.
# Needs nginx and haproxy (apt-get install -y nginx haproxy). Prints markdown tables; takes
# about 14 minutes.
#   bench/run-all.sh                 # all scenarios
#   bench/run-all.sh dies stalls     # some: dies stalls slow flap quiet scale data-path sessions
# The HA failover figures come from bench/ha-failover.sh (root, keepalived).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin chain-co --example bench
./target/release/examples/bench "$@"
echo
echo "machine: $(nproc) cores, $(uname -r), $(nginx -v 2>&1)"
