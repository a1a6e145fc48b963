#!/usr/bin/env bash
# The benchmark behind docs/benchmarks.md: builds release binaries, starts
# write-api, the invalidator and read-api instances on a database and a
# namespace of their own, seeds the catalog, runs every scenario with the same
# client settings, and writes docs/benchmarks.md (the generated part) and the
# plots in docs/bench/. A --quick run writes to .bench/quick/ instead.
set -euo pipefail

LOG_TAG="bench"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: scripts/bench.sh [--quick] [--no-build] [--keep] [--writes-only]

Scenarios (same client settings for each):
  1-3. the HTTP ceiling at equal workers: nginx serving one product's JSON as
       a static file, read-api L1 hit and L2 hit (L1 off) on one hot key, each
       with 1 and with 2 HTTP workers; 4. read-api with caching off
       (three alternating rounds; the median round is reported, with the range)
  5. Zipf(1.0) over the catalog, 99 % reads / 1 % writes, read-api A and B;
     5b the same at 70 % of its saturated throughput (open loop, for p99);
     5c with caching off; 5d in evict mode; 5e read-only
  6. freshness: 6a unloaded, 6b under the 5b load, 6c under the saturating 5 load
  7. the cost of a write: CPU seconds per 1000 PATCHes, per process, at 200/s;
     then at 10, 100 and 1000 writes/s: CPU per write and freshness p99;
     7b with 1, 2 and 4 read-api instances; 7c with the relay lingering
     (write_api.relay_linger_ms = BENCH_RELAY_LINGER_MS) and without, in pairs
  8. reprice every product through PATCH /products/bulk while Zipf reads run
  9. memory: RSS of read-api A over a long Zipf run (BENCH_SOAK, 10 minutes)
 10. catalog size: 10k, 100k and 1M products (seed time, RSS per L1 entry,
     Zipf hit ratio, Postgres queries per 1000 requests)

  --quick     small catalogs and short runs, to try the script: the report,
              plots, raw results and seed ids go to .bench/quick/ (its
              database is catalog_bench_quick), never to docs/ or to what
              a later --writes-only run reads
  --no-build  reuse target/release
  --keep      leave the services running afterwards
  --writes-only  run section 7 again (the cost of a write) against the database
              an earlier run seeded, keep the other results, rewrite the report

Before the Zipf runs every product is read once on each instance (`warm`), so
they measure the steady state of a deployment that has been serving for a while.
The services run with invalidator.mode = refresh (hot products stay cached
through updates); scenario 5d repeats 5 in evict mode for comparison.

Environment: BENCH_PRODUCTS (100000), BENCH_DURATION (20s), BENCH_WARMUP (5s),
BENCH_CONNECTIONS (32), BENCH_CLIENT_THREADS (1), BENCH_NAMESPACE (bench),
BENCH_DATABASE (catalog_bench; catalog_bench_quick with --quick),
BENCH_PORT_BASE (18080), BENCH_MODE (refresh),
BENCH_ROUNDS (3), BENCH_SOAK (600s), BENCH_SIZES ("10000 100000 1000000"),
BENCH_REPRICE_READ_RATE (10000 reads/s while repricing), BENCH_REPRICE_RATE
(2000 products/s, or "none" for an unpaced reprice), BENCH_REPRICE_BATCH (250),
BENCH_RELAY_LINGER_MS (10).
USAGE
}

QUICK=no
BUILD=yes
KEEP=no
WRITES_ONLY=no
while (($# > 0)); do
  case $1 in
    --quick) QUICK=yes ;;
    --no-build) BUILD=no ;;
    --keep) KEEP=yes ;;
    --writes-only) WRITES_ONLY=yes ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done

