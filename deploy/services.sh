#!/usr/bin/env bash
# deploy/services.sh — make sure every service Latchkey's integration tests
# need is installed and running, or fail loudly naming the one that is not.
#
#   deploy/services.sh              check/start everything, report OK
#   deploy/services.sh --print-env  same, then print `export NAME=value` lines
#                                   for the tests (stdout only; logs go to stderr)
#
# Idempotent: when everything is already up it only checks (well under 2 s).
# Services: Redis 7 (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432, trust auth),
# a Python venv with aiosmtpd 1.4.6 (the tests start their own SMTP sinks),
# node 20+ with npm and the OpenID Connect peers of tests/peers (npm ci when
# node_modules is missing or older than package-lock.json; the tests start
# the peers themselves).
set -euo pipefail

readonly SCRIPT_NAME=services.sh

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

print_env=0
case "${1:-}" in
  '') ;;
  --print-env) print_env=1 ;;
  -h | --help)
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  *) die "unknown argument '$1' (expected --print-env)" ;;
esac

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"

# The LATCHKEY_SERVICES_* overrides exist only so the start-up paths can be
# exercised against scratch instances; the tests use the defaults.
readonly REDIS_HOST=127.0.0.1
readonly REDIS_PORT="${LATCHKEY_SERVICES_REDIS_PORT:-6379}"
readonly REDIS_DIR=/var/lib/redis
readonly REDIS_LOG="${LATCHKEY_SERVICES_REDIS_LOG:-/var/log/redis/ci.log}"
readonly REDIS_WAIT_S=20

readonly PG_HOST=127.0.0.1
readonly PG_PORT="${LATCHKEY_SERVICES_PG_PORT:-5432}"
readonly PG_CLUSTER="${LATCHKEY_SERVICES_PG_CLUSTER:-main}"
readonly PG_USER=postgres
readonly PG_WAIT_S=30
# Leftover test databases are dropped when nobody is connected and they are
# older than this (so a concurrent run's fresh database is left alone), or
# unconditionally once older than PG_TEST_DB_MAX_AGE_S.
readonly PG_TEST_DB_MIN_AGE_S="${LATCHKEY_SERVICES_TEST_DB_MIN_AGE_S:-600}"
readonly PG_TEST_DB_MAX_AGE_S=7200

readonly AIOSMTPD_VERSION=1.4.6
readonly CACHE_DIR="${LATCHKEY_CACHE:-$HOME/.cache/latchkey}"
readonly VENV="$CACHE_DIR/venv"
readonly VENV_PYTHON="$VENV/bin/python"

readonly NODE_MIN_MAJOR=20
PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/peers" && pwd)" ||
  die "peers: tests/peers not found next to deploy/"
readonly PEERS_DIR

export DEBIAN_FRONTEND=noninteractive
# Never hang on a dead server (psql also gets -w: never prompt, CI has no stdin).
export PGCONNECT_TIMEOUT=5

