#!/usr/bin/env bash
# RESP PUBLISH throughput of likewise against a real redis-server, side by side on
# this machine: redis-benchmark sends `PUBLISH ch msg` from 50 clients to each, once
# one command at a time and once pipelined 16 deep, for ROUNDS rounds (alternating
# servers so both see the same background load), and prints the median requests/s
# of each and the ratio likewise/redis.
#
#   bash benches/resp-vs-redis.sh              # N=200000 ROUNDS=3 CLIENTS=50
#   N=1000000 ROUNDS=5 bash benches/resp-vs-redis.sh
#   BASELINE_BIN=/tmp/likewise-old bash benches/resp-vs-redis.sh
#
# BASELINE_BIN adds another likewise binary (an earlier build, say) to the same
# rounds, so that a change is compared with what it changes under the same load.
# LIKEWISE_BIN uses a prebuilt binary instead of building this tree.
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-200000}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-50}"
LIKEWISE_PORT="${LIKEWISE_PORT:-16379}"
REDIS_PORT="${REDIS_PORT:-16380}"
BASELINE_PORT="${BASELINE_PORT:-16381}"
BASELINE_BIN="${BASELINE_BIN:-}"
LIKEWISE_BIN="${LIKEWISE_BIN:-}"

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

if [ -z "$LIKEWISE_BIN" ]; then
  cargo build --release --quiet
  LIKEWISE_BIN=./target/release/likewise
fi
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

LIKEWISE_ADMIN_TOKEN=bench-admin-token RUST_LOG=warn "$LIKEWISE_BIN" serve \
  --data "$tmp/data" --http 127.0.0.1:0 --resp "127.0.0.1:$LIKEWISE_PORT" 2>"$tmp/likewise.log" &
pids+=($!)
ports=("$LIKEWISE_PORT" "$REDIS_PORT")
if [ -n "$BASELINE_BIN" ]; then
  LIKEWISE_ADMIN_TOKEN=bench-admin-token RUST_LOG=warn "$BASELINE_BIN" serve \
    --data "$tmp/baseline" --http 127.0.0.1:0 --resp "127.0.0.1:$BASELINE_PORT" 2>"$tmp/baseline.log" &
  pids+=($!)
  ports+=("$BASELINE_PORT")
fi
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)

for port in "${ports[@]}"; do
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] || { echo "nothing answers on port $port" >&2; cat "$tmp"/*.log >&2; exit 1; }
done

# requests/s of one redis-benchmark run against port $1 with extra flags $2.
rps() {
  redis-benchmark -p "$1" -n "$N" -c "$CLIENTS" $2 --csv publish ch msg 2>/dev/null \
    | awk -F'","' 'NR > 1 { gsub(/"/, "", $2); v = $2 } END { print v }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

if [ -n "$BASELINE_BIN" ]; then
  printf '%-14s %14s %14s %14s %8s %10s\n' "PUBLISH" "likewise req/s" "baseline req/s" "redis req/s" "ratio" "vs base"
else
  printf '%-14s %14s %14s %8s\n' "PUBLISH" "likewise req/s" "redis req/s" "ratio"
fi
for mode in plain "-P 16"; do
  flags=""
  [ "$mode" = plain ] || flags="$mode"
  lw=(); rd=(); bl=()
  for _ in $(seq "$ROUNDS"); do
    lw+=("$(rps "$LIKEWISE_PORT" "$flags")")
    [ -z "$BASELINE_BIN" ] || bl+=("$(rps "$BASELINE_PORT" "$flags")")
    rd+=("$(rps "$REDIS_PORT" "$flags")")
  done
  l="$(printf '%s\n' "${lw[@]}" | median)"
  r="$(printf '%s\n' "${rd[@]}" | median)"
  ratio="$(awk -v l="$l" -v r="$r" 'BEGIN { printf "%.2fx", l / r }')"
  if [ -n "$BASELINE_BIN" ]; then
    b="$(printf '%s\n' "${bl[@]}" | median)"
    vs="$(awk -v l="$l" -v b="$b" 'BEGIN { printf "%+.1f%%", (l / b - 1) * 100 }')"
    printf '%-14s %14.0f %14.0f %14.0f %8s %10s\n' "$mode" "$l" "$b" "$r" "$ratio" "$vs"
  else
    printf '%-14s %14.0f %14.0f %8s\n' "$mode" "$l" "$r" "$ratio"
  fi
  echo "  rounds: likewise ${lw[*]}; ${BASELINE_BIN:+baseline ${bl[*]}; }redis ${rd[*]}"
done
printf '(%s requests, %s clients, median of %s rounds; redis-server %s)\n' \
  "$N" "$CLIENTS" "$ROUNDS" "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