if [[ $QUICK == yes ]]; then
  PRODUCTS=${BENCH_PRODUCTS:-10000}
  DURATION=${BENCH_DURATION:-5s}
  WARMUP=${BENCH_WARMUP:-2s}
  ROUNDS=${BENCH_ROUNDS:-1}
  SOAK=${BENCH_SOAK:-30s}
  SIZES=${BENCH_SIZES:-"2000 10000 30000"}
  RATE_WINDOW=5s
  PUBLISH=.bench/quick
  # Its own database, seed ids and raw results: a later --writes-only run
  # (which publishes) must never find a quick run's results as its own.
  STATE=.bench/quick
  DATABASE=${BENCH_DATABASE:-catalog_bench_quick}
else
  PRODUCTS=${BENCH_PRODUCTS:-100000}
  DURATION=${BENCH_DURATION:-20s}
  WARMUP=${BENCH_WARMUP:-5s}
  ROUNDS=${BENCH_ROUNDS:-3}
  SOAK=${BENCH_SOAK:-600s}
  SIZES=${BENCH_SIZES:-"10000 100000 1000000"}
  RATE_WINDOW=15s
  PUBLISH=docs
  STATE=.bench
  DATABASE=${BENCH_DATABASE:-catalog_bench}
fi
CONNECTIONS=${BENCH_CONNECTIONS:-32}
CLIENT_THREADS=${BENCH_CLIENT_THREADS:-1}
# The services' namespace; the catalog-size runs (10) switch NAMESPACE to
# their own, so the clean-up names both from MAIN_NAMESPACE.
MAIN_NAMESPACE=${BENCH_NAMESPACE:-bench}
NAMESPACE=$MAIN_NAMESPACE
MODE=${BENCH_MODE:-refresh}
PORT=${BENCH_PORT_BASE:-18080}
REPRICE_READ_RATE=${BENCH_REPRICE_READ_RATE:-10000}
# Products per second the reprice is paced at ("none": as fast as it goes),
# and per bulk request: small batches at a steady pace leave the storefront
# its share of the machine (docs/benchmarks.md, "what profiling found").
REPRICE_RATE=${BENCH_REPRICE_RATE:-2000}
REPRICE_BATCH=${BENCH_REPRICE_BATCH:-250}
# The relay's linger for scenario 7c (write_api.relay_linger_ms).
RELAY_LINGER_MS=${BENCH_RELAY_LINGER_MS:-10}
TOKEN=bench-$RANDOM$RANDOM

cd "$CATALOG_ROOT"
BIN=target/release
OUT=$STATE/results
IDS=$STATE/ids.txt
RUN=.bench/run
DOC=$PUBLISH/benchmarks.md
PLOTS=$PUBLISH/bench
mkdir -p "$OUT" "$RUN" "$PLOTS"
if [[ $WRITES_ONLY == no ]]; then
  rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.tsv
fi
if [[ $QUICK == yes && ! -f $DOC ]]; then
  cp docs/benchmarks.md "$DOC"
fi

# Ports: read-api A and B (both caches, default workers), W1 and W2 (both
# caches, 1 and 2 workers), L2 and L2W2 (L1 off; 1 and 2 workers), NOCACHE (caching off).
WRITE_PORT=$((PORT + 1))
INVALIDATOR_PORT=$((PORT + 2))
READ_A=$PORT
READ_B=$((PORT + 3))
READ_L2=$((PORT + 4))
READ_NOCACHE=$((PORT + 5))
READ_W2=$((PORT + 6))
READ_L2W2=$((PORT + 7))
READ_SIZE=$((PORT + 8))
READ_W1=$((PORT + 9))
NGINX_PORT=$((PORT + 10))

declare -A PIDS=()

cleanup() {
  local status=$? name
  set +e
  if [[ $KEEP == yes ]]; then
    log "--keep: services left running: ${!PIDS[*]}"
    exit "$status"
  fi
  for name in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$name]}" 2>/dev/null
  done
  wait 2>/dev/null
  # A Redis shared with other users (a test suite, say) gets its keys back:
  # a million products' worth of ours would slow every SCAN of theirs.
  redis_drop_namespace "$MAIN_NAMESPACE"
  redis_drop_namespace "$MAIN_NAMESPACE-size"
  exit "$status"
}
trap cleanup EXIT

step() { printf '\n[%s] ==> %s\n' "$LOG_TAG" "$*"; }

