#!/usr/bin/env bash
# Runs the whole Catalog on this machine: backing services, release build,
# write-api, invalidator and read-api, a demo catalog; stops what it started on
# Ctrl-C. See usage() below.
set -euo pipefail

LOG_TAG="run"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BINARIES=(write-api invalidator read-api) # start order: write-api applies the migrations
RUN_DIR="$CATALOG_ROOT/.run"
BIN_DIR="$(cd "$CATALOG_ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/release"
DEMO_CATALOG="$CATALOG_ROOT/scripts/demo-catalog.json"
OWNER="run.sh-$$" # tags the backing services this run starts (scripts/services.sh)
SEED=yes
BUILD=yes
TOKEN_GENERATED=no
declare -A PIDS=()

usage() {
  cat <<'EOF'
Usage: scripts/run.sh [--no-seed] [--no-build]

Makes Postgres, Redis and RabbitMQ available (scripts/services.sh), builds the
release binaries, starts write-api (it applies the migrations), invalidator and
read-api with their logs in .run/, seeds scripts/demo-catalog.json when the
catalog is empty, prints the URLs and waits. Ctrl-C stops the three binaries and
the backing services that this run started (not those already running).

  --no-seed   do not seed the demo catalog
  --no-build  reuse the release binaries in target/release
  -h, --help  this help

Without CATALOG__AUTH__ADMIN_TOKENS, a random admin token is made for the run.
Addresses: CATALOG__READ_API__BIND (127.0.0.1:8080), CATALOG__WRITE_API__BIND
(127.0.0.1:8081), CATALOG__INVALIDATOR__BIND (127.0.0.1:8082).
EOF
}

# -------------------------------------------------------------- helpers ----

# bind_of NAME: the address NAME listens on (configuration contract defaults).
bind_of() {
  case $1 in
    read-api) echo "${CATALOG__READ_API__BIND:-127.0.0.1:8080}" ;;
    write-api) echo "${CATALOG__WRITE_API__BIND:-127.0.0.1:8081}" ;;
    invalidator) echo "${CATALOG__INVALIDATOR__BIND:-127.0.0.1:8082}" ;;
  esac
}

# local_host_port NAME: the host:port to reach NAME from here (0.0.0.0 -> 127.0.0.1).
local_host_port() {
  local bind host port
  bind=$(bind_of "$1")
  port=${bind##*:}
  host=${bind%:*}
  case $host in
    "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;;
  esac
  echo "$host:$port"
}

base_url() { echo "http://$(local_host_port "$1")"; }

# port_in_use NAME: something accepts TCP connections on NAME's address.
port_in_use() {
  local hp host
  hp=$(local_host_port "$1")
  host=${hp%:*}
  host=${host#[}
  host=${host%]}
  tcp_open "$host" "${hp##*:}"
}

# is_our_binary NAME PID: PID runs the release binary NAME of this checkout.
is_our_binary() {
  local exe
  exe=$(readlink "/proc/$2/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$BIN_DIR/$1" ]]
}

# stop_pid NAME PID: SIGTERM, then SIGKILL after 15 s; reaps it if it is our child.
stop_pid() {
  local name=$1 pid=$2
  if process_alive "$pid"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 15 "$name shutdown" process_gone "$pid"; then
      warn "$name (pid $pid) ignores SIGTERM: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

show_log_tail() {
  local log_file="$RUN_DIR/$1.log"
  [[ -s $log_file ]] || return 0
  printf '[%s] last lines of %s:\n' "$LOG_TAG" "${log_file#"$CATALOG_ROOT"/}" >&2
  tail -n 30 "$log_file" | sed 's/^/    /' >&2
}

generate_token() {
  if have openssl; then
    openssl rand -hex 16
  else
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
  fi
}

# ---------------------------------------------------------------- steps ----

# A previous run.sh that did not stop cleanly may have left binaries running.
stop_previous_run() {
  local name pidfile pid
  for name in "${BINARIES[@]}"; do
    pidfile="$RUN_DIR/$name.pid"
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && is_our_binary "$name" "$pid"; then
      log "a previous run left $name running (pid $pid, from $pidfile)"
      stop_pid "$name" "$pid"
    fi
    rm -f "$pidfile"
    if port_in_use "$name"; then
      die "$(local_host_port "$name") ($name) is in use by a process that scripts/run.sh did not start (no matching pid file in .run/). Stop it, or set $(bind_var "$name")."
    fi
  done
}

bind_var() {
  case $1 in
    read-api) echo CATALOG__READ_API__BIND ;;
    write-api) echo CATALOG__WRITE_API__BIND ;;
    invalidator) echo CATALOG__INVALIDATOR__BIND ;;
  esac
}

build() {
  if [[ $BUILD == no ]]; then
    local name
    for name in "${BINARIES[@]}"; do
      [[ -x $BIN_DIR/$name ]] ||
        die "--no-build: $BIN_DIR/$name does not exist; run without --no-build"
    done
    log "--no-build: using the release binaries in $BIN_DIR"
    return 0
  fi
  log "building: cargo build --release --bins"
  cargo build --release --bins
}