apt_updated=0
apt_install() {
  if ((apt_updated == 0)); then
    log "apt-get update"
    unlocked apt-get update -qq >&2 || die "apt-get update failed (needed to install: $*)"
    apt_updated=1
  fi
  log "apt-get install -y $*"
  unlocked apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

now_s() { date +%s; }

# Run a command without the lock descriptor (fd 9): a daemon it starts would
# otherwise inherit the lock and hold it for as long as it lives.
unlocked() { "$@" 9>&-; }

# ---------------------------------------------------------------- lock
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/services.lock"
if ! flock -w 300 9; then
  die "another services.sh has held $CACHE_DIR/services.lock for 5 minutes"
fi

# ---------------------------------------------------------------- Redis
redis_ping() {
  [[ "$(timeout 5 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

ensure_redis() {
  if command -v redis-cli >/dev/null && command -v redis-server >/dev/null && redis_ping; then
    log "redis: up on $REDIS_HOST:$REDIS_PORT"
    return
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
    command -v redis-server >/dev/null || die "redis: redis-server still not on PATH after apt-get install"
    command -v redis-cli >/dev/null || die "redis: redis-cli still not on PATH after apt-get install"
    # The package may have started its own instance already.
    if redis_ping; then
      log "redis: up on $REDIS_HOST:$REDIS_PORT (started by the package)"
      return
    fi
  fi

  log "redis: not answering on $REDIS_HOST:$REDIS_PORT, starting it (log: $REDIS_LOG)"
  mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOG")"
  unlocked redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOG" >&2 ||
    die "redis: redis-server failed to start (see $REDIS_LOG)"

  local deadline=$(($(now_s) + REDIS_WAIT_S))
  until redis_ping; do
    if (($(now_s) >= deadline)); then
      tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
      die "redis: no PONG from $REDIS_HOST:$REDIS_PORT after ${REDIS_WAIT_S}s (see $REDIS_LOG)"
    fi
    sleep 0.2
  done
  log "redis: started, PONG from $REDIS_HOST:$REDIS_PORT"
}

# ---------------------------------------------------------------- PostgreSQL
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3 >/dev/null 2>&1; }

pg_query() {
  psql -X -w -q -A -t -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"
}

pg_server_installed() {
  command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null &&
    command -v psql >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Prints "<version> <name> <status>" of the cluster configured on PG_PORT.
pg_cluster_on_port() {
  pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2, $4; exit }'
}

# Trust for loopback TCP, placed before any other rule (pg_hba is first match).
pg_ensure_trust() {
  local version=$1 name=$2
  local hba="/etc/postgresql/$version/$name/pg_hba.conf"
  local marker='# latchkey deploy/services.sh: trust loopback TCP for the tests'
  [[ -f "$hba" ]] || die "postgres: $hba not found"
  if grep -qxF "$marker" "$hba"; then
    return 1
  fi
  log "postgres: adding loopback trust rules at the top of $hba"
  local tmp
  tmp="$(mktemp)" || die "postgres: mktemp failed"
  {
    printf '%s\n' "$marker"
    printf 'host all all 127.0.0.1/32 trust\n'
    printf 'host all all ::1/128 trust\n\n'
    cat "$hba"
  } >"$tmp" || die "postgres: could not prepare the new $hba"
  cat "$tmp" >"$hba" || die "postgres: could not write $hba" # keeps owner and mode
  rm -f "$tmp"
  return 0
}

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_ready; then
    log "postgres: up on $PG_HOST:$PG_PORT"
  else
    pg_server_installed || apt_install postgresql
    pg_server_installed || die "postgres: server binaries still missing after apt-get install postgresql"

    local cluster version name status
    cluster="$(pg_cluster_on_port)"
    if [[ -z "$cluster" ]]; then
      version="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' |
        awk -F/ '{ print $5 }' | sort -n | tail -n 1)"
      [[ -n "$version" ]] || die "postgres: no server version found under /usr/lib/postgresql"
      log "postgres: no cluster on port $PG_PORT, creating $version/$PG_CLUSTER"
      # pg_createcluster runs initdb as the postgres user (initdb refuses root).
      unlocked pg_createcluster "$version" "$PG_CLUSTER" --port "$PG_PORT" >&2 ||
        die "postgres: pg_createcluster $version $PG_CLUSTER --port $PG_PORT failed"
      cluster="$(pg_cluster_on_port)"
      [[ -n "$cluster" ]] || die "postgres: cluster $version/$PG_CLUSTER not listed on port $PG_PORT after creation"
    fi
    read -r version name status <<<"$cluster"
    pg_ensure_trust "$version" "$name" || true

    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    if [[ "$status" == online ]]; then
      log "postgres: cluster $version/$name is online but not ready on $PG_HOST:$PG_PORT, waiting"
    else
      log "postgres: starting cluster $version/$name"
      unlocked pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >&2 ||
        die "postgres: pg_ctlcluster $version $name start failed (see /var/log/postgresql/postgresql-$version-$name.log)"
    fi

    local deadline=$(($(now_s) + PG_WAIT_S))
    until pg_ready; do
      if (($(now_s) >= deadline)); then
        tail -n 20 "/var/log/postgresql/postgresql-$version-$name.log" >&2 2>/dev/null || true
        die "postgres: not accepting connections on $PG_HOST:$PG_PORT after ${PG_WAIT_S}s"
      fi
      sleep 0.3
    done
    log "postgres: started, accepting connections on $PG_HOST:$PG_PORT"
  fi

  if [[ "$(pg_query -c 'select 1' 2>/dev/null)" != 1 ]]; then
    # Up but refusing us: most likely pg_hba asks for a password.
    local cluster version name status
    cluster="$(pg_cluster_on_port)"
    if [[ -n "$cluster" ]]; then
      read -r version name status <<<"$cluster"
      if pg_ensure_trust "$version" "$name"; then
        unlocked pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload >&2 || true
        sleep 0.5
      fi
    fi
    local out
    out="$(pg_query -c 'select 1' 2>&1)" ||
      die "postgres: psql -h $PG_HOST -p $PG_PORT -U $PG_USER -d postgres failed: $out"
    [[ "$out" == 1 ]] || die "postgres: 'select 1' returned '$out'"
  fi
}

drop_leftover_test_databases() {
  local stale
  stale="$(pg_query <<SQL
SELECT d.datname
FROM pg_database d
LEFT JOIN LATERAL pg_stat_file('base/' || d.oid || '/PG_VERSION', true) f ON true
WHERE d.datname LIKE 'latchkey\_test\_%'
  AND (
    (coalesce(f.modification, 'epoch') < now() - make_interval(secs => $PG_TEST_DB_MIN_AGE_S)
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid))
    OR coalesce(f.modification, 'epoch') < now() - make_interval(secs => $PG_TEST_DB_MAX_AGE_S)
  )
ORDER BY 1;
SQL
  )" || die "postgres: could not list leftover test databases"

  if [[ -z "$stale" ]]; then
    return
  fi
  local count=0 db
  while IFS= read -r db; do
    [[ -n "$db" ]] || continue
    pg_query -v db="$db" <<'SQL' >/dev/null || die "postgres: DROP DATABASE $db failed"
