# shellcheck shell=bash disable=SC2016
# Helpers shared by scripts/services.sh, scripts/test.sh and scripts/run.sh.
# Source it (after `set -euo pipefail`); it only defines things, it runs nothing.

CATALOG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CATALOG_STATE_DIR="$CATALOG_ROOT/.services"
CATALOG_STATE_FILE="$CATALOG_STATE_DIR/started"

# The backing-service URLs, with the defaults of the configuration contract.
# Exported so the binaries and the tests see exactly what was checked here.
: "${CATALOG__DATABASE__URL:=postgres://postgres@127.0.0.1:5432/catalog}"
: "${CATALOG__REDIS__URL:=redis://127.0.0.1:6379}"
: "${CATALOG__AMQP__URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
export CATALOG__DATABASE__URL CATALOG__REDIS__URL CATALOG__AMQP__URL

# ---------------------------------------------------------------- output ----

LOG_TAG="${LOG_TAG:-$(basename "$0" .sh)}"

log() { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
warn() { printf '[%s] warning: %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# ------------------------------------------------------------------ URLs ----

# parse_url URL DEFAULT_PORT
# Splits scheme://[user[:password]@]host[:port][/path][?query] into URL_SCHEME,
# URL_USER, URL_PASSWORD, URL_HOST (IPv6 brackets removed), URL_PORT (DEFAULT_PORT
# when absent), URL_PATH, URL_QUERY (with its "?") and URL_AUTHORITY (everything
# before the path, as written). Returns 1 when URL does not look like a URL.
# shellcheck disable=SC2034 # the URL_* variables are for the callers
parse_url() {
  local url=$1 default_port=$2
  local re='^([A-Za-z][A-Za-z0-9+.-]*)://(([^@/?#]*)@)?(\[[^]/]*\]|[^:/?#]*)(:([0-9]*))?(/[^?#]*)?(\?[^#]*)?$'
  [[ $url =~ $re ]] || return 1
  URL_SCHEME=${BASH_REMATCH[1]}
  local userinfo=${BASH_REMATCH[3]}
  URL_USER=${userinfo%%:*}
  URL_PASSWORD=""
  if [[ $userinfo == *:* ]]; then
    URL_PASSWORD=${userinfo#*:}
  fi
  URL_HOST=${BASH_REMATCH[4]}
  URL_HOST=${URL_HOST#[}
  URL_HOST=${URL_HOST%]}
  URL_PORT=${BASH_REMATCH[6]:-$default_port}
  URL_PATH=${BASH_REMATCH[7]}
  URL_QUERY=${BASH_REMATCH[8]}
  URL_AUTHORITY=${BASH_REMATCH[1]}://${BASH_REMATCH[2]}${BASH_REMATCH[4]}${BASH_REMATCH[5]}
}

# percent_decode STRING: "%2f" -> "/".
percent_decode() {
  printf '%b' "${1//%/\\x}"
}

# is_local_host HOST: true for loopback names, the only hosts these scripts may start.
is_local_host() {
  case $1 in
    "" | localhost | ::1 | 127.*) return 0 ;;
    *) return 1 ;;
  esac
}

# postgres_server_url URL: the same server, but the `postgres` maintenance database.
postgres_server_url() {
  parse_url "$1" 5432 || die "cannot parse Postgres URL: $1"
  printf '%s/postgres%s\n' "$URL_AUTHORITY" "$URL_QUERY"
}

# ---------------------------------------------------------------- probes ----
# The probes run `timeout 3 bash -c '...' _ HOST PORT`, so that a hung connect
# is bounded; $1 and $2 expand in that inner shell (hence SC2016 off above).

# tcp_open HOST PORT: a TCP connect with a 3 s limit, in pure bash.
tcp_open() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# postgres_ready URL: the server answers (pg_isready; a bare TCP connect without it).
# Says nothing about credentials or whether the database in URL exists.
postgres_ready() {
  if have pg_isready; then
    pg_isready -q -t 3 -d "$1" >/dev/null 2>&1
  else
    parse_url "$1" 5432 || return 1
    tcp_open "${URL_HOST:-127.0.0.1}" "$URL_PORT"
  fi
}

# postgres_login_error URL: tries to log in with psql; prints psql's error and
# returns 1 on failure. Call only when psql exists.
postgres_login_error() {
  local out
  if out=$(PGCONNECT_TIMEOUT=5 psql -X -w -q -At -c 'select 1' "$1" 2>&1); then
    return 0
  fi
  printf '%s\n' "$out"
  return 1
}

# redis_cli_url URL: URL as redis-cli -u needs it. redis-cli sends an empty user
# name for redis://:password@host (and fails) where clients mean "default".
redis_cli_url() {
  local url=$1
  printf '%s\n' "${url/#redis:\/\/:/redis://default:}"
}

# redis_drop_namespace NS: deletes every key of namespace NS ("NS:*") from
# the Redis the services use, $CATALOG__REDIS__URL (nothing without redis-cli).
redis_drop_namespace() {
  have redis-cli || return 0
  local url
  url=$(redis_cli_url "$CATALOG__REDIS__URL")
  redis-cli --no-auth-warning -u "$url" --scan --pattern "$1:*" |
    xargs -r -d '\n' -n 500 redis-cli --no-auth-warning -u "$url" del >/dev/null
}

# redis_ready URL: PING answered with PONG (redis-cli; RESP over /dev/tcp without it).
redis_ready() {
  if have redis-cli; then
    [[ $(timeout 5 redis-cli --no-auth-warning -u "$(redis_cli_url "$1")" ping 2>/dev/null) == PONG ]]
  else
    parse_url "$1" 6379 || return 1
    local reply
    reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && head -n 1 <&3' \
      _ "${URL_HOST:-127.0.0.1}" "$URL_PORT" 2>/dev/null) || return 1
    # "+PONG", or an error such as "-NOAUTH": either way a Redis server answered.
    [[ $reply == [+-]* ]]
  fi
}

# amqp_ready HOST PORT: an AMQP 0-9-1 broker answers the protocol header with a
# Connection.Start frame (frame type 1, class 10, method 10). Pure bash, so it
# works the same for a local node, a container and a remote broker.
amqp_ready() {
  local bytes
  bytes=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "AMQP\000\000\011\001" >&3 && head -c 11 <&3 | od -An -tx1' \
    _ "$1" "$2" 2>/dev/null) || return 1
  bytes=$(printf '%s' "$bytes" | tr -s ' \n' ' ')
  [[ $bytes == " 01 00 00 "*" 00 0a 00 0a"* ]]
}

# process_alive PID: PID runs and is not a zombie (an exited child that was not
# reaped yet still has its /proc entry, and `kill -0` still succeeds on it).
process_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

process_gone() { ! process_alive "$1"; }

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every half second until it succeeds.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      warn "$what: not ready after ${limit}s"
      return 1
    fi
    sleep 0.5
  done
}

