#!/usr/bin/env bash
# The cost of a write, two builds (or two settings) side by side: the
# command behind the before/after figures of docs/benchmarks.md's "what
# profiling found" for the write path.
#
#   scripts/bench_ab.sh [--rounds N] [--rate R] [--duration D] A_BIN B_BIN
#
# A_BIN and B_BIN are directories holding write-api, invalidator, read-api
# and catalog-bench (copy target/release/ aside before and after a change;
# the same directory twice compares settings). BENCH_AB_ENV_A and
# BENCH_AB_ENV_B add environment to that variant's write-api (say
# CATALOG__WRITE_API__RELAY_LINGER_MS=5).
#
# One database of 10,000 products is seeded once. Then, N times, A and then
# B: write-api, the invalidator and two read-api instances (refresh mode)
# are started from that variant's binaries, both instances warmed, the
# database vacuumed, and PATCHes paced at R/s for D run under
# scripts/bench_cpu.py. Each run prints the CPU milliseconds per write of
# every server process (net of its idle rate), the write p99, and the
# relay's counts (messages per event). Alternating spreads the machine's
# drift over both variants; compare the rounds, not one pair. With
# BENCH_AB_THREADS=1 it also prints each service's CPU and voluntary context
# switches per write by thread (scripts/bench_cpu.py --threads): which of a
# process's threads the cost lands on, in how many wake-ups.
set -euo pipefail

LOG_TAG="bench-ab"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=3
RATE=200
DURATION=12s
while (($# > 0)); do
  case $1 in
    --rounds) ROUNDS=$2 && shift ;;
    --rate) RATE=$2 && shift ;;
    --duration) DURATION=$2 && shift ;;
    -h | --help)
      sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) break ;;
  esac
  shift
