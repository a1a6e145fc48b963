#!/usr/bin/env bash
# Fuzzes both APIs with schemathesis against their own /openapi.json: the
# documents must say exactly what the servers accept. See usage() below.
set -euo pipefail

LOG_TAG="fuzz"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BINARIES=(write-api invalidator read-api) # start order: write-api applies the migrations
TOOLS=""
# The cargo profile to build and run: dev (target/debug), what the test
# suite builds, unless CATALOG_CARGO_PROFILE names another.
PROFILE=${CATALOG_CARGO_PROFILE:-dev}
PROFILE_DIR=$PROFILE
[[ $PROFILE != dev ]] || PROFILE_DIR=debug
BIN_DIR="$(cd "$CATALOG_ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/$PROFILE_DIR"
# Examples per operation and phase: enough to cover every parameter's edges
# (the coverage phase adds its own boundary cases on top), small enough that
# both services are fuzzed in about a minute on two cores.
MAX_EXAMPLES=${CATALOG_FUZZ_MAX_EXAMPLES:-40}
# A fixed seed: a failure seen in CI is the same failure on a laptop. Set
# CATALOG_FUZZ_SEED to explore other inputs.
SEED=${CATALOG_FUZZ_SEED:-20261129}
declare -A PIDS=() PORTS=()
RUN_ID="fuzz_$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
# test_ / catalog_test_ prefixes: scripts/test.sh's clean-up removes what a
# killed run leaves behind (databases, Redis keys, queues and exchanges).
NAMESPACE="test_$RUN_ID"
DATABASE="catalog_test_$RUN_ID"
LOG_DIR="$CATALOG_ROOT/.run/fuzz"
TOKEN="fuzz-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"

