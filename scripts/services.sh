#!/usr/bin/env bash
# Makes Postgres, Redis and RabbitMQ reachable at the configured URLs, and stops
# again exactly what it started. See usage() below.
set -euo pipefail

LOG_TAG=services
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# pg_ctlcluster, rabbitmq-server and rabbitmqctl live in sbin on Debian.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

SERVICES=(postgres redis rabbitmq)
COMPOSE_FILE="$CATALOG_ROOT/docker-compose.yml"
OWNER=manual

usage() {
  cat <<'EOF'
Usage: scripts/services.sh [up|stop] [--owner NAME] [--engines]

  up    (default) make Postgres, Redis and RabbitMQ reachable at
        CATALOG__DATABASE__URL, CATALOG__REDIS__URL and CATALOG__AMQP__URL.
        For each service, the first strategy that applies:
          1. it already answers at the configured host:port -> use it;
          2. a Docker engine works -> docker compose up -d --wait <services>;
          3. Debian packages: installed with apt-get when running as root,
             then started on this machine (Postgres cluster via pg_ctlcluster,
             a private Redis with its files in .services/, rabbitmq-server).
        What it starts is recorded in .services/started under NAME.
  stop  stop what `up` recorded (with --owner, only NAME's entries) and
        nothing else.

  --owner NAME  who starts or stops (default: manual); run.sh passes its own
                name so that it stops on exit only what it started.
  --engines     with up: also make sure the server packages are installed
                even where the services answer from elsewhere (a container):
                the engine tests of crates/test-support run private
                redis-server, Postgres and RabbitMQ processes from them.
EOF
}

# --------------------------------------------------------------- config ----

load_urls() {
  parse_url "$CATALOG__DATABASE__URL" 5432 || die "CATALOG__DATABASE__URL is not a URL: $CATALOG__DATABASE__URL"
  PG_HOST=${URL_HOST:-127.0.0.1} PG_PORT=$URL_PORT PG_USER=${URL_USER:-postgres} PG_PASSWORD=$URL_PASSWORD
  parse_url "$CATALOG__REDIS__URL" 6379 || die "CATALOG__REDIS__URL is not a URL: $CATALOG__REDIS__URL"
  REDIS_HOST=${URL_HOST:-127.0.0.1} REDIS_PORT=$URL_PORT REDIS_PASSWORD=$(percent_decode "$URL_PASSWORD")
  parse_url "$CATALOG__AMQP__URL" 5672 || die "CATALOG__AMQP__URL is not a URL: $CATALOG__AMQP__URL"
  AMQP_HOST=${URL_HOST:-127.0.0.1} AMQP_PORT=$URL_PORT
}

host_of() {
  case $1 in
    postgres) echo "$PG_HOST" ;;
    redis) echo "$REDIS_HOST" ;;
    rabbitmq) echo "$AMQP_HOST" ;;
  esac
}

port_of() {
  case $1 in
    postgres) echo "$PG_PORT" ;;
    redis) echo "$REDIS_PORT" ;;
    rabbitmq) echo "$AMQP_PORT" ;;
  esac
}

# label SERVICE: "Postgres (127.0.0.1:5432)" and so on, for messages.
label() {
  case $1 in
    postgres) echo "Postgres ($PG_HOST:$PG_PORT)" ;;
    redis) echo "Redis ($REDIS_HOST:$REDIS_PORT)" ;;
    rabbitmq) echo "RabbitMQ ($AMQP_HOST:$AMQP_PORT)" ;;
  esac
}

url_var() {
  case $1 in
    postgres) echo CATALOG__DATABASE__URL ;;
    redis) echo CATALOG__REDIS__URL ;;
    rabbitmq) echo CATALOG__AMQP__URL ;;
  esac
}

# reachable SERVICE: the protocol probe of lib.sh for that service.
reachable() {
  case $1 in
    postgres) postgres_ready "$CATALOG__DATABASE__URL" ;;
    redis) redis_ready "$CATALOG__REDIS__URL" ;;
    rabbitmq) amqp_ready "$AMQP_HOST" "$AMQP_PORT" ;;
  esac
}

# ---------------------------------------------------- strategy 2: Docker ----