SERVER_URL=$(postgres_server_url "$CATALOG__DATABASE__URL")
DB_BASE=${SERVER_URL%/postgres}
BENCH_DB_URL=$DB_BASE/$DATABASE

base_env() {
  echo "CATALOG__DATABASE__URL=$BENCH_DB_URL CATALOG__NAMESPACE=$NAMESPACE" \
    "CATALOG__AUTH__ADMIN_TOKENS=$TOKEN CATALOG__INVALIDATOR__AUDIT_INTERVAL_SECS=0 RUST_LOG=warn" \
    "CATALOG__INVALIDATOR__MODE=$MODE"
}

# start NAME BINARY PORT [EXTRA ENV...]
start() {
  local name=$1 binary=$2 port=$3
  shift 3
  # shellcheck disable=SC2046
  env $(base_env) \
    CATALOG__READ_API__BIND="127.0.0.1:$port" \
    CATALOG__WRITE_API__BIND="127.0.0.1:$port" \
    CATALOG__INVALIDATOR__BIND="127.0.0.1:$port" \
    "$@" setsid "$BIN/$binary" </dev/null >"$RUN/$name.log" 2>&1 &
  PIDS[$name]=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/readyz"; do
    ((SECONDS < deadline)) || {
      tail -20 "$RUN/$name.log" >&2
      die "$name is not ready on port $port"
    }
    sleep 0.3
  done
  log "$name ready on :$port (pid ${PIDS[$name]})"
}

# stop NAME...: SIGTERM, then wait for each to exit.
stop() {
  local name
  for name in "$@"; do
    [[ -n ${PIDS[$name]:-} ]] || continue
    kill -TERM "${PIDS[$name]}" 2>/dev/null || true
    wait "${PIDS[$name]}" 2>/dev/null || true
    unset "PIDS[$name]"
  done
}

rss_kb() { ps -o rss= -p "$1" | tr -d ' '; }
rss_mb() { awk '{printf "%.0f", $1 / 1024}' < <(rss_kb "$1"); }
# metric PORT NAME: a gauge or counter from read-api's /metrics.
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2; exit}'; }

# avg_body PORT IDS_FILE: the mean size of a product's JSON body (what an L1
# entry holds), over the first 200 ids.
avg_body() {
  head -200 "$2" | while read -r id; do
    curl -fsS -o /dev/null -w '%{size_download}\n' "http://127.0.0.1:$1/products/$id"
  done | awk '{s += $1; n++} END {printf "%.0f", n ? s / n : 0}'
}

# bench ARGS: catalog-bench with the client settings. Every load gets a seed
# of its own: PATCH bodies come from the seeded generator, and a later run
# repeating an earlier one's (product, price) pairs would send no-op PATCHes,
# which change nothing and publish nothing.
bench() {
  if [[ $1 == load ]]; then
    set -- "$@" --seed "$(next_seed)"
  fi
  "$BIN/catalog-bench" --threads "$CLIENT_THREADS" -q "$@"
}
SEED_FILE=$RUN/seed
next_seed() {
  local seed
  seed=$(($(cat "$SEED_FILE" 2>/dev/null || echo "$(date +%s)000") + 1))
  echo "$seed" >"$SEED_FILE"
  echo "$seed"
}