admin_token() {
  if [[ -z ${CATALOG__AUTH__ADMIN_TOKENS:-} ]]; then
    CATALOG__AUTH__ADMIN_TOKENS=$(generate_token)
    export CATALOG__AUTH__ADMIN_TOKENS
    TOKEN_GENERATED=yes
    log "CATALOG__AUTH__ADMIN_TOKENS is unset: generated an admin token for this run: $CATALOG__AUTH__ADMIN_TOKENS"
  else
    log "using the admin token(s) of CATALOG__AUTH__ADMIN_TOKENS"
  fi
  ADMIN_TOKEN=${CATALOG__AUTH__ADMIN_TOKENS%%,*}
  ADMIN_TOKEN=${ADMIN_TOKEN// /}
}

# start NAME: starts the release binary NAME in the background and waits for /readyz.
start() {
  local name=$1 log_file="$RUN_DIR/$1.log"
  log "starting $name: ${BIN_DIR#"$CATALOG_ROOT"/}/$name, log in .run/$name.log"
  # Its own process group (setsid): a terminal's Ctrl-C reaches only this
  # script, which then stops the binaries in order (read-api first).
  setsid "$BIN_DIR/$name" </dev/null >"$log_file" 2>&1 &
  PIDS[$name]=$!
  echo "$!" >"$RUN_DIR/$name.pid"

  local url pid=$! deadline=$((SECONDS + 30))
  url="$(base_url "$name")/readyz"
  log "waiting for $url"
  until curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; do
    if ! process_alive "$pid"; then
      local status=0
      wait "$pid" || status=$?
      unset "PIDS[$name]"
      show_log_tail "$name"
      die "$name exited with status $status before it was ready"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$name"
      die "$name is not ready after 30 s ($url)"
    fi
    sleep 0.5
  done
  log "$name is ready (pid $pid)"
}

seed_if_empty() {
  if [[ $SEED == no ]]; then
    log "--no-seed: not seeding the demo catalog"
    return 0
  fi
  local body read_url write_url
  read_url=$(base_url read-api)
  write_url=$(base_url write-api)
  body=$(curl -fsS -m 10 "$read_url/products?limit=1") || die "cannot list products at $read_url/products"
  if [[ ! $body =~ \"items\"[[:space:]]*:[[:space:]]*\[[[:space:]]*\] ]]; then
    log "the catalog has products: not seeding"
    return 0
  fi
  local count status response="$RUN_DIR/seed-response.json"
  count=$(grep -c '"sku"' "$DEMO_CATALOG")
  log "the catalog is empty: seeding $count demo products (POST $write_url/products/bulk with scripts/demo-catalog.json)"
  status=$(curl -sS -m 60 -o "$response" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data-binary "@$DEMO_CATALOG" "$write_url/products/bulk") || status="no answer"
  if [[ $status != 201 ]]; then
    die "seeding failed: HTTP $status: $(head -c 2000 "$response" 2>/dev/null)"
  fi
  log "seeded $count products"
}

print_urls() {
  local read_url write_url token_shown
  read_url=$(base_url read-api)
  write_url=$(base_url write-api)
  if [[ $TOKEN_GENERATED == yes ]]; then
    token_shown=$ADMIN_TOKEN
  else
    token_shown='<a token of CATALOG__AUTH__ADMIN_TOKENS>'
  fi
  cat <<EOF

Catalog is running (logs in .run/):
  read-api     $read_url          storefront reads
  write-api    $write_url          admin writes, admin token: $token_shown
  invalidator  $(base_url invalidator)/metrics  health and metrics
  OpenAPI      $read_url/openapi.json  and  $write_url/openapi.json

Try:
  curl -s '$read_url/products?category=laptops&limit=3'
  curl -si $read_url/products/1
  curl -s '$read_url/products/search?q=wireless+headphones'
  curl -s -X PATCH $write_url/products/1 -H 'Authorization: Bearer $token_shown' \\
       -H 'Content-Type: application/json' -d '{"price_cents": 119900}'

Press Ctrl-C to stop.
EOF
}

# Waits until Ctrl-C/TERM (handled by the traps) or until a binary dies.
wait_for_exit() {
  local name pid status
  while true; do
    for name in "${!PIDS[@]}"; do
      pid=${PIDS[$name]}
      if ! process_alive "$pid"; then
        status=0
        wait "$pid" || status=$?
        unset "PIDS[$name]"
        show_log_tail "$name"
        die "$name exited unexpectedly with status $status"
      fi
    done
    sleep 1
  done
}

# Runs on every exit: stops the binaries this run started, newest first, then
# the backing services that this run's services.sh started.
cleanup() {
  local status=$?
  # Finish the clean-up whatever happens: a second Ctrl-C, or a closed stdout
  # (`scripts/run.sh | tee run.log` loses tee on Ctrl-C) must not cut it short.
  set +e
  trap '' INT TERM PIPE
  echo
  log "shutting down"
  local i name
  for ((i = ${#BINARIES[@]} - 1; i >= 0; i--)); do
    name=${BINARIES[i]}
    if [[ -n ${PIDS[$name]:-} ]]; then
      stop_pid "$name" "${PIDS[$name]}"
      rm -f "$RUN_DIR/$name.pid"
    fi
  done
  if [[ ${SERVICES_CALLED:-no} == yes ]]; then
    "$CATALOG_ROOT/scripts/services.sh" stop --owner "$OWNER" || warn "could not stop the backing services"
  fi
  log "stopped"
  exit "$status"
}

# ----------------------------------------------------------------- main ----

main() {
  while (($# > 0)); do
    case $1 in
      --no-seed) SEED=no ;;
      --no-build) BUILD=no ;;
      -h | --help)
        usage
        return 0
        ;;
      *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
  done
  cd "$CATALOG_ROOT"
  have curl || die "curl is not installed (apt-get install -y curl)"
  [[ $BUILD == no ]] || have cargo || die "cargo is not installed"
  mkdir -p "$RUN_DIR"

  stop_previous_run
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  SERVICES_CALLED=yes
  scripts/services.sh --owner "$OWNER"
  build
  admin_token
  local name
  for name in "${BINARIES[@]}"; do
    start "$name"
  done
  seed_if_empty
  print_urls
  wait_for_exit
}

main "$@"