usage() {
  cat <<'EOF'
Usage: scripts/fuzz.sh

Runs schemathesis (the version pinned in scripts/requirements-tools.txt, in
the virtual environment .venv-tools/, created or updated from PyPI when the
requirements change) against write-api and read-api, each started from the
debug build (cargo build --bins: quick after the test suite's build) on
a free port with a fresh database and namespace, the invalidator beside them.
Every check (--checks all), every phase (examples, coverage, fuzzing and the
stateful create -> get -> patch -> delete links of write-api's document).
Stops them and drops the database at the end, whatever happens.

Needs Postgres, Redis and RabbitMQ at CATALOG__DATABASE__URL,
CATALOG__REDIS__URL and CATALOG__AMQP__URL (scripts/services.sh makes them
available), psql and curl.

  CATALOG_CARGO_PROFILE      cargo profile to build and run (default dev)
  CATALOG_FUZZ_MAX_EXAMPLES  examples per operation (default 40)
  CATALOG_FUZZ_SEED          schemathesis seed (default fixed, for reproducible runs)

Logs of the services and schemathesis reports: .run/fuzz/.
EOF
}

# ---------------------------------------------------------------- tools ----

# free_port: a port nothing listens on now (the kernel's choice).
free_port() {
  "$TOOLS/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ------------------------------------------------------------- services ----

create_database() {
  SERVER_URL=$(postgres_server_url "$CATALOG__DATABASE__URL")
  parse_url "$CATALOG__DATABASE__URL" 5432 || die "cannot parse $CATALOG__DATABASE__URL"
  DATABASE_URL="$URL_AUTHORITY/$DATABASE$URL_QUERY"
  log "database: creating $DATABASE"
  psql -X -w -q -c "CREATE DATABASE \"$DATABASE\"" "$SERVER_URL"
  DATABASE_CREATED=yes
}

# start NAME: starts the debug binary NAME on a free port and waits for /readyz.
start() {
  local name=$1 port bind_var
  port=$(free_port)
  PORTS[$name]=$port
  bind_var="CATALOG__$(echo "${name//-/_}" | tr '[:lower:]' '[:upper:]')__BIND"
  log "starting $name on 127.0.0.1:$port (log: .run/fuzz/$name.log)"
  env "$bind_var=127.0.0.1:$port" \
    CATALOG__DATABASE__URL="$DATABASE_URL" \
    CATALOG__NAMESPACE="$NAMESPACE" \
    CATALOG__AUTH__ADMIN_TOKENS="$TOKEN" \
    "$BIN_DIR/$name" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
  local url="http://127.0.0.1:$port/readyz" deadline=$((SECONDS + 30))
  until curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; do
    if ! process_alive "${PIDS[$name]}"; then
      tail -n 20 "$LOG_DIR/$name.log" >&2
      die "$name exited before it was ready"
    fi
    ((SECONDS < deadline)) || die "$name is not ready after 30 s ($url)"
    sleep 0.3
  done
}

# The namespace's durable queues and exchanges (the read-api's own queue is
# auto-deleted), where rabbitmqctl can reach a local broker; otherwise
# scripts/test.sh's clean-up removes them (test_ prefix).
cleanup_rabbitmq() {
  have rabbitmqctl || return 0
  parse_url "$CATALOG__AMQP__URL" 5672 && is_local_host "$URL_HOST" || return 0
  local vhost queue
  vhost=$(percent_decode "${URL_PATH#/}")
  vhost=${vhost:-/}
  [[ $vhost =~ ^[A-Za-z0-9/._-]+$ ]] || return 0
  for queue in "$NAMESPACE.invalidator" "$NAMESPACE.invalidator.dlq"; do
    rabbitmqctl -q delete_queue -p "$vhost" "$queue" >/dev/null 2>&1 || true
  done
  # rabbitmqctl has no delete_exchange (see scripts/test.sh).
  rabbitmqctl -q eval "[catch rabbit_exchange:delete(rabbit_misc:r(<<\"$vhost\">>, exchange, N), true, <<\"catalog-fuzz-cleanup\">>) || N <- [<<\"$NAMESPACE.events\">>, <<\"$NAMESPACE.dlx\">>]]." >/dev/null 2>&1 || true
}

cleanup() {
  local status=$?
  set +e
  trap '' INT TERM
  local i name pid
  for ((i = ${#BINARIES[@]} - 1; i >= 0; i--)); do
    name=${BINARIES[i]}
    pid=${PIDS[$name]:-}
    [[ -n $pid ]] || continue
    kill -TERM "$pid" 2>/dev/null
    wait_until 15 "$name shutdown" process_gone "$pid" || kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ ${DATABASE_CREATED:-no} == yes ]]; then
    # FORCE: a connection the services left behind must not keep it.
    psql -X -w -q -c "DROP DATABASE IF EXISTS \"$DATABASE\" WITH (FORCE)" "$SERVER_URL" ||
      warn "could not drop $DATABASE (scripts/test.sh drops catalog_test_* leftovers)"
  fi
  cleanup_rabbitmq
  if have redis-cli; then
    local url
    url=$(redis_cli_url "$CATALOG__REDIS__URL")
    redis-cli --no-auth-warning -u "$url" --scan --pattern "$NAMESPACE*" |
      xargs -r -d '\n' -n 500 redis-cli --no-auth-warning -u "$url" del >/dev/null
  fi
  exit "$status"
}

# ---------------------------------------------------------------- fuzz ----

# fuzz NAME [SCHEMATHESIS ARGS...]: runs schemathesis against NAME's document;
# prints its summary lines (and its whole output when it fails).
fuzz() {
  local name=$1
  shift
  local base="http://127.0.0.1:${PORTS[$name]}" out="$LOG_DIR/schemathesis-$name.txt" status=0
  log "schemathesis against $name: $base/openapi.json"
  # --workers 1: with two, CPython 3.11 before 3.11.8 (this machine's is
  # 3.11.7) fails in ast.parse, which Hypothesis calls to describe a filter,
  # when two threads parse at once ("AST constructor recursion depth
  # mismatch", CPython gh-106905). One worker leaves the other core to the
  # services anyway.
  # From the log directory: schemathesis keeps a cache (.schemathesis/) in
  # the directory it runs in.
  (cd "$LOG_DIR" && "$TOOLS/schemathesis" --config-file "$CATALOG_ROOT/scripts/schemathesis.toml" \
    run "$base/openapi.json" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --generation-database none \
    --no-color \
    "$@") >"$out" 2>&1 || status=$?
  if ((status != 0)); then
    # What went wrong, each line cut short: a runtime error's traceback
    # quotes whole source files.
    sed -n '/^=* \(ERRORS\|FAILURES\|WARNINGS\) =*$/,/^=* SUMMARY =*$/p' "$out" | cut -c1-400
    warn "schemathesis found problems in $name (exit $status); all its output is in ${out#"$CATALOG_ROOT"/}"
    FAILED+=("$name")
  fi
  # The summary: test phases, operations, test cases, failures, the verdict.
  sed -n '/^=* SUMMARY =*$/,$p' "$out" | sed "s/^/[$LOG_TAG] $name: /"
}

main() {
  case ${1:-} in
    -h | --help)
      usage
      return 0
      ;;
  esac
  cd "$CATALOG_ROOT"
  have curl || die "curl is not installed"
  have psql || die "psql is not installed (apt-get install -y postgresql-client)"
  mkdir -p "$LOG_DIR"
  TOOLS=$(tools_venv)
  log "building the binaries: cargo build --profile $PROFILE --bins -p write-api -p invalidator -p read-api"
  cargo build --quiet --profile "$PROFILE" --bins -p write-api -p invalidator -p read-api

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  create_database
  local name
  for name in "${BINARIES[@]}"; do
    start "$name"
  done

  FAILED=()
  # write-api first: what it creates gives read-api's operations products to find.
  fuzz write-api -H "Authorization: Bearer $TOKEN"
  fuzz read-api
  if ((${#FAILED[@]} > 0)); then
    die "schemathesis failed against: ${FAILED[*]}"
  fi
  log "both documents hold: schemathesis found no failure"
}

main "$@"
