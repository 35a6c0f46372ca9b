#!/usr/bin/env bash
# The probe round against real Forest 0.39 daemons (../shared/daemons, in a network namespace
# that reaches nothing but its own loopback) next to the simulator's forest profile on
# loopback: a sanity check that the simulator costs what a real daemon costs. Root (namespaces).
#   bench/real-forest.sh [ROUNDS]      # default 60 rounds of 3 nodes each
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-60}
NS=cc-bench-forest
SCRIPT=../shared/daemons/forest-netns.sh
cargo build --release --quiet --bin chain-co --example probe_round
WORK=$(mktemp -d)
SIM_PID=
cleanup() {
  bash "$SCRIPT" stop "$NS" >/dev/null 2>&1 || true
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

bash "$SCRIPT" start "$NS" 3 "$WORK/forest" > "$WORK/pool"
: > "$WORK/real.toml"
while read -r name url _health token _pid; do
  printf '[[node]]\nname = "%s"\nurl = "%s"\ntoken_file = "%s"\n' "$name" "$url" "$token" >> "$WORK/real.toml"
done < "$WORK/pool"
printf '[nginx]\noutput = "%s/upstream.conf"\n' "$WORK" >> "$WORK/real.toml"

./target/release/chain-co sim --nodes forest-0:forest,forest-1:forest,forest-2:forest \
  --block-delay 600s --start-height 0 > "$WORK/sim.json" &
SIM_PID=$!
for _ in $(seq 50); do [ -s "$WORK/sim.json" ] && break; sleep 0.1; done
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
ready = json.loads(open(f"{work}/sim.json").readline())
with open(f"{work}/sim.toml", "w") as f:
    for n in ready["nodes"]:
        f.write(f'[[node]]\nname = "{n["name"]}"\nurl = "{n["url"]}"\nhealth_url = "{n["health_url"]}"\n')
    f.write(f'[nginx]\noutput = "{work}/upstream.conf"\n')
PY

echo "| pool | nodes | rounds | round p50 (ms) | p95 (ms) | max (ms) | CPU per round (ms) |"
echo "|---|---|---|---|---|---|---|"
ip netns exec "$NS" ./target/release/examples/probe_round "$WORK/real.toml" "$ROUNDS" "real Forest 0.39 (netns)"
./target/release/examples/probe_round "$WORK/sim.toml" "$ROUNDS" "simulator, forest profile"
echo
echo "machine: $(nproc) cores, $(uname -r)"
