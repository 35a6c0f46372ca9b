#!/usr/bin/env bash
# Pending messages at a switch (tests/messages.rs, the simulator and a private nginx).
# 1. A miner sends three messages through nginx to a primary whose pubsub is broken and that
#    stalls; chain-co moves the miner. Printed, without and with [messages]: when the new
#    primary's nonce was right after the switch was seen, the nonce the miner's next message
#    got (3 is right; 0 reuses a nonce the old primary's message holds: one of the two never
#    lands), and conflicts counted by the simulator.
# 2. `[messages] miner` alone, and a miner-like sender pushing every second through nginx
#    from the worker's ID address while the primary (pubsub broken) stalls and is replaced:
#    messages sent, nonces handed out twice, conflicts.
# Runs each 5 times. Takes about two minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --tests
for i in 1 2 3 4 5; do
  cargo test --release --quiet --test messages -- --nocapture --test-threads 1 2>&1 | grep -o 'messages: .*'
done
