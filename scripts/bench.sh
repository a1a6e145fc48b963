#!/usr/bin/env bash
# The benchmark behind docs/benchmarks.md: builds release binaries, starts
# write-api, the invalidator and read-api instances on a database and a
# namespace of their own, seeds the catalog, runs every scenario with the same
# client settings, and writes docs/benchmarks.md (the generated part) and the
# plots in docs/bench/.
set -euo pipefail

LOG_TAG="bench"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: scripts/bench.sh [--quick] [--no-build] [--keep]

Scenarios (same client settings for each):
  1. nginx serving one product's JSON as a static file (the HTTP ceiling)
  2. read-api, L1 hit            (one hot key)
  3. read-api, L2 hit            (one hot key, L1 disabled)
  4. read-api, caching off       (one hot key, every read from Postgres)
     (1-4: three runs each; the median run is reported, with the range)
  5. Zipf(1.0) over the catalog, 99 % reads / 1 % writes, both read-api instances;
     5b the same at 70 % of its saturated throughput (open loop, for p99);
     5c with caching off; 5d in evict mode; 5e read-only
  6. freshness: 6a unloaded, 6b under the 5b load, 6c under the saturating 5 load

  --quick     10k products and short runs (to try the script, not to publish)
  --no-build  reuse target/release
  --keep      leave the services running afterwards

Before the Zipf runs every product is read once on each instance (`warm`), so
they measure the steady state of a deployment that has been serving for a while.
The services run with invalidator.mode = refresh (hot products stay cached
through updates); scenario 5d repeats 5 in evict mode for comparison.

Environment: BENCH_PRODUCTS (100000), BENCH_DURATION (20s), BENCH_WARMUP (5s),
BENCH_CONNECTIONS (32), BENCH_CLIENT_THREADS (1), BENCH_NAMESPACE (bench),
BENCH_DATABASE (catalog_bench), BENCH_PORT_BASE (18080), BENCH_MODE (refresh).
EOF
}

QUICK=no
BUILD=yes
KEEP=no
while (($# > 0)); do
  case $1 in
    --quick) QUICK=yes ;;
    --no-build) BUILD=no ;;
    --keep) KEEP=yes ;;
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
else
  PRODUCTS=${BENCH_PRODUCTS:-100000}
  DURATION=${BENCH_DURATION:-20s}
  WARMUP=${BENCH_WARMUP:-5s}
fi
CONNECTIONS=${BENCH_CONNECTIONS:-32}
CLIENT_THREADS=${BENCH_CLIENT_THREADS:-1}
NAMESPACE=${BENCH_NAMESPACE:-bench}
MODE=${BENCH_MODE:-refresh}
DATABASE=${BENCH_DATABASE:-catalog_bench}
PORT=${BENCH_PORT_BASE:-18080}
TOKEN=bench-$RANDOM$RANDOM