docker_usable() {
  have docker && timeout 20 docker info >/dev/null 2>&1
}

start_with_docker() {
  if ! docker compose version >/dev/null 2>&1; then
    warn "the Docker engine works but the Compose v2 plugin ('docker compose') is missing"
    return 1
  fi
  # docker-compose.yml publishes the backing services on these loopback ports.
  export CATALOG_POSTGRES_PORT=$PG_PORT CATALOG_REDIS_PORT=$REDIS_PORT CATALOG_RABBITMQ_PORT=$AMQP_PORT
  local svc
  for svc in "$@"; do
    state_add "$OWNER docker $svc"
  done
  log "starting with Docker: docker compose up -d --wait $*"
  docker compose -f "$COMPOSE_FILE" up -d --wait "$@" || die "docker compose could not start $*"
  for svc in "$@"; do
    wait_until 30 "$(label "$svc")" reachable "$svc" || die "$(label "$svc") does not answer although its container is healthy"
    HOW[$svc]="started by docker compose"
  done
}

# ------------------------------------------- strategy 3: Debian packages ----

package_of() {
  case $1 in
    postgres) echo postgresql ;;
    redis) echo redis-server ;;
    rabbitmq) echo rabbitmq-server ;;
  esac
}

installed() {
  case $1 in
    postgres) have pg_ctlcluster && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null ;;
    redis) have redis-server ;;
    rabbitmq) have rabbitmq-server && have rabbitmqctl ;;
  esac
}