# rounds NAME:PORT:LABEL... -- ARGS: every target once per round, alternating,
# ROUNDS times; the median round (by throughput) of each target is kept as
# OUT/NAME.json, with every round's rate. Alternating spreads the machine's
# drift over all targets instead of favouring whichever ran first.
rounds() {
  local targets=() arg
  while (($# > 0)) && [[ $1 != -- ]]; do
    targets+=("$1")
    shift
  done
  shift
  local round target name port label
  for ((round = 1; round <= ROUNDS; round++)); do
    for target in "${targets[@]}"; do
      IFS=: read -r name port label <<<"$target"
      local extra=()
      [[ $name == *nginx* ]] && extra=(--no-metrics)
      bench load --url "http://127.0.0.1:$port" "$@" "${extra[@]}" --label "$label" \
        --json "$OUT/$name.json.$round" | grep -E '^  (reads|total) +[0-9]' || true
    done
  done
  for target in "${targets[@]}"; do
    IFS=: read -r name port label <<<"$target"
    python3 - "$OUT/$name.json" "$ROUNDS" <<'PY'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}.{k}")) for k in range(1, n + 1)]
runs.sort(key=lambda r: r["throughput_rps"])
median = runs[len(runs) // 2]
median["runs_rps"] = [r["throughput_rps"] for r in runs]
median["runs_p99_us"] = sorted(r["reads"]["latency_us"]["p99"] for r in runs)
json.dump(median, open(out, "w"), indent=2)
for k in range(1, n + 1):
    os.remove(f"{out}.{k}")
PY
  done
}

# cpu_groups: the process groups whose CPU a write costs (the client excluded).
# READERS: the read-api instances subscribed to events (all counted).
READERS=(read-a read-b)
cpu_groups() {
  local name pids=()
  for name in "${READERS[@]}"; do pids+=("${PIDS[$name]}"); done
  echo --group "write-api=pid:${PIDS[write-api]}" --group "invalidator=pid:${PIDS[invalidator]}" \
    --group "read-api-x${#READERS[@]}=pid:$(
      IFS=,
      echo "${pids[*]}"
    )" --group postgres=comm:postgres \
    --group rabbitmq=comm:beam.smp --group redis=comm:redis-server
}

# nginx_start NAME WORKERS PORT: nginx serving .bench/nginx/root.
nginx_start() {
  local name=$1 workers=$2 port=$3 dir=$CATALOG_ROOT/.bench/nginx
  mkdir -p "$dir/tmp-$name"
  cat >"$dir/$name.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/$name.pid;
error_log $dir/$name.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $dir/tmp-$name;
  proxy_temp_path $dir/tmp-$name;
  fastcgi_temp_path $dir/tmp-$name;
  uwsgi_temp_path $dir/tmp-$name;
  scgi_temp_path $dir/tmp-$name;
  server {
    listen 127.0.0.1:$port;
    location / { root $dir/root; default_type application/json; }
  }
}
EOF
  setsid "$NGINX" -c "$dir/$name.conf" &
  PIDS[$name]=$!
}

# write_cost NAME RATE: PATCHes only, paced at RATE/s for RATE_WINDOW, with
# every server process's CPU measured around it (net of its idle rate). The
# trailing second lets the last events reach every process.
write_cost() {
  local name=$1 rate=$2
  # shellcheck disable=SC2046
  python3 scripts/bench_cpu.py $(cpu_groups) --idle 5 --out "$OUT/$name-cpu.json" -- \
    bash -c '"$@"; sleep 1' _ "$BIN/catalog-bench" --threads "$CLIENT_THREADS" -q load \
    --url "http://127.0.0.1:$READ_A" --dist uniform --write-ratio 1 --rate "$rate" -c 16 \
    -d "$RATE_WINDOW" --warmup 0 --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" \
    --seed "$(next_seed)" --label "PATCH at $rate/s" --json "$OUT/$name.json"
}

# vacuum: what autovacuum would have done by now. The outbox is a queue table
# (every write inserts a row, the relay deletes it) and the seed and the runs
# above leave hundreds of thousands of dead rows in it; a Postgres with
# autovacuum off (as this machine's is) makes the relay's claim scan them all,
# and the cost of a write would measure the bloat, not the write.
vacuum() {
  if have psql; then
    psql -X -q "$BENCH_DB_URL" -c "VACUUM (ANALYZE)" || warn "VACUUM failed; the write costs may include table bloat"
  fi
}