done
(($# == 2)) || die "usage: scripts/bench_ab.sh [--rounds N] [--rate R] [--duration D] A_BIN B_BIN"
A_BIN=$(cd "$1" && pwd)
B_BIN=$(cd "$2" && pwd)
for bin in "$A_BIN" "$B_BIN"; do
  for exe in write-api invalidator read-api catalog-bench; do
    [[ -x $bin/$exe ]] || die "$bin/$exe is missing"
  done
done

cd "$CATALOG_ROOT"
SERVER_URL=$(postgres_server_url "$CATALOG__DATABASE__URL")
DATABASE=catalog_bench_ab
NAMESPACE=bench-ab
DB_URL=${SERVER_URL%/postgres}/$DATABASE
PORT=${BENCH_AB_PORT_BASE:-18180}
TOKEN=bench-ab-$RANDOM$RANDOM
OUT=.bench/ab
mkdir -p "$OUT"

declare -A PIDS=()
stop_all() {
  local name
  for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
cleanup() {
  stop_all
  redis_drop_namespace "$NAMESPACE" || true
  psql -X -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" || true
}
trap cleanup EXIT

# start NAME BINARY PORT [ENV...]
start() {
  local name=$1 binary=$2 port=$3
  shift 3
  env CATALOG__DATABASE__URL="$DB_URL" CATALOG__NAMESPACE="$NAMESPACE" \
    CATALOG__AUTH__ADMIN_TOKENS="$TOKEN" CATALOG__INVALIDATOR__AUDIT_INTERVAL_SECS=0 \
    CATALOG__INVALIDATOR__MODE=refresh RUST_LOG=warn \
    CATALOG__READ_API__BIND="127.0.0.1:$port" CATALOG__WRITE_API__BIND="127.0.0.1:$port" \
    CATALOG__INVALIDATOR__BIND="127.0.0.1:$port" "$@" \
    setsid "$binary" </dev/null >>"$OUT/$name.log" 2>&1 &
  PIDS[$name]=$!
  local deadline=$((SECONDS + 60))
  until curl -fs -m 2 -o /dev/null "http://127.0.0.1:$port/readyz"; do
    ((SECONDS < deadline)) || die "$name is not ready on port $port (see $OUT/$name.log)"
    sleep 0.3
  done
}

# start_variant BIN [WRITE-API ENV...]
start_variant() {
  local bin=$1
  shift
  start write-api "$bin/write-api" $((PORT + 1)) "$@"
  start invalidator "$bin/invalidator" $((PORT + 2))
  start read-a "$bin/read-api" "$PORT"
  start read-b "$bin/read-api" $((PORT + 3))
}

log "seeding 10,000 products on $DATABASE"
psql -X -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)"
redis_drop_namespace "$NAMESPACE"
start_variant "$A_BIN"
"$A_BIN/catalog-bench" -q seed --write-url "http://127.0.0.1:$((PORT + 1))" --token "$TOKEN" \
  --products 10000 --ids-out "$OUT/ids.txt" --json "$OUT/seed.json" >/dev/null
stop_all

run=0
for ((round = 1; round <= ROUNDS; round++)); do
  for variant in A B; do
    bin=$A_BIN settings=${BENCH_AB_ENV_A:-}
    [[ $variant == B ]] && bin=$B_BIN settings=${BENCH_AB_ENV_B:-}
    # shellcheck disable=SC2086 # the variant's settings, one per word
    start_variant "$bin" $settings
    "$bin/catalog-bench" -q warm --url "http://127.0.0.1:$PORT" \
      --url "http://127.0.0.1:$((PORT + 3))" --ids "$OUT/ids.txt" >/dev/null
    psql -X -q "$DB_URL" -c "VACUUM (ANALYZE)"
    sleep 2
    run=$((run + 1))
    python3 scripts/bench_cpu.py --group "write-api=pid:${PIDS[write-api]}" \
      --group "invalidator=pid:${PIDS[invalidator]}" \
      --group "read-api-x2=pid:${PIDS[read-a]},${PIDS[read-b]}" --group postgres=comm:postgres \
      --group rabbitmq=comm:beam.smp --group redis=comm:redis-server --idle 4 \
      ${BENCH_AB_THREADS:+--threads} --out "$OUT/cpu-$run.json" \
      -- bash -c '"$@"; sleep 1' _ "$bin/catalog-bench" -q load \
      --url "http://127.0.0.1:$PORT" --dist uniform --write-ratio 1 --ids "$OUT/ids.txt" \
      --rate "$RATE" -c 16 -d "$DURATION" --warmup 0 --write-url "http://127.0.0.1:$((PORT + 1))" \
      --token "$TOKEN" --seed "$(date +%s)$run" --label "PATCH at $RATE/s" \
      --json "$OUT/load-$run.json" >/dev/null
    curl -fsS "http://127.0.0.1:$((PORT + 1))/metrics" >"$OUT/write-api-$run.prom"
    python3 - "$OUT/cpu-$run.json" "$OUT/load-$run.json" "$OUT/write-api-$run.prom" \
      "$round" "$variant" <<'PY'
import json, sys
cpu, load, prom, round_, variant = sys.argv[1:]
cpu, load = json.load(open(cpu)), json.load(open(load))
writes = load["writes"]["ok"]
per = {g: v["net_s"] / writes * 1000 for g, v in cpu["groups"].items()}
counts = {}
for line in open(prom):
    name, _, value = line.rpartition(" ")
    if name in ("outbox_published_total", "outbox_messages_published_total"):
        counts[name] = float(value)
events = counts.get("outbox_published_total", 0)
messages = counts.get("outbox_messages_published_total", 0)
print(f"round {round_} {variant}: {sum(per.values()):.2f} ms per write ("
      + ", ".join(f"{g} {v:.2f}" for g, v in per.items())
      + f"); write p99 {load['writes']['latency_us']['p99'] / 1000:.1f} ms; "
      + f"{writes} writes, {events:.0f} events in {messages:.0f} messages")
for g, v in cpu["groups"].items():
    if g in ("write-api", "invalidator", "read-api-x2") and "threads" in v:
        switches = v["thread_switches"]
        print(f"  {g} by thread, ms (sleeps) per write: " + ", ".join(
            f"{t} {s / writes * 1000:.3f} ({switches[t] / writes:.1f})"
            for t, s in v["threads"].items() if s > 0))
PY
    stop_all
  done
done
