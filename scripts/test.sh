#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): backing services, clean-up of what
# earlier test runs left behind, rustfmt, clippy, then the test suite.
set -euo pipefail

LOG_TAG="test"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # rabbitmqctl

usage() {
  cat <<'EOF'
Usage: scripts/test.sh [TEST RUNNER ARGS...]

Makes Postgres, Redis and RabbitMQ available, and their server packages
installed for the test engines (scripts/services.sh --engines), removes the
leftovers of earlier test runs (databases catalog_test_*, RabbitMQ queues and
exchanges test_*, Redis keys test_*; the test engines' redis-server, Postgres
and RabbitMQ processes and $TMPDIR/catalog-<kind>-* directories over an hour
old), then runs
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  scripts/unused-deps.py        (every declared dependency is used)
  scripts/check-deploy.sh       (compose files, Kubernetes manifests and the
                                 HAProxy configuration, against their schemas;
                                 its tools go into .venv-tools/)
  cargo nextest run --workspace --no-fail-fast ARGS   (cargo test ... without nextest)
  scripts/fuzz.sh               (schemathesis against both services' OpenAPI
                                 documents; skipped when ARGS select tests)

ARGS go to the test runner, e.g.  scripts/test.sh -E 'test(fence)'
The servers are those of CATALOG__DATABASE__URL, CATALOG__REDIS__URL and
CATALOG__AMQP__URL; the tests get them as CATALOG_TEST_DATABASE_URL (the
`postgres` database of that server), CATALOG_TEST_REDIS_URL, CATALOG_TEST_AMQP_URL.
The Redis Cluster tests start three redis-server nodes of their own, or use
the cluster whose seed URLs CATALOG_TEST_REDIS_CLUSTER_URL lists. The engine
tests of test-support start private redis-server, Sentinel, Postgres
(initdb, pg_ctl, pg_basebackup; as the postgres OS user when run as root) and
RabbitMQ processes on free ports.
EOF
}

STEP=""

step() {
  STEP=$1
  printf '\n[%s] ==> %s\n' "$LOG_TAG" "$STEP"
}

on_exit() {
  local status=$? elapsed=$SECONDS
  local took
  took=$(printf '%dm%02ds' $((elapsed / 60)) $((elapsed % 60)))
  if ((status == 0)); then
    log "all checks passed; total time $took"
  else
    log "FAILED at step: ${STEP:-start} (exit $status); total time $took"
  fi
}

# ------------------------------------------------------------ clean-up ----

# Databases catalog_test_*: one per test; a test that crashed leaves its own.
# DROP without FORCE, so that a database still in use (a test run going on at
# the same time) is kept.
cleanup_postgres() {
  if ! have psql; then
    log "psql is not installed: not dropping leftover test databases"
    return 0
  fi
  local url=$CATALOG_TEST_DATABASE_URL names
  if ! names=$(psql -X -w -At -c "select datname from pg_database where starts_with(datname, 'catalog_test_')" "$url"); then
    warn "cannot list databases: not dropping leftover test databases"
    return 0
  fi
  local db dropped=0 kept=0
  for db in $names; do
    if [[ $db =~ ^catalog_test_[A-Za-z0-9_]+$ ]] &&
      psql -X -w -q -c "DROP DATABASE IF EXISTS \"$db\"" "$url" 2>/dev/null; then
      dropped=$((dropped + 1))
    else
      kept=$((kept + 1))
    fi
  done
  if ((kept > 0)); then
    log "Postgres: dropped $dropped leftover test database(s), kept $kept (in use)"
  else
    log "Postgres: dropped $dropped leftover test database(s)"
  fi
}

