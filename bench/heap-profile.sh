#!/usr/bin/env bash
# Where chain-co's bytes go: runs `chain-co run` built with dhat (heap profiling) against a
# simulated pool of N nodes (default 1000) on loopback for 40 s, stops it, and prints the
# allocation sites that hold the most memory at the peak, grouped by the first chain-co or
# library frame that explains them. Needs nginx only for the config's test (a dry target).
#   bench/heap-profile.sh [NODES]
#   BLOCK_DELAY=2s SECS=90 bench/heap-profile.sh 1000   # many heads: buffers at their steady size
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
# The simulator runs from the plain build (under dhat it would be too slow to be the pool);
# the profiled build has its own target directory, so as not to replace the plain one.
cargo build --release --quiet --bin chain-co
sim=target/release/chain-co
CARGO_TARGET_DIR=target/dhat cargo build --release --quiet --features dhat-heap --bin chain-co
bin=target/dhat/release/chain-co
work=$(mktemp -d)
# KEEP=FILE keeps dhat's raw profile (for dh_view.html, or a closer look).
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$work/dhat-heap.json" "$KEEP"; rm -rf "$work"' EXIT
nodes=$(python3 -c "print(','.join('n%04d' % i for i in range($n)))")
"$sim" sim --nodes "$nodes" --block-delay "${BLOCK_DELAY:-30s}" > "$work/ready.json" 2>/dev/null &
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ready = json.loads(open(f"{work}/ready.json").readline())
with open(f"{work}/chain-co.toml", "w") as f:
    for n in ready["nodes"]:
        f.write(f'[[node]]\nname = "{n["name"]}"\nurl = "{n["url"]}"\n')
    f.write(f'[probe]\ninterval = "5s"\ntimeout = "3s"\n[api]\nlisten = "127.0.0.1:0"\nstate_file = "{work}/state.json"\n'
            f'[nginx]\noutput = "{work}/upstream.conf"\ntest_cmd = ["true"]\nreload = {{ cmd = ["true"] }}\n')
PY
(cd "$work" && exec "$OLDPWD/$bin" run --config chain-co.toml 2>/dev/null) &
run=$!
sleep "${SECS:-40}"
rss=$(awk '/VmRSS/ {print $2}' /proc/$run/status)
kill -TERM $run; wait $run || true
echo "nodes $n: RSS at ${SECS:-40} s ${rss} KiB (dhat itself adds some)"
python3 - "$work/dhat-heap.json" <<'PY'
import json, sys, collections
d = json.load(open(sys.argv[1]))
ftbl = d["ftbl"]
def site(fs):
    # The first frame in chain-co's own code, else the first non-allocator frame.
    frames = [ftbl[i] for i in fs]
    for f in frames:
        if "chain_co::" in f and "alloc" not in f.split("chain_co::")[1][:8]:
            return f.split(" (")[0].split(": ", 1)[-1][:110]
    for f in frames:
        if not any(k in f for k in ("alloc::", "dhat::", "core::", "__rust", "<alloc", "std::")):
            return f.split(" (")[0].split(": ", 1)[-1][:110]
    return frames[0][:110] if frames else "?"
total = d.get("gb", 0) if isinstance(d.get("gb"), int) else sum(p.get("gb", 0) for p in d["pps"])
by = collections.Counter()
for p in d["pps"]:
    by[site(p["fs"])] += p.get("gb", 0)
peak = sum(by.values())
print(f"heap at the global peak: {peak/1048576:.1f} MiB in {len(d['pps'])} allocation sites")
for s, b in by.most_common(15):
    print(f"{b/1048576:8.2f} MiB  {100*b/max(peak,1):5.1f} %  {s}")
PY