# writes_section: 7 and 7b, the cost of a write (also alone: --writes-only).
writes_section() {
  vacuum
  step "7. the cost of a write: PATCH at 200/s, CPU per process"
  write_cost 7-cost 200
  for rate in 10 100 1000; do
    step "7. write rate $rate/s: CPU per write, then freshness"
    write_cost "7-rate-$rate" "$rate"
    writers=$((rate >= 1000 ? 8 : 2))
    products=$((rate >= 1000 ? 200 : 50))
    bench freshness "${fresh[@]}" --write-rate "$rate" --writers "$writers" --products "$products" \
      -d "$RATE_WINDOW" --label "freshness at $rate writes/s" --json "$OUT/7-rate-$rate-fresh.json"
  done

  step "7b. 1, 2 and 4 read-api instances: CPU per write (RabbitMQ's share) and freshness at 200 writes/s"
  READ_C=$((PORT + 11))
  READ_D=$((PORT + 12))
  instance_urls() {
    local port
    for port in "$@"; do echo --url "http://127.0.0.1:$port"; done
  }
  for n in 1 2 4; do
    case $n in
      1)
        stop read-b
        READERS=(read-a)
        ports=("$READ_A")
        ;;
      2)
        start read-b read-api "$READ_B"
        READERS=(read-a read-b)
        ports=("$READ_A" "$READ_B")
        ;;
      4)
        start read-c read-api "$READ_C"
        start read-d read-api "$READ_D"
        READERS=(read-a read-b read-c read-d)
        ports=("$READ_A" "$READ_B" "$READ_C" "$READ_D")
        ;;
    esac
    write_cost "7-instances-$n" 200
    # shellcheck disable=SC2046
    bench freshness $(instance_urls "${ports[@]}") --write-url "http://127.0.0.1:$WRITE_PORT" \
      --token "$TOKEN" --write-rate 200 --writers 4 --products 100 -d "$RATE_WINDOW" \
      --label "freshness, $n read-api instance(s)" --json "$OUT/7-instances-$n-fresh.json"
  done
  stop read-c read-d
  READERS=(read-a read-b)

  step "7c. the relay lingering ${RELAY_LINGER_MS} ms: CPU per write and freshness at 200 writes/s"
  stop write-api
  start write-api write-api "$WRITE_PORT" CATALOG__WRITE_API__RELAY_LINGER_MS="$RELAY_LINGER_MS"
  write_cost 7-linger 200
  bench freshness "${fresh[@]}" --write-rate 200 --writers 4 --products 100 -d "$RATE_WINDOW" \
    --label "freshness, relay linger ${RELAY_LINGER_MS} ms" --json "$OUT/7-linger-fresh.json"
  # The same scenario with the default, right after, for a like-for-like
  # pair (the machine drifts over a long run).
  stop write-api
  start write-api write-api "$WRITE_PORT"
  write_cost 7-linger-off 200
  bench freshness "${fresh[@]}" --write-rate 200 --writers 4 --products 100 -d "$RATE_WINDOW" \
    --label "freshness, no relay linger" --json "$OUT/7-linger-off-fresh.json"
}

# write_report: the generated part of $DOC, from every result in $OUT.
write_report() {
  step "$DOC"
  python3 scripts/bench_report.py --results "$OUT" --doc "$DOC" --plots "$PLOTS" \
    --products "$PRODUCTS" --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" \
    --soak "$SOAK" --reprice-read-rate "$REPRICE_READ_RATE" \
    --connections "$CONNECTIONS" --client-threads "$CLIENT_THREADS" --quick "$QUICK" --mode "$MODE" \
    --relay-linger-ms "$RELAY_LINGER_MS"
}