DROP DATABASE IF EXISTS :"db" WITH (FORCE);
SQL
    count=$((count + 1))
  done <<<"$stale"
  log "postgres: dropped $count leftover latchkey_test_% database(s)"
}

# ---------------------------------------------------------------- SMTP sink (aiosmtpd)
bootstrap_python() {
  local candidate
  for candidate in "$(command -v python3 || true)" "$HOME/.pyenv/shims/python3" /usr/bin/python3; do
    if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  return 1
}

aiosmtpd_ok() {
  "$VENV_PYTHON" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$AIOSMTPD_VERSION')" 2>/dev/null
}

smtp_pid=''
smtp_tmp=''
cleanup() {
  if [[ -n "$smtp_pid" ]]; then
    kill "$smtp_pid" 2>/dev/null || true
    wait "$smtp_pid" 2>/dev/null || true
  fi
  if [[ -n "$smtp_tmp" ]]; then
    rm -rf "$smtp_tmp"
  fi
}
trap cleanup EXIT

ensure_smtp_sink() {
  if ! aiosmtpd_ok; then
    if [[ -e "$VENV" ]] && ! "$VENV_PYTHON" -c 'import pip' 2>/dev/null; then
      log "smtp: $VENV is broken (no working python or pip), recreating it"
      rm -rf "$VENV"
    fi
    if [[ ! -e "$VENV" ]]; then
      local python
      if ! python="$(bootstrap_python)"; then
        apt_install python3 python3-venv
        python="$(bootstrap_python)" || die "smtp: no python3 with the venv module found"
      fi
      log "smtp: creating venv $VENV with $python"
      if ! "$python" -m venv "$VENV" >&2; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        apt_install python3-venv
        "$python" -m venv "$VENV" >&2 || die "smtp: $python -m venv $VENV failed"
      fi
    fi
    log "smtp: installing aiosmtpd==$AIOSMTPD_VERSION into $VENV"
    "$VENV_PYTHON" -m pip install --disable-pip-version-check -q "aiosmtpd==$AIOSMTPD_VERSION" >&2 ||
      die "smtp: pip install aiosmtpd==$AIOSMTPD_VERSION failed"
    aiosmtpd_ok || die "smtp: aiosmtpd $AIOSMTPD_VERSION still not importable from $VENV_PYTHON"
  fi

  # The admin API test validates /api/openapi.json with a real OpenAPI validator.
  if ! "$VENV_PYTHON" -c 'import openapi_spec_validator' 2>/dev/null; then
    log "openapi: installing openapi-spec-validator into $VENV"
    "$VENV_PYTHON" -m pip install --disable-pip-version-check -q "openapi-spec-validator>=0.7,<0.8" >&2 ||
      die "openapi: pip install openapi-spec-validator failed"
  fi

  # Smoke test: the exact way the tests run their sink.
  smtp_tmp="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-smtp.XXXXXX")"
  local port
  port="$("$VENV_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # -n: do not setuid to nobody (required as root); -c CLASS ARGS...: handler
  # class path followed by its constructor arguments (here the Maildir path).
  "$VENV_PYTHON" -m aiosmtpd -n -l "127.0.0.1:$port" \
    -c aiosmtpd.handlers.Mailbox "$smtp_tmp/maildir" >"$smtp_tmp/aiosmtpd.log" 2>&1 9>&- &
  smtp_pid=$!

  if ! "$VENV_PYTHON" - "$port" "$smtp_pid" >"$smtp_tmp/send.log" 2>&1 <<'PY'; then
import os, smtplib, sys, time
from email.message import EmailMessage

