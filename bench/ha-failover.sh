#!/usr/bin/env bash
# Failover of a keepalived pair of chain-co + nginx hosts, in network namespaces on this
# machine (root; nginx, keepalived, iproute2 installed). For each fault on the master —
# primary daemon killed, chain-co killed, nginx killed, keepalived killed, link down — prints
# when the VIP moved, when the client's requests reached the backup, how many failed, how
# often the VIP moved for the failure and its recovery, and how often a websocket session was cut
# (one JSON-RPC request every 20 ms, 500 ms connect timeout): without the nginx watch's track
# file (as before it existed), then as shipped with the default advert interval (1 s, VRRPv3)
# and with a fast one (0.2 s).
#
# The scenario is the integration test tests/ha.rs; it removes every namespace and process it
# made, even when it fails. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --tests
for run in "1 0" "1 1" "0.2 1"; do
  set -- $run
  CHAIN_CO_HA_ADVERT=$1 CHAIN_CO_HA_TRACK_FILE=$2 cargo test --release --quiet --test ha -- --nocapture 2>&1 \
    | grep -A6 '^keepalived failover' || { echo "HA test failed or skipped (root? keepalived?)"; exit 1; }
  echo
done
echo "machine: $(nproc) cores, $(uname -r), keepalived $(keepalived --version 2>&1 | head -1 | awk '{print $2}')"