common=(-c "$CONNECTIONS" -d "$DURATION" --warmup "$WARMUP")
fresh=(--url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B"
  --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN")
DEFAULT_WORKERS=$(($(nproc) > 1 ? $(nproc) - 1 : 1))

step "backing services"
scripts/services.sh --owner bench.sh

if [[ $BUILD == yes ]]; then
  step "cargo build --release --bins"
  cargo build --release --bins
fi

fresh_database() {
  local database=$1 namespace=$2
  if have psql; then
    psql -X -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" ||
      die "cannot drop $database"
  fi
  redis_drop_namespace "$namespace"
}

if [[ $WRITES_ONLY == yes ]]; then
  [[ -s $IDS && -f $OUT/5-zipf.json ]] ||
    die "--writes-only needs the database and results of an earlier full run"
  step "services: write-api, invalidator, read-api A and B (on $DATABASE, as seeded before)"
  start write-api write-api "$WRITE_PORT"
  start invalidator invalidator "$INVALIDATOR_PORT"
  start read-a read-api "$READ_A"
  start read-b read-api "$READ_B"
  bench warm --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --ids "$IDS"
  writes_section
  write_report
  log "done: section 7 measured again; $DOC rewritten from $OUT/"
  exit 0
fi

step "a fresh database ($DATABASE) and namespace ($NAMESPACE)"
fresh_database "$DATABASE" "$NAMESPACE"

step "services: write-api, invalidator, read-api x7"
start write-api write-api "$WRITE_PORT"
start invalidator invalidator "$INVALIDATOR_PORT"
start read-a read-api "$READ_A"
start read-b read-api "$READ_B"
start read-w1 read-api "$READ_W1" CATALOG__READ_API__WORKERS=1
start read-w2 read-api "$READ_W2" CATALOG__READ_API__WORKERS=2
start read-l2 read-api "$READ_L2" CATALOG__CACHE__L1_CAPACITY=0 CATALOG__READ_API__WORKERS=1
start read-l2w2 read-api "$READ_L2W2" CATALOG__CACHE__L1_CAPACITY=0 CATALOG__READ_API__WORKERS=2
start read-nocache read-api "$READ_NOCACHE" CATALOG__CACHE__ENABLED=false

# L1 fills from the events as products are created (refresh mode), so the
# memory baseline is taken before the seed, not before the warm-up.
RSS_AT_START=$(rss_kb "${PIDS[read-a]}")

step "seed $PRODUCTS products"
bench seed --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" --products "$PRODUCTS" \
  --ids-out "$IDS" --json "$OUT/seed.json"
HOT=$(head -1 "$IDS")

step "1-4. the ceiling at equal workers ($ROUNDS alternating rounds)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $NGINX ]]; then
  if [[ $(id -u) == 0 ]] && have apt-get; then
    apt-get install -y nginx-light >/dev/null || apt-get install -y nginx >/dev/null
  else
    die "nginx is not installed (apt-get install -y nginx-light)"
  fi
fi
mkdir -p .bench/nginx/root/products
curl -fsS "http://127.0.0.1:$READ_A/products/$HOT" >".bench/nginx/root/products/$HOT"
nginx_start nginx-w1 1 "$NGINX_PORT"
nginx_start nginx-w2 2 $((NGINX_PORT + 1))
sleep 1
# The L2 instances hold nothing yet: one read each puts the hot key in Redis.
curl -fsS -o /dev/null "http://127.0.0.1:$READ_L2/products/$HOT"
curl -fsS -o /dev/null "http://127.0.0.1:$READ_L2W2/products/$HOT"
rounds "1-nginx-w1:$NGINX_PORT:nginx static file, 1 worker" \
  "2-l1-w1:$READ_W1:read-api L1 hit, 1 worker" \
  "3-l2-w1:$READ_L2:read-api L2 hit, 1 worker" \
  "1-nginx-w2:$((NGINX_PORT + 1)):nginx static file, 2 workers" \
  "2-l1-w2:$READ_W2:read-api L1 hit, 2 workers" \
  "3-l2-w2:$READ_L2W2:read-api L2 hit, 2 workers" \
  "4-nocache:$READ_NOCACHE:read-api, no cache, $DEFAULT_WORKERS worker(s)" \
  -- --dist hot --ids "$IDS" "${common[@]}"
stop nginx-w1 nginx-w2 read-w1 read-w2 read-l2 read-l2w2

step "warm: every product once on read-api A and B"
bench warm --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --ids "$IDS"
sleep 1
{
  echo "workers-default $DEFAULT_WORKERS"
  echo "rss-kb-at-start $RSS_AT_START"
  echo "rss-kb-after-warm $(rss_kb "${PIDS[read-a]}")"
  echo "l1-entries-after-warm $(metric "$READ_A" cache_l1_entries)"
  echo "l1-bytes-after-warm $(metric "$READ_A" cache_l1_bytes)"
  echo "body-bytes-avg $(avg_body "$READ_A" "$IDS")"
} >"$OUT/memory.txt"
cat "$OUT/memory.txt"

step "5. Zipf(1.0), 1 % writes, read-api A and B"
zipf=(--url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --dist zipf --zipf-s 1.0
  --write-ratio 0.01 --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN")
bench load "${zipf[@]}" "${common[@]}" --label "Zipf 1.0, 1% writes" --json "$OUT/5-zipf.json"
SATURATED=$(python3 -c "import json; print(int(json.load(open('$OUT/5-zipf.json'))['throughput_rps']))")
RATE=$((SATURATED * 7 / 10))
step "5b. the same at 70 % of saturation ($RATE req/s, open loop)"
bench load "${zipf[@]}" "${common[@]}" --rate "$RATE" --label "Zipf at 70% ($RATE/s)" \
  --json "$OUT/5b-zipf-70.json"
step "5c. Zipf with caching off (same load, read-api D)"
bench load --url "http://127.0.0.1:$READ_NOCACHE" --dist zipf --zipf-s 1.0 \
  --write-ratio 0.01 --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" \
  "${common[@]}" --label "Zipf 1.0, no cache" --json "$OUT/5c-zipf-nocache.json"
stop read-nocache

step "5e. Zipf read-only (the read path alone)"
bench load --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --dist zipf --zipf-s 1.0 \
  "${common[@]}" --label "Zipf 1.0, read-only" --json "$OUT/5e-zipf-readonly.json"

background=(--background-connections "$CONNECTIONS" --background-dist zipf --background-write-ratio 0.01)
step "6a. freshness, no other load"
bench freshness "${fresh[@]}" --write-rate 20 -d "$DURATION" --products 50 \
  --label "freshness, unloaded" --json "$OUT/6a-freshness-idle.json"
step "6b. freshness under the 5b load ($RATE req/s, 1 % writes)"
bench freshness "${fresh[@]}" --write-rate 20 -d "$DURATION" --products 50 "${background[@]}" \
  --background-rate "$RATE" --label "freshness at 70% load" --json "$OUT/6-freshness.json"
step "6c. freshness under the saturating scenario-5 load (closed loop)"
bench freshness "${fresh[@]}" --write-rate 20 -d "$DURATION" --products 50 "${background[@]}" \
  --label "freshness at saturation" --json "$OUT/6c-freshness-saturated.json"

writes_section
bench warm --url "http://127.0.0.1:$READ_B" --ids "$IDS"

step "8. reprice every product (PATCH /products/bulk, paced at $REPRICE_RATE/s) while Zipf reads run at $REPRICE_READ_RATE/s"
pace=()
[[ $REPRICE_RATE == none ]] || pace=(--rate "$REPRICE_RATE")
bench reprice --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" \
  --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" --ids "$IDS" \
  --background-connections "$CONNECTIONS" --background-rate "$REPRICE_READ_RATE" \
  --batch "$REPRICE_BATCH" --concurrency 1 "${pace[@]}" --label "reprice $PRODUCTS products" --json "$OUT/8-reprice.json"

vacuum
step "9. memory: RSS of read-api A over $SOAK of Zipf with 1 % writes"
bench load "${zipf[@]}" -c "$CONNECTIONS" -d "$SOAK" --warmup 0 --label "soak" \
  --json "$OUT/9-soak.json" >/dev/null &
SOAK_PID=$!
SOAK_START=$SECONDS
printf 't_s\trss_kb\tl1_entries\tl1_bytes\n' >"$OUT/9-soak.tsv"
while kill -0 "$SOAK_PID" 2>/dev/null; do
  printf '%s\t%s\t%s\t%s\n' $((SECONDS - SOAK_START)) "$(rss_kb "${PIDS[read-a]}")" \
    "$(metric "$READ_A" cache_l1_entries)" "$(metric "$READ_A" cache_l1_bytes)" >>"$OUT/9-soak.tsv"
  sleep "$([[ $QUICK == yes ]] && echo 3 || echo 15)"
done
wait "$SOAK_PID"
printf '%s\t%s\t%s\t%s\n' $((SECONDS - SOAK_START)) "$(rss_kb "${PIDS[read-a]}")" \
  "$(metric "$READ_A" cache_l1_entries)" "$(metric "$READ_A" cache_l1_bytes)" >>"$OUT/9-soak.tsv"
tail -3 "$OUT/9-soak.tsv"

step "5d. Zipf in evict mode (invalidator and read-api A/B restarted), for comparison"
stop invalidator read-a read-b
MODE=evict
start invalidator invalidator "$INVALIDATOR_PORT"
start read-a read-api "$READ_A"
start read-b read-api "$READ_B"
bench warm --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --ids "$IDS"
bench load "${zipf[@]}" "${common[@]}" --label "Zipf 1.0, 1% writes, evict mode" --json "$OUT/5d-zipf-evict.json"
{
  for name in write-api invalidator read-a read-b; do
    echo "rss-mb-$name $(rss_mb "${PIDS[$name]}")"
  done
} >>"$OUT/memory.txt"
stop write-api invalidator read-a read-b
MODE=${BENCH_MODE:-refresh}

step "10. catalog size: $SIZES products"
SIZE_DB=${DATABASE}_size
for size in $SIZES; do
  step "10. $size products: seed, warm one read-api, Zipf read-only"
  BENCH_DB_URL=$DB_BASE/$SIZE_DB
  NAMESPACE=$MAIN_NAMESPACE-size
  fresh_database "$SIZE_DB" "$NAMESPACE"
  start write-api write-api "$WRITE_PORT"
  start invalidator invalidator "$INVALIDATOR_PORT"
  start read-size read-api "$READ_SIZE"
  start_kb=$(rss_kb "${PIDS[read-size]}")
  bench seed --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" --products "$size" \
    --ids-out .bench/ids-size.txt --json "$OUT/10-size-$size-seed.json"
  bench warm --url "http://127.0.0.1:$READ_SIZE" --ids .bench/ids-size.txt
  sleep 1
  {
    echo "rss-kb-at-start $start_kb"
    echo "rss-kb-after-warm $(rss_kb "${PIDS[read-size]}")"
    echo "l1-entries-after-warm $(metric "$READ_SIZE" cache_l1_entries)"
    echo "l1-bytes-after-warm $(metric "$READ_SIZE" cache_l1_bytes)"
    echo "body-bytes-avg $(avg_body "$READ_SIZE" .bench/ids-size.txt)"
  } >"$OUT/10-size-$size.txt"
  cat "$OUT/10-size-$size.txt"
  bench load --url "http://127.0.0.1:$READ_SIZE" --dist zipf --zipf-s 1.0 --ids .bench/ids-size.txt \
    "${common[@]}" --label "Zipf 1.0 read-only, $size products" --json "$OUT/10-size-$size-zipf.json"
  stop write-api invalidator read-size
done
if have psql; then
  psql -X -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS \"$SIZE_DB\" WITH (FORCE)" || true
fi

step "plots"
bench plot --input "$OUT/1-nginx-w1.json" --input "$OUT/2-l1-w1.json" --input "$OUT/3-l2-w1.json" \
  --input "$OUT/4-nocache.json" --input "$OUT/5-zipf.json" --input "$OUT/5b-zipf-70.json" \
  --input "$OUT/5e-zipf-readonly.json" \
  --out "$PLOTS/latency.svg" --title "Read latency by scenario"
bench plot-freshness --input "$OUT/6a-freshness-idle.json" --input "$OUT/6-freshness.json" \
  --input "$OUT/6c-freshness-saturated.json" --out "$PLOTS/freshness.svg" \
  --title "Freshness lag: write-api 200 to first read of the new version"

write_report
log "done: $DOC, $PLOTS/*.svg, raw results in $OUT/"