cd "$CATALOG_ROOT"
BIN=target/release
OUT=.bench/results
RUN=.bench/run
mkdir -p "$OUT" "$RUN" docs/bench
rm -f "$OUT"/*.json

# Ports: read-api A and B (both caches), C (L1 off), D (caching off).
WRITE_PORT=$((PORT + 1))
INVALIDATOR_PORT=$((PORT + 2))
READ_A=$PORT
READ_B=$((PORT + 3))
READ_L2=$((PORT + 4))
READ_NOCACHE=$((PORT + 5))
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
  exit "$status"
}
trap cleanup EXIT

step() { printf '\n[%s] ==> %s\n' "$LOG_TAG" "$*"; }

SERVER_URL=$(postgres_server_url "$CATALOG__DATABASE__URL")
BENCH_DB_URL=${SERVER_URL%/postgres}/$DATABASE

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
  local deadline=$((SECONDS + 30))
  until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/readyz"; do
    ((SECONDS < deadline)) || {
      tail -20 "$RUN/$name.log" >&2
      die "$name is not ready on port $port"
    }
    sleep 0.3
  done
  log "$name ready on :$port (pid ${PIDS[$name]})"
}

rss_mb() { awk '{printf "%.0f", $1 / 1024}' < <(ps -o rss= -p "$1"); }

bench() { "$BIN/catalog-bench" --threads "$CLIENT_THREADS" -q "$@"; }

# median_of_3 FILE ARGS...: runs `bench load ARGS --json FILE.<n>` three times
# and keeps the median run (by throughput) as FILE, with every run's rate.
median_of_3() {
  local file=$1
  shift
  local n
  for n in 1 2 3; do
    bench load "$@" --json "$file.$n" | grep -E '^  (reads|total) +[0-9]' || true
  done
  python3 - "$file" <<'PY'
import json, sys
out = sys.argv[1]
runs = [json.load(open(f"{out}.{n}")) for n in (1, 2, 3)]
runs.sort(key=lambda r: r["throughput_rps"])
median = runs[1]
median["runs_rps"] = [r["throughput_rps"] for r in runs]
json.dump(median, open(out, "w"), indent=2)
PY
  rm -f "$file".[123]
}

common=(-c "$CONNECTIONS" -d "$DURATION" --warmup "$WARMUP")

step "backing services"
scripts/services.sh --owner bench.sh

if [[ $BUILD == yes ]]; then
  step "cargo build --release --bins"
  cargo build --release --bins
fi

step "a fresh database ($DATABASE) and namespace ($NAMESPACE)"
if have psql; then
  psql -X -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" ||
    die "cannot drop $DATABASE"
fi
if have redis-cli; then
  redis-cli --scan --pattern "$NAMESPACE:*" | xargs -r -n 500 redis-cli del >/dev/null
fi

step "services: write-api, invalidator, read-api x4"
start write-api write-api "$WRITE_PORT"
start invalidator invalidator "$INVALIDATOR_PORT"
start read-a read-api "$READ_A"
start read-b read-api "$READ_B"
start read-l2 read-api "$READ_L2" CATALOG__CACHE__L1_CAPACITY=0
start read-nocache read-api "$READ_NOCACHE" CATALOG__CACHE__ENABLED=false

step "seed $PRODUCTS products"
bench seed --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" --products "$PRODUCTS" \
  --ids-out .bench/ids.txt --json "$OUT/seed.json"
HOT=$(head -1 .bench/ids.txt)

step "1. nginx ceiling"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $NGINX ]]; then
  if [[ $(id -u) == 0 ]] && have apt-get; then
    apt-get install -y nginx-light >/dev/null || apt-get install -y nginx >/dev/null
  else
    die "nginx is not installed (apt-get install -y nginx-light)"
  fi
fi
NGINX_DIR=$CATALOG_ROOT/.bench/nginx
mkdir -p "$NGINX_DIR/root/products" "$NGINX_DIR/tmp"
curl -fsS "http://127.0.0.1:$READ_A/products/$HOT" >"$NGINX_DIR/root/products/$HOT"
cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $NGINX_DIR/tmp;
  proxy_temp_path $NGINX_DIR/tmp;
  fastcgi_temp_path $NGINX_DIR/tmp;
  uwsgi_temp_path $NGINX_DIR/tmp;
  scgi_temp_path $NGINX_DIR/tmp;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { root $NGINX_DIR/root; default_type application/json; }
  }
}
EOF
setsid "$NGINX" -c "$NGINX_DIR/nginx.conf" &
PIDS[nginx]=$!
sleep 1
median_of_3 "$OUT/1-nginx.json" --url "http://127.0.0.1:$NGINX_PORT" --dist hot --ids .bench/ids.txt \
  --no-metrics "${common[@]}" --label "nginx static file"
kill -TERM "${PIDS[nginx]}"
unset "PIDS[nginx]"

step "2. read-api L1 hit"
median_of_3 "$OUT/2-l1.json" --url "http://127.0.0.1:$READ_A" --dist hot "${common[@]}" \
  --label "read-api L1 hit"

step "3. read-api L2 hit (L1 disabled)"
median_of_3 "$OUT/3-l2.json" --url "http://127.0.0.1:$READ_L2" --dist hot "${common[@]}" \
  --label "read-api L2 hit"

step "4. read-api with caching off"
median_of_3 "$OUT/4-nocache.json" --url "http://127.0.0.1:$READ_NOCACHE" --dist hot "${common[@]}" \
  --label "read-api, no cache"

step "warm: every product once on read-api A and B"
bench warm --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --ids .bench/ids.txt
L1_AFTER_WARM=$(curl -fsS "http://127.0.0.1:$READ_A/metrics" | awk '/^cache_l1_entries /{print $2}')
RSS_AFTER_WARM=$(rss_mb "${PIDS[read-a]}")
log "read-api A after warming: ${L1_AFTER_WARM:-?} L1 entries, RSS $RSS_AFTER_WARM MB"

step "5. Zipf(1.0), 1 % writes, both instances"
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

step "5e. Zipf read-only (the read path alone)"
bench load --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --dist zipf --zipf-s 1.0 \
  "${common[@]}" --label "Zipf 1.0, read-only" --json "$OUT/5e-zipf-readonly.json"

fresh=(--url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B"
  --write-url "http://127.0.0.1:$WRITE_PORT" --token "$TOKEN" --write-rate 20 -d "$DURATION" --products 50)
background=(--background-connections "$CONNECTIONS" --background-dist zipf --background-write-ratio 0.01)
step "6a. freshness, no other load"
bench freshness "${fresh[@]}" --label "freshness, unloaded" --json "$OUT/6a-freshness-idle.json"
step "6b. freshness under the 5b load ($RATE req/s, 1 % writes)"
bench freshness "${fresh[@]}" "${background[@]}" --background-rate "$RATE" \
  --label "freshness at 70% load" --json "$OUT/6-freshness.json"
step "6c. freshness under the saturating scenario-5 load (closed loop)"
bench freshness "${fresh[@]}" "${background[@]}" \
  --label "freshness at saturation" --json "$OUT/6c-freshness-saturated.json"

step "5d. Zipf in evict mode (invalidator and read-api A/B restarted), for comparison"
for name in invalidator read-a read-b; do
  kill -TERM "${PIDS[$name]}"
  wait "${PIDS[$name]}" 2>/dev/null || true
done
MODE=evict
start invalidator invalidator "$INVALIDATOR_PORT"
start read-a read-api "$READ_A"
start read-b read-api "$READ_B"
bench warm --url "http://127.0.0.1:$READ_A" --url "http://127.0.0.1:$READ_B" --ids .bench/ids.txt
bench load "${zipf[@]}" "${common[@]}" --label "Zipf 1.0, 1% writes, evict mode" --json "$OUT/5d-zipf-evict.json"

step "resident memory"
{
  echo "read-a-after-warm $RSS_AFTER_WARM"
  echo "l1-entries-after-warm ${L1_AFTER_WARM:-0}"
  for name in write-api invalidator read-a read-b read-l2 read-nocache; do
    echo "$name $(rss_mb "${PIDS[$name]}")"
  done
} >"$OUT/rss.txt"
L1_ENTRIES=$(curl -fsS "http://127.0.0.1:$READ_A/metrics" | awk '/^cache_l1_entries /{print $2}')
echo "l1-entries-read-a ${L1_ENTRIES:-0}" >>"$OUT/rss.txt"
cat "$OUT/rss.txt"

step "plots"
bench plot --input "$OUT/1-nginx.json" --input "$OUT/2-l1.json" --input "$OUT/3-l2.json" \
  --input "$OUT/4-nocache.json" --input "$OUT/5-zipf.json" --input "$OUT/5b-zipf-70.json" \
  --input "$OUT/5e-zipf-readonly.json" \
  --out docs/bench/latency.svg --title "Read latency by scenario"
bench plot-freshness --input "$OUT/6a-freshness-idle.json" --input "$OUT/6-freshness.json" \
  --input "$OUT/6c-freshness-saturated.json" --out docs/bench/freshness.svg \
  --title "Freshness lag: write-api 200 to first read of the new version"

step "docs/benchmarks.md"
python3 scripts/bench_report.py --results "$OUT" --doc docs/benchmarks.md \
  --products "$PRODUCTS" --duration "$DURATION" --warmup "$WARMUP" \
  --connections "$CONNECTIONS" --client-threads "$CLIENT_THREADS" --quick "$QUICK" --mode "${BENCH_MODE:-refresh}"
log "done: docs/benchmarks.md, docs/bench/*.svg, raw results in $OUT/"