install_packages() {
  local svc pkgs=()
  for svc in "$@"; do
    installed "$svc" || pkgs+=("$(package_of "$svc")")
  done
  if ((${#pkgs[@]} == 0)); then
    log "Debian packages already installed for: $*"
    return 0
  fi
  have apt-get || die "not installed: ${pkgs[*]}; no Docker engine and no apt-get either: install them yourself"
  if ! is_root; then
    die "not installed: ${pkgs[*]}. Install them with:
    sudo apt-get update && sudo apt-get install -y ${pkgs[*]}
then run this script again."
  fi
  log "installing Debian packages: apt-get update && apt-get install -y ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"
}

# find_cluster PORT: sets CLUSTER_VERSION, CLUSTER_NAME, CLUSTER_STATUS of the
# Postgres cluster configured for PORT (pg_lsclusters reads /etc/postgresql).
find_cluster() {
  local ver name port status _rest
  CLUSTER_VERSION="" CLUSTER_NAME="" CLUSTER_STATUS=""
  while read -r ver name port status _rest; do
    if [[ $port == "$1" ]]; then
      CLUSTER_VERSION=$ver CLUSTER_NAME=$name CLUSTER_STATUS=$status
      return 0
    fi
  done < <(pg_lsclusters -h 2>/dev/null)
  return 1
}

start_postgres_package() {
  if ! find_cluster "$PG_PORT"; then
    if [[ -n $(pg_lsclusters -h 2>/dev/null) ]]; then
      die "no Postgres cluster is configured for port $PG_PORT; the clusters are:
$(pg_lsclusters)
Point CATALOG__DATABASE__URL at one of them, or change a cluster's port with pg_conftool VERSION NAME set port $PG_PORT."
    fi
    local version
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    is_root || die "no Postgres cluster exists; create one with: sudo pg_createcluster $version main --port $PG_PORT"
    log "no Postgres cluster exists: pg_createcluster $version main --port $PG_PORT"
    pg_createcluster "$version" main --port "$PG_PORT"
    find_cluster "$PG_PORT" || die "pg_createcluster did not create a cluster on port $PG_PORT"
  fi
  local start=(pg_ctlcluster --skip-systemctl-redirect "$CLUSTER_VERSION" "$CLUSTER_NAME" start)
  if [[ $CLUSTER_STATUS == online* ]]; then
    log "Postgres cluster $CLUSTER_VERSION/$CLUSTER_NAME is running: waiting for it to accept connections"
    if wait_until 30 "$(label postgres)" reachable postgres; then
      HOW[postgres]="already running (was starting)"
      return 0
    fi
    die "Postgres cluster $CLUSTER_VERSION/$CLUSTER_NAME is running on port $PG_PORT but does not answer at $PG_HOST; check listen_addresses in /etc/postgresql/$CLUSTER_VERSION/$CLUSTER_NAME/postgresql.conf"
  fi
  is_root || die "Postgres cluster $CLUSTER_VERSION/$CLUSTER_NAME is down; start it with: sudo ${start[*]}"
  log "starting Postgres: ${start[*]}"
  state_add "$OWNER postgres $CLUSTER_VERSION $CLUSTER_NAME"
  "${start[@]}"
  wait_until 30 "$(label postgres)" reachable postgres || die "Postgres did not come up; see /var/log/postgresql/"
  HOW[postgres]="started from Debian packages (cluster $CLUSTER_VERSION/$CLUSTER_NAME)"
}

start_redis_package() {
  # A private instance: its pid file, log and (empty) working directory are in .services/.
  local bind=$REDIS_HOST
  if [[ $bind == localhost ]]; then
    bind=127.0.0.1
  fi
  mkdir -p "$CATALOG_STATE_DIR"
  local pidfile
  pidfile=$(redis_pidfile "$REDIS_PORT")
  local cmd=(redis-server --daemonize yes --bind "$bind" --port "$REDIS_PORT" --save "" --appendonly no
    --dir "$CATALOG_STATE_DIR" --pidfile "$pidfile" --logfile "$CATALOG_STATE_DIR/redis-$REDIS_PORT.log")
  local shown
  printf -v shown '%q ' "${cmd[@]}"
  if [[ -n $REDIS_PASSWORD ]]; then
    # The password of CATALOG__REDIS__URL, so that the URL works as written.
    cmd+=(--requirepass "$REDIS_PASSWORD")
    shown+="--requirepass '***'"
  fi
  log "starting a private Redis: $shown"
  "${cmd[@]}"
  state_add "$OWNER redis $REDIS_PORT"
  wait_until 15 "$(label redis)" reachable redis || die "Redis did not come up; see $CATALOG_STATE_DIR/redis-$REDIS_PORT.log"
  HOW[redis]="started from Debian packages (private instance, pid file $pidfile)"
}

redis_pidfile() { echo "$CATALOG_STATE_DIR/redis-$1.pid"; }

rabbitmq_booted() { rabbitmqctl -q await_startup >/dev/null 2>&1; }

start_rabbitmq_package() {
  if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    # The Erlang node runs: RabbitMQ is booting, or its application was stopped.
    log "the RabbitMQ node is up but AMQP does not answer yet: waiting (rabbitmqctl await_startup)"
    wait_until 60 "$(label rabbitmq)" reachable rabbitmq ||
      die "the RabbitMQ node runs but does not answer AMQP on port $AMQP_PORT; if its application is stopped: rabbitmqctl start_app"
    HOW[rabbitmq]="already running (was booting)"
    return 0
  fi
  is_root || die "RabbitMQ is down; start it with: sudo RABBITMQ_NODE_PORT=$AMQP_PORT rabbitmq-server -detached"
  log "starting RabbitMQ: RABBITMQ_NODE_PORT=$AMQP_PORT rabbitmq-server -detached (takes a few seconds)"
  state_add "$OWNER rabbitmq $AMQP_PORT"
  RABBITMQ_NODE_PORT=$AMQP_PORT rabbitmq-server -detached
  # await_startup fails at once while the Erlang node is not up yet: retry it.
  log "waiting for RabbitMQ: rabbitmqctl await_startup"
  wait_until 90 "RabbitMQ node" rabbitmq_booted || die "RabbitMQ did not boot; see /var/log/rabbitmq/"
  wait_until 15 "$(label rabbitmq)" reachable rabbitmq || die "RabbitMQ booted but does not answer on port $AMQP_PORT"
  HOW[rabbitmq]="started from Debian packages"
}

start_with_packages() {
  if [[ " $* " == *" postgres "* ]]; then
    PG_FROM_PACKAGES=yes
  fi
  install_packages "$@"
  local svc
  for svc in "$@"; do
    # A package's install script may have started its service already.
    if reachable "$svc"; then
      log "$(label "$svc"): answers now (started by its package), using it"
      HOW[$svc]="already running (started by its Debian package)"
      continue
    fi
    "start_${svc}_package"
  done
}

# --------------------------------------------------------- Postgres login ----

# Strategy 3 only: let the URL's user log in over TCP from loopback without a
# password, by putting two trust lines first in the cluster's pg_hba.conf.
allow_trust_login() {
  local hba="/etc/postgresql/$CLUSTER_VERSION/$CLUSTER_NAME/pg_hba.conf"
  [[ -f $hba ]] || die "cannot find $hba"
  if grep -q 'catalog scripts/services.sh' "$hba"; then
    die "$hba already has the trust lines of this script, yet '$PG_USER' cannot log in"
  fi
  log "editing $hba: adding 'host all $PG_USER 127.0.0.1/32 trust' and '... ::1/128 trust' first (local development only)"
  local tmp
  tmp=$(mktemp)
  {
    echo "# Added by catalog scripts/services.sh: passwordless TCP logins from loopback for local development."
    echo "host    all    $PG_USER    127.0.0.1/32    trust"
    echo "host    all    $PG_USER    ::1/128         trust"
    echo
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba" # keeps the file's owner and mode
  rm -f "$tmp"
  log "reloading Postgres: pg_ctlcluster --skip-systemctl-redirect $CLUSTER_VERSION $CLUSTER_NAME reload"
  pg_ctlcluster --skip-systemctl-redirect "$CLUSTER_VERSION" "$CLUSTER_NAME" reload
  sleep 1
}

check_postgres_login() {
  if ! have psql; then
    log "psql is not installed: not checking that '$PG_USER' can log in"
    return 0
  fi
  local server_url err
  server_url=$(postgres_server_url "$CATALOG__DATABASE__URL")
  if err=$(postgres_login_error "$server_url"); then
    log "Postgres: '$PG_USER' can log in"
    return 0
  fi
  if [[ ${PG_FROM_PACKAGES:-} == yes && -z $PG_PASSWORD ]] && is_root && find_cluster "$PG_PORT"; then
    allow_trust_login
    if err=$(postgres_login_error "$server_url"); then
      log "Postgres: '$PG_USER' can log in"
      return 0
    fi
  fi
  die "Postgres answers but '$PG_USER' cannot log in: $err
For local development, allow it with a first line 'host all $PG_USER 127.0.0.1/32 trust' in pg_hba.conf (then reload), or put the password in CATALOG__DATABASE__URL."
}

# ----------------------------------------------------- the test engines ----

# --engines: the packages of all three servers, installed when missing (as
# root), whether or not the services were started from them.
engine_packages() {
  local svc missing=()
  for svc in "${SERVICES[@]}"; do
    installed "$svc" || missing+=("$svc")
  done
  if ((${#missing[@]} == 0)); then
    log "test engines: the server packages are installed"
  elif is_root && have apt-get; then
    install_packages "${missing[@]}"
  else
    warn "test engines: not installed: $(for svc in "${missing[@]}"; do package_of "$svc"; done | xargs); the engine tests of crates/test-support will fail"
  fi
}

# ------------------------------------------------------------------- up ----

services_up() {
  load_urls
  declare -gA HOW=()
  local svc missing=()
  for svc in "${SERVICES[@]}"; do
    if reachable "$svc"; then
      log "$(label "$svc"): answers, using it"
      HOW[$svc]="already running"
    else
      log "$(label "$svc"): does not answer"
      missing+=("$svc")
    fi
  done

  if ((${#missing[@]} > 0)); then
    for svc in "${missing[@]}"; do
      is_local_host "$(host_of "$svc")" ||
        die "$(label "$svc") does not answer and is not on this machine, so it cannot be started here; check $(url_var "$svc")"
      # Postgres may be starting up (the port opens before it accepts logins);
      # the other two answer as soon as their port is open.
      if [[ $svc != postgres ]] && tcp_open "$(host_of "$svc")" "$(port_of "$svc")"; then
        case $svc in
          redis) die "$(label redis): something listens there but does not answer PING with PONG (a Redis whose password is missing from CATALOG__REDIS__URL, or another program)" ;;
          rabbitmq) die "$(label rabbitmq): something listens there but does not answer as an AMQP 0-9-1 broker; check CATALOG__AMQP__URL" ;;
        esac
      fi
    done
    if docker_usable; then
      log "a Docker engine works: using docker compose for ${missing[*]}"
      start_with_docker "${missing[@]}" || {
        log "falling back to Debian packages"
        start_with_packages "${missing[@]}"
      }
    else
      log "no working Docker engine: using Debian packages for ${missing[*]}"
      start_with_packages "${missing[@]}"
    fi
  fi

  check_postgres_login
  if have rabbitmq-diagnostics && is_local_host "$AMQP_HOST" && is_root; then
    if rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
      log "RabbitMQ: rabbitmq-diagnostics check_running: the local node is running"
    else
      log "RabbitMQ: rabbitmq-diagnostics check_running fails (the broker answering may be a container); AMQP answers, so using it"
    fi
  fi

  for svc in "${SERVICES[@]}"; do
    log "ready: $(label "$svc"): ${HOW[$svc]}"
  done
  if [[ ${ENGINES:-} == yes ]]; then
    engine_packages
  fi
}

# ----------------------------------------------------------------- stop ----

# stop_entry KIND ARGS...: stops one service recorded in the state file.
stop_entry() {
  local kind=$1
  shift
  case $kind in
    postgres)
      log "stopping Postgres: pg_ctlcluster --skip-systemctl-redirect $1 $2 stop"
      pg_ctlcluster --skip-systemctl-redirect "$1" "$2" stop || warn "could not stop Postgres cluster $1/$2"
      ;;
    redis)
      local pidfile pid
      pidfile=$(redis_pidfile "$1")
      pid=$(cat "$pidfile" 2>/dev/null || true)
      if [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]]; then
        log "stopping the private Redis on port $1 (pid $pid)"
        kill "$pid"
        wait_until 10 "Redis shutdown" process_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
      else
        log "the private Redis on port $1 is not running (pid file $pidfile)"
      fi
      rm -f "$pidfile"
      ;;
    rabbitmq)
      log "stopping RabbitMQ: rabbitmqctl stop"
      rabbitmqctl -q stop || warn "could not stop RabbitMQ"
      ;;
    docker)
      log "stopping the container: docker compose stop $1"
      docker compose -f "$COMPOSE_FILE" stop "$1" || warn "could not stop container $1"
      ;;
    *) warn "unknown entry in $CATALOG_STATE_FILE: $kind $*" ;;
  esac
}

services_stop() {
  if [[ ! -s $CATALOG_STATE_FILE ]]; then
    log "nothing recorded in $CATALOG_STATE_FILE: nothing to stop"
    return 0
  fi
  local lines=() keep=() line owner rest i stopped=0
  mapfile -t lines <"$CATALOG_STATE_FILE"
  # Newest first, so that services stop in the reverse order of their start.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    line=${lines[i]}
    [[ -n $line ]] || continue
    read -r owner rest <<<"$line"
    if [[ -n ${STOP_OWNER:-} && $owner != "$STOP_OWNER" ]]; then
      keep=("$line" "${keep[@]}")
      continue
    fi
    # shellcheck disable=SC2086 # rest is KIND ARGS..., split on purpose
    stop_entry $rest
    stopped=$((stopped + 1))
  done
  if ((${#keep[@]} > 0)); then
    printf '%s\n' "${keep[@]}" >"$CATALOG_STATE_FILE"
  else
    rm -f "$CATALOG_STATE_FILE"
  fi
  log "stopped $stopped recorded service(s)${STOP_OWNER:+ started by $STOP_OWNER}"
}

# ----------------------------------------------------------------- main ----

main() {
  local command=up owner_given=""
  while (($# > 0)); do
    case $1 in
      up | stop) command=$1 ;;
      --engines) ENGINES=yes ;;
      --owner)
        [[ $# -ge 2 && -n $2 ]] || die "--owner needs a name"
        OWNER=$2 owner_given=$2
        shift
        ;;
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
  [[ $OWNER =~ ^[A-Za-z0-9._:-]+$ ]] || die "--owner: use letters, digits and . _ : - only"
  cd "$CATALOG_ROOT"
  case $command in
    up) services_up ;;
    stop) STOP_OWNER=$owner_given services_stop ;;
  esac
}

main "$@"