# Queues and exchanges test_*: each test's namespace is test_<random>.
cleanup_rabbitmq() {
  parse_url "$CATALOG_TEST_AMQP_URL" 5672 || die "cannot parse $CATALOG_TEST_AMQP_URL"
  local vhost
  vhost=$(percent_decode "${URL_PATH#/}")
  vhost=${vhost:-/}
  if ! have rabbitmqctl || ! is_local_host "$URL_HOST"; then
    log "RabbitMQ: rabbitmqctl is not installed or the broker is not local: not deleting leftover test queues and exchanges"
    return 0
  fi
  if [[ ! $vhost =~ ^[A-Za-z0-9/._-]+$ ]]; then
    log "RabbitMQ: unusual vhost name '$vhost': not deleting leftover test queues and exchanges"
    return 0
  fi
  local safe='^test_[A-Za-z0-9._:-]+$' names name

  if ! names=$(rabbitmqctl -q list_queues -p "$vhost" --no-table-headers name 2>/dev/null); then
    log "RabbitMQ: rabbitmqctl cannot reach the node (not root?): not deleting leftover test queues and exchanges"
    return 0
  fi
  # --if-unused: a queue with a consumer belongs to a test that is running.
  local deleted=0
  for name in $names; do
    [[ $name =~ $safe ]] || continue
    if rabbitmqctl -q delete_queue -p "$vhost" --if-unused "$name" >/dev/null 2>&1; then
      deleted=$((deleted + 1))
    fi
  done
  log "RabbitMQ: deleted $deleted leftover test queue(s)"

  # rabbitmqctl has no delete_exchange: one `eval` deletes them all, each only
  # if unused (no bindings left), and answers {Deleted, Kept}.
  names=$(rabbitmqctl -q list_exchanges -p "$vhost" --no-table-headers name 2>/dev/null) || names=""
  local list=()
  for name in $names; do
    if [[ $name =~ $safe ]]; then
      list+=("<<\"$name\">>")
    fi
  done
  if ((${#list[@]} == 0)); then
    log "RabbitMQ: no leftover test exchanges"
    return 0
  fi
  local joined expr answer
  joined=$(
    IFS=,
    echo "${list[*]}"
  )
  expr="Rs = [catch rabbit_exchange:delete(rabbit_misc:r(<<\"$vhost\">>, exchange, N), true, <<\"catalog-test-cleanup\">>) || N <- [$joined]],
        {length([ok || ok <- Rs]), length(Rs)}."
  answer=$(rabbitmqctl -q eval "$expr" 2>&1) || answer="failed: $answer"
  if [[ $answer =~ ^\{([0-9]+),([0-9]+)\}$ ]]; then
    log "RabbitMQ: deleted ${BASH_REMATCH[1]} of ${BASH_REMATCH[2]} leftover test exchange(s) (an exchange still bound is kept)"
  else
    warn "RabbitMQ: could not delete leftover test exchanges: $answer"
  fi
}

# Keys test_*: short-lived, but a crashed test may leave some.
cleanup_redis() {
  if ! have redis-cli; then
    log "redis-cli is not installed: not deleting leftover test keys"
    return 0
  fi
  local url count
  url=$(redis_cli_url "$CATALOG_TEST_REDIS_URL")
  count=$(redis-cli --no-auth-warning -u "$url" --scan --pattern 'test_*' | wc -l)
  if ((count > 0)); then
    redis-cli --no-auth-warning -u "$url" --scan --pattern 'test_*' |
      xargs -r -d '\n' -n 500 redis-cli --no-auth-warning -u "$url" del >/dev/null
  fi
  log "Redis: deleted $count leftover test key(s)"
}

# older_than_an_hour PID...: those of the PIDs whose process has run for over
# an hour. A test run going on at the same time keeps its own processes.
older_than_an_hour() {
  (($# > 0)) || return 0
  local pid age
  while read -r pid age; do
    ((age > 3600)) && echo "$pid"
  done < <(ps -o pid=,etimes= -p "$(IFS=,; echo "$*")")
  return 0
}

# Redis test servers a killed test run left running: Redis Cluster nodes,
# RedisServer and RedisHa servers and Sentinels. redis-server rewrites its
# command line, so they are known by their working directory, the fixture's
# catalog-{cluster,redis,sentinel}-* directory (the `dir` they are given).
cleanup_redis_clusters() {
  local pids=() pid
  for pid in $(pgrep -x redis-server || true); do
    if [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) =~ /catalog-(cluster|redis|sentinel)- ]]; then
      pids+=("$pid")
    fi
  done
  mapfile -t pids < <(older_than_an_hour "${pids[@]}")
  if ((${#pids[@]} > 0)); then
    kill "${pids[@]}" 2>/dev/null || true
  fi
  log "Redis test servers: stopped ${#pids[@]} leftover test node(s)"
}

# Postgres and RabbitMQ servers of the PgPair and RabbitCluster fixtures that a
# killed test run left running (their command lines name their catalog-pg-* or
# catalog-rabbit-* directory), then the fixtures' directories over an hour old.
cleanup_engine_fixtures() {
  local pg=() rabbit=()
  # The postmaster only: SIGQUIT is Postgres' immediate shutdown, children too.
  # shellcheck disable=SC2046 # one PID per word
  mapfile -t pg < <(older_than_an_hour $(pgrep -f '/postgres -D [^ ]*/catalog-pg-' || true))
  if ((${#pg[@]} > 0)); then
    kill -QUIT "${pg[@]}" 2>/dev/null || true
  fi
  # The Erlang VM of each node; its rabbitmq-server script exits with it.
  # shellcheck disable=SC2046 # one PID per word
  mapfile -t rabbit < <(older_than_an_hour $(pgrep -f 'beam.*catalog-rabbit-' || true))
  if ((${#rabbit[@]} > 0)); then
    kill -KILL "${rabbit[@]}" 2>/dev/null || true
  fi
  local tmp=${TMPDIR:-/tmp} dirs
  dirs=$(find "$tmp" -maxdepth 1 -type d -mmin +60 -regextype posix-extended \
    -regex '.*/catalog-(cluster|redis|sentinel|pg|rabbit|certs)-[0-9a-f-]+' \
    -print -exec rm -rf {} + | wc -l)
  log "engine fixtures: stopped ${#pg[@]} Postgres and ${#rabbit[@]} RabbitMQ leftover server(s), removed $dirs directory(ies) under $tmp"
}

# ----------------------------------------------------------------- main ----

main() {
  case ${1:-} in
    -h | --help)
      usage
      return 0
      ;;
  esac
  cd "$CATALOG_ROOT"
  trap on_exit EXIT
  have cargo || die "cargo is not installed"

  step "backing services: scripts/services.sh --engines"
  scripts/services.sh --owner test.sh --engines

  CATALOG_TEST_DATABASE_URL=$(postgres_server_url "$CATALOG__DATABASE__URL")
  CATALOG_TEST_REDIS_URL=$CATALOG__REDIS__URL
  CATALOG_TEST_AMQP_URL=$CATALOG__AMQP__URL
  export CATALOG_TEST_DATABASE_URL CATALOG_TEST_REDIS_URL CATALOG_TEST_AMQP_URL
  log "CATALOG_TEST_DATABASE_URL=$CATALOG_TEST_DATABASE_URL"
  log "CATALOG_TEST_REDIS_URL=$CATALOG_TEST_REDIS_URL"
  log "CATALOG_TEST_AMQP_URL=$CATALOG_TEST_AMQP_URL"

  step "clean-up of earlier test runs"
  cleanup_postgres
  cleanup_rabbitmq
  cleanup_redis
  cleanup_redis_clusters
  cleanup_engine_fixtures

  step "cargo fmt --all -- --check"
  cargo fmt --all -- --check

  step "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings

  step "unused dependencies: scripts/unused-deps.py"
  python3 scripts/unused-deps.py

  step "deployment files: scripts/check-deploy.sh"
  scripts/check-deploy.sh

  if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    step "cargo test --workspace --no-fail-fast $* (cargo-nextest is not installed)"
    cargo test --workspace --no-fail-fast "$@"
  fi

  # A run that selects tests is someone iterating on them: the fuzzing is
  # the whole suite's last step, not theirs.
  if (($# == 0)); then
    step "fuzzing both APIs against their OpenAPI documents: scripts/fuzz.sh"
    scripts/fuzz.sh
  fi
}

main "$@"