port, pid = int(sys.argv[1]), int(sys.argv[2])
msg = EmailMessage()
msg["From"] = "services-check@latchkey.test"
msg["To"] = "sink@latchkey.test"
msg["Subject"] = "latchkey services.sh smoke test"
msg.set_content("smoke test\n")
deadline = time.monotonic() + 10
while True:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.send_message(msg)
        break
    except OSError as error:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"aiosmtpd exited before accepting mail ({error})")
        if time.monotonic() > deadline:
            sys.exit(f"could not deliver to 127.0.0.1:{port}: {error}")
        time.sleep(0.05)
PY
    cat "$smtp_tmp/send.log" "$smtp_tmp/aiosmtpd.log" >&2 || true
    die "smtp: aiosmtpd smoke test failed to deliver a message"
  fi

  local deadline=$(($(now_s) + 5))
  until compgen -G "$smtp_tmp/maildir/new/*" >/dev/null; do
    if (($(now_s) >= deadline)); then
      cat "$smtp_tmp/aiosmtpd.log" >&2 || true
      die "smtp: aiosmtpd accepted the message but nothing appeared in $smtp_tmp/maildir/new"
    fi
    sleep 0.05
  done
  cleanup
  smtp_pid=''
  smtp_tmp=''
  log "smtp: aiosmtpd $AIOSMTPD_VERSION in $VENV delivered a smoke-test message to a Maildir"
}

# ---------------------------------------------------------------- node peers (npm)
peers_installed() {
  local modules="$PEERS_DIR/node_modules"
  # npm writes node_modules/.package-lock.json last, so it dates the install.
  [[ -f "$modules/.package-lock.json" ]] &&
    [[ ! "$PEERS_DIR/package-lock.json" -nt "$modules/.package-lock.json" ]] &&
    [[ ! "$PEERS_DIR/package.json" -nt "$modules/.package-lock.json" ]] &&
    [[ -f "$modules/openid-client/package.json" ]] &&
    [[ -f "$modules/oidc-provider/package.json" ]]
}

ensure_node_peers() {
  command -v node >/dev/null ||
    die "peers: node (Node.js $NODE_MIN_MAJOR or newer) is not on PATH; install nodejs $NODE_MIN_MAJOR+ with npm"
  command -v npm >/dev/null ||
    die "peers: npm is not on PATH; install npm (it comes with Node.js $NODE_MIN_MAJOR+)"
  local version
  version="$(node --version 2>/dev/null)" || die "peers: node --version failed"
  local major="${version#v}"
  major="${major%%.*}"
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < NODE_MIN_MAJOR)); then
    die "peers: node $version is too old; Node.js $NODE_MIN_MAJOR or newer is needed"
  fi
  [[ -f "$PEERS_DIR/package-lock.json" ]] || die "peers: $PEERS_DIR/package-lock.json is missing"

  if peers_installed; then
    log "peers: node $version, $PEERS_DIR/node_modules up to date"
    return
  fi
  log "peers: npm ci --prefix $PEERS_DIR (node $version)"
  npm ci --prefix "$PEERS_DIR" --prefer-offline --no-audit --no-fund >&2 ||
    die "peers: npm ci --prefix $PEERS_DIR failed (needs the npm registry or a warm ~/.npm cache)"
  peers_installed || die "peers: $PEERS_DIR/node_modules still incomplete after npm ci"
  log "peers: installed openid-client and oidc-provider into $PEERS_DIR/node_modules"
}

# ---------------------------------------------------------------- main
started=$(date +%s%N)
ensure_redis
ensure_postgres
drop_leftover_test_databases
ensure_smtp_sink
ensure_node_peers

# Do not resolve symlinks: Debian's /usr/bin/redis-server is a link to
# redis-check-rdb, and the binary picks its personality from argv[0].
redis_server_path="$(command -v redis-server)"
[[ "$redis_server_path" == /* ]] || redis_server_path="$PWD/$redis_server_path"
node_path="$(command -v node)"
[[ "$node_path" == /* ]] || node_path="$PWD/$node_path"
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
log "OK: redis, postgres, smtp sink and node peers ready (${elapsed_ms} ms)"

if ((print_env)); then
  printf 'export %s=%q\n' \
    LATCHKEY_TEST_REDIS_URL "redis://$REDIS_HOST:$REDIS_PORT" \
    LATCHKEY_TEST_POSTGRES_URL "postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres" \
    LATCHKEY_TEST_PYTHON "$VENV_PYTHON" \
    LATCHKEY_TEST_REDIS_SERVER "$redis_server_path" \
    LATCHKEY_TEST_NODE "$node_path" \
    LATCHKEY_TEST_PEERS "$PEERS_DIR"
fi
