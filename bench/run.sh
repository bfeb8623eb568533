#!/usr/bin/env bash
# Sweep benchmark: the release binary against the simulator on loopback.
#
# For each scenario it prints how long the sweep took against the lower bound the rate limit
# sets (requests / rate), the 429s it caused, and the process's peak memory. It measures and
# prints; it asserts nothing (targets belong here, not in timed tests).
#
#   bench/run.sh                 # the default scenarios
#   bench/run.sh 500 10 verify   # one scenario: accounts, rate (req/s), verify|no-verify
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
BIN=$PWD/target/release/gemini-sweep
work=$(mktemp -d)
sim_pid=
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

KEY=master-bench
SECRET=bench-secret-not-real

scenario() {
  local accounts=$1 rate=$2 verify=$3
  local sim_rate_args=(--rate "$rate" --burst-queue 5)
  # "unlimited": a limit no client reaches, to see what our own code costs.
  [ "$rate" = unlimited ] && { sim_rate_args=(); rate=100000; }
  "$BIN" sim --accounts "$accounts" --orders 0..=50 --reject-fraction 0 \
      --key "$KEY:$SECRET" "${sim_rate_args[@]}" >"$work/sim.out" 2>/dev/null &
  sim_pid=$!
  for _ in $(seq 100); do [ -s "$work/sim.out" ] && break; sleep 0.05; done
  local url
  url=$(head -1 "$work/sim.out" | sed 's/^listening on //')
  { echo account; for i in $(seq 1 "$accounts"); do printf 'acct-%04d\n' "$i"; done; } >"$work/accounts.csv"
  rm -f "$work"/bench.db*
  local verify_flag=() calls=3
  [ "$verify" = no-verify ] && { verify_flag=(--no-verify); calls=1; }
  GEMINI_API_KEY=$KEY GEMINI_API_SECRET=$SECRET RUST_LOG=warn \
    /usr/bin/time -f '%M' -o "$work/rss" \
    "$BIN" run --accounts "$work/accounts.csv" --base-url "$url" --rate "$rate" \
      --concurrency 32 --db "$work/bench.db" --lock-dir "$work" "${verify_flag[@]}" \
      >"$work/summary.json" 2>"$work/stderr" || true
  kill "$sim_pid" 2>/dev/null; wait "$sim_pid" 2>/dev/null || true; sim_pid=
  python3 - "$work/summary.json" "$work/rss" "$accounts" "$rate" "$calls" "$verify" <<'PY'
import json, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
rss_kib = int(open(sys.argv[2]).read().split()[-1])
accounts, rate, calls, verify = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
requests = summary["attempts"]
bound_s = (accounts * calls - 1) / rate
wall_s = summary["wall_ms"] / 1000
line = (f"{accounts:>6} accounts {verify:<9} rate {rate:>8g}/s: {requests:>6} requests, "
        f"{summary['orders_cancelled']:>7} orders, wall {wall_s:7.2f} s, bound {bound_s:7.2f} s")
if rate < 100000:
    line += f" ({100 * bound_s / wall_s:5.1f}% of the limit)"
else:
    line += f" ({requests / wall_s:7.0f} req/s, our own cost)"
line += f", 429s {summary['rate_limited']}, peak RSS {rss_kib / 1024:.1f} MiB, exit {summary['exit_code']}"
print(line, flush=True)
PY
}

if [ $# -eq 3 ]; then
  scenario "$1" "$2" "$3"
  exit 0
fi
echo "gemini-sweep $("$BIN" --version | cut -d' ' -f2), $(nproc) cores; simulator on loopback, --concurrency 32"
scenario 100 10 verify          # the exchange's documented limit (600/min), full reconciliation
scenario 300 50 no-verify       # a generous limit
scenario 1000 500 verify
scenario 2000 unlimited no-verify   # no limit at all: what the engine itself costs
scenario 2000 unlimited verify