# --------------------------------------------------------------- state ----

# The state file lists the backing services these scripts started, one a line:
#   OWNER KIND ARGS...
# OWNER says which invocation started it (run.sh stops only its own); KIND is
# postgres (ARGS: version cluster), redis (port pidfile), rabbitmq (node port)
# or docker (compose service).
state_add() {
  mkdir -p "$CATALOG_STATE_DIR"
  if ! grep -qxF -- "$*" "$CATALOG_STATE_FILE" 2>/dev/null; then
    printf '%s\n' "$*" >>"$CATALOG_STATE_FILE"
  fi
}

# ---------------------------------------------------------------- tools ----

# tools_venv: creates or updates the virtual environment .venv-tools/ (git-
# ignored) from scripts/requirements-tools.txt, the pinned Python tools the
# checks use, and prints its bin directory on stdout (progress goes to
# stderr, so `bin=$(tools_venv)` works). Reinstalls only when the requirements
# file or the Python interpreter changed since the last install, so a second
# call costs nothing.
tools_venv() {
  local venv="$CATALOG_ROOT/.venv-tools" reqs="$CATALOG_ROOT/scripts/requirements-tools.txt"
  local stamp="$venv/.requirements.sha256" want
  [[ -f $reqs ]] || die "missing $reqs"
  if [[ -x $venv/bin/python ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    log "tools: $venv is broken (its Python is gone): recreating it" >&2
    rm -rf "$venv"
  fi
  if [[ ! -x $venv/bin/python ]]; then
    have python3 || die "python3 is not installed (needed for $venv)"
    log "tools: python3 -m venv $venv" >&2
    python3 -m venv "$venv" >&2 ||
      die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  # What was installed, and by which interpreter: a new Python needs new wheels.
  want="$(sha256sum "$reqs" | cut -d' ' -f1) $("$venv/bin/python" -V 2>&1)"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "tools: $venv is up to date with scripts/requirements-tools.txt" >&2
  else
    log "tools: pip install -r scripts/requirements-tools.txt into $venv" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$reqs" >&2
    printf '%s\n' "$want" >"$stamp"
  fi
  printf '%s\n' "$venv/bin"
}
