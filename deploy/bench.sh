#!/usr/bin/env bash
# deploy/bench.sh — Latchkey's performance benchmarks (the targets of the spec's
# "Performance targets"), measured side by side in one run on this machine and
# printed as ratios (README: "Benchmarks").
#
#   deploy/bench.sh
#
# Builds the release binary, starts `latchkey serve` from it in a temporary folder
# on a free loopback port (real Redis, SQLite, outbox mail, production argon2
# parameters), creates an agency, staff and an OAuth client with the CLI, then
# prints one line per target and a summary table. It reports and does not gate:
# the exit code is 0 whether targets are met or missed, and non-zero only when
# the benchmark itself cannot run. Everything it starts is stopped on exit.
#
# LATCHKEY_BENCH_SECONDS (default 8) is the length of each load phase; the
# whole run takes about 14 of them plus start-up. LATCHKEY_BENCH_KEEP=1 keeps
# the temporary folder (server log, scripts) for a look afterwards.
set -euo pipefail

readonly SCRIPT_NAME=bench.sh

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

case "${1:-}" in
  '') ;;
  -h | --help)
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  *) die "unknown argument '$1' (deploy/bench.sh takes none; see --help)" ;;
esac

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly REPO="$PWD"

readonly SECONDS_PER_PHASE="${LATCHKEY_BENCH_SECONDS:-8}"
[[ "$SECONDS_PER_PHASE" =~ ^[1-9][0-9]*$ ]] || die "LATCHKEY_BENCH_SECONDS must be a positive whole number"
readonly KEEP="${LATCHKEY_BENCH_KEEP:-0}"

# The server is configured here and only here: nothing from the caller's environment.
while IFS= read -r name; do
  unset "$name"
done < <(compgen -e | grep '^LATCHKEY_' || true)

readonly REDIS_URL=redis://127.0.0.1:6379
readonly PASSWORD='Bench-Sign-In.42'
readonly TEMPORARY_PASSWORD='Password.1'
readonly MAIN_EMAIL=bob@bench.example
# Extra accounts for the sign-in load: the account throttle starts at 5 failures in a
# row, and an attempt counts as one until its hash matches, so more than 4 sign-ins in
# flight on one account would be throttled. The load spreads over the accounts.
readonly FLOOD_ACCOUNTS=10
# Sequential sign-ins per kind for the unknown-email/wrong-password comparison. Each is
# a failure from 127.0.0.1, and the 101st failure per IP in 15 minutes gets 429: with a
# warm-up pair, 2 × 48 + 2 = 98.
readonly TIMING_PAIRS=48

# ---------------------------------------------------------------- tools
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found on PATH (nor in $HOME/.cargo/bin)"

if ! command -v wrk >/dev/null; then
  log "wrk missing, installing it (apt-get install wrk)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed (needed to install wrk)"
  apt-get install -y -qq wrk >&2 || die "apt-get install wrk failed"
  command -v wrk >/dev/null || die "wrk still not on PATH after apt-get install wrk"
fi
for tool in curl python3 redis-cli node nproc; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
CORES="$(nproc)"
readonly CORES
has_taskset=0
if command -v taskset >/dev/null && ((CORES >= 2)); then
  has_taskset=1
fi

# Redis and the npm peers (oidc-provider), installed or started when missing.
deploy/services.sh || die "deploy/services.sh failed: a service the benchmark needs is missing (see above)"

# ---------------------------------------------------------------- build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}"
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
# The bench target first: building it links the binary too (with the dev-dependencies'
# features), so the plain release build comes last and the binary is the product's.
log "cargo bench --bench argon2_rate --no-run"
cargo bench --bench argon2_rate --no-run >&2 || die "cargo bench --bench argon2_rate --no-run failed"
log "cargo build --release"
cargo build --release >&2 || die "cargo build --release failed"

# ---------------------------------------------------------------- cleanup
tmp="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench.XXXXXX")"
readonly TMP="$tmp"
PREFIX="latchkey-bench-$$-$(date +%s):"
readonly PREFIX
server_pid=''
peer_pid=''
background_pids=()

stop_pid() {
  local pid=$1
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 50)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  local pid
  for pid in "${background_pids[@]}"; do
    stop_pid "$pid"
  done
  stop_pid "$peer_pid"
  stop_pid "$server_pid"
  # Drop every Redis key this run wrote.
  redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null |
    xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  if [[ "$KEEP" == 1 ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private copy: another build in the shared target dir cannot replace it mid-run.
cp "$CARGO_TARGET_DIR/release/latchkey" "$TMP/latchkey" || die "no release binary at $CARGO_TARGET_DIR/release/latchkey"
readonly BIN="$TMP/latchkey"
BENCH_EXE="$(find "$CARGO_TARGET_DIR/release/deps" -maxdepth 1 -type f -perm -u+x -name 'argon2_rate-*' -printf '%T@ %p\n' |
  sort -n | tail -n 1 | cut -d' ' -f2-)"
[[ -n "$BENCH_EXE" ]] || die "the argon2_rate bench binary was not found under $CARGO_TARGET_DIR/release/deps"
cp "$BENCH_EXE" "$TMP/argon2_rate"
readonly ARGON2_RATE="$TMP/argon2_rate"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PORT="$(free_port)"
readonly PORT
readonly BASE="http://127.0.0.1:$PORT"

export LATCHKEY_BIND="127.0.0.1:$PORT"
export LATCHKEY_PUBLIC_URL="$BASE"
export LATCHKEY_DATABASE_URL="sqlite://$TMP/data/latchkey.db"
export LATCHKEY_REDIS_URL="$REDIS_URL"
export LATCHKEY_REDIS_KEY_PREFIX="$PREFIX"
export LATCHKEY_SMTP_URL="outbox://$TMP/outbox"
export LATCHKEY_DEV_SEED_DEMO=false
LATCHKEY_OIDC_KEY_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
export LATCHKEY_OIDC_KEY_ENCRYPTION_KEY

# ---------------------------------------------------------------- helper scripts
# HTTP by hand where a browser would be: the forced change, one sign-in, and the timed
# sequential sign-ins (one keep-alive connection, no redirects followed).
cat >"$TMP/bench_http.py" <<'PY'
import hashlib, http.client, re, statistics, sys, time, urllib.parse

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Client:
    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.cookies = {}

    def request(self, method, path, form=None, keep_cookies=True):
        body = urllib.parse.urlencode(form) if form is not None else None
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        if keep_cookies:
            for header, value in response.getheaders():
                if header.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    self.cookies[name] = rest.split(";", 1)[0]
        return response.status, response.getheader("Location") or "", text

    def csrf(self, path):
        status, _, text = self.request("GET", path)
        found = CSRF.search(text)
        if status != 200 or not found:
            sys.exit(f"GET {path}: status {status}, no csrf_token")
        return found.group(1)

    def sign_in(self, email, password):
        token = self.csrf("/login")
        return self.request("POST", "/login", {"email": email, "password": password, "csrf_token": token})


def change(base, email, temporary, chosen):
    client = Client(base)
    status, location, _ = client.sign_in(email, temporary)
    if status != 303 or not location.endswith("/password/change"):
        sys.exit(f"{email}: sign-in with the temporary password gave {status} {location}")
    token = client.csrf("/password/change")
    status, location, _ = client.request(
        "POST", "/password/change",
        {"current_password": temporary, "new_password": chosen, "confirm_password": chosen, "csrf_token": token},
    )
    if status != 303 or "password_changed" not in location:
        sys.exit(f"{email}: the forced change gave {status} {location}")


def presession(base):
    client = Client(base)
    token = client.csrf("/login")
    print(client.cookies["latchkey_csrf"], token)


def sign_in(base, email, password):
    client = Client(base)
    status, location, _ = client.sign_in(email, password)
    if status != 303 or "latchkey_session" not in client.cookies:
        sys.exit(f"{email}: sign-in gave {status} {location}")
    cookie = client.cookies["latchkey_session"]
    print(cookie, hashlib.sha256(cookie.encode()).hexdigest())


def timing(base, email, password, pairs):
    """Median latency of unknown-email and wrong-password sign-ins, alternated on one
    connection; a correct sign-in (not timed) after each wrong password clears the
    account's failure streak, so the throttle never answers instead of the hash."""
    client = Client(base)
    token = client.csrf("/login")
    client.cookies = {"latchkey_csrf": client.cookies["latchkey_csrf"]}

    def post(form):
        form["csrf_token"] = token
        started = time.perf_counter()
        status, _, _ = client.request("POST", "/login", form, keep_cookies=False)
        return status, time.perf_counter() - started

    samples = {"unknown": [], "wrong": []}
    statuses = {"unknown": {}, "wrong": {}}
    for i in range(pairs + 1):
        order = ["unknown", "wrong"] if i % 2 == 0 else ["wrong", "unknown"]
        for kind in order:
            if kind == "unknown":
                form = {"email": f"nobody-{i}-{time.monotonic_ns()}@bench.example", "password": "Wrong-Password.7"}
            else:
                form = {"email": email, "password": f"Wrong-Password.{i}"}
            status, seconds = post(form)
            if i > 0:  # the first pair warms up
                samples[kind].append(seconds)
                statuses[kind][status] = statuses[kind].get(status, 0) + 1
            if kind == "wrong":
                status, _ = post({"email": email, "password": password})
                if status != 303:
                    sys.exit(f"the correct sign-in after a wrong password gave {status}")
    unknown = statistics.median(samples["unknown"]) * 1000
    wrong = statistics.median(samples["wrong"]) * 1000
    fmt = lambda d: ",".join(f"{k}x{v}" for k, v in sorted(d.items()))
    print(f"RESULT unknown_ms={unknown:.3f} wrong_ms={wrong:.3f} "
          f"unknown_status={fmt(statuses['unknown'])} wrong_status={fmt(statuses['wrong'])}")


def hash_params(db, email):
    import sqlite3
    row = sqlite3.connect(db).execute("SELECT password_hash FROM staff WHERE email = ?", (email,)).fetchone()
    found = re.match(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", row[0] if row else "")
    if not found:
        sys.exit(f"no argon2id hash stored for {email}")
    print(*found.groups())


command, *args = sys.argv[1:]
{"change": change, "presession": presession, "sign-in": sign_in, "hash-params": hash_params,
 "timing": lambda *a: timing(*a[:3], int(a[3]))}[command](*args)
PY

# wrk: POST /login with valid credentials, round-robin over the accounts; a 303 is a
# sign-in (a new session), anything else is counted as refused.
cat >"$TMP/login.lua" <<'LUA'
local function encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
local bodies = {}
for email in string.gmatch(os.getenv("BENCH_EMAILS") or "", "%S+") do
  bodies[#bodies + 1] = "email=" .. encode(email) .. "&password=" .. encode(os.getenv("BENCH_PASSWORD"))
    .. "&csrf_token=" .. encode(os.getenv("BENCH_CSRF_TOKEN"))
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "latchkey_csrf=" .. os.getenv("BENCH_CSRF_COOKIE")

local threads = {}
local stride = math.max(1, math.floor(#bodies / 2))
function setup(thread)
  thread:set("offset", #threads * stride)
  threads[#threads + 1] = thread
end
function init(args)
  sent = offset or 0
  signed_in = 0
  refused = 0
end
function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent % #bodies) + 1])
end
function response(status, headers, body)
  if status == 303 then signed_in = signed_in + 1 else refused = refused + 1 end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("signed_in")
    bad = bad + thread:get("refused")
  end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d signed_in=%d refused=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, ok, bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
LUA

# wrk: any request (headers from -H; a POST body from BENCH_BODY; BENCH_PAUSE_MS between
# the requests of each connection, for a latency probe that does not itself saturate the
# machine), reporting a RESULT line.
cat >"$TMP/report.lua" <<'LUA'
if os.getenv("BENCH_BODY") then
  wrk.method = "POST"
  wrk.body = os.getenv("BENCH_BODY")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
local pause = tonumber(os.getenv("BENCH_PAUSE_MS") or "")
if pause then
  function delay() return pause end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
LUA

# field NAME "RESULT a=1 b=2" -> the value of NAME
field() {
  local name=$1 line=$2 part
  for part in $line; do
    if [[ "$part" == "$name="* ]]; then
      printf '%s\n' "${part#*=}"
      return
    fi
  done
  die "no $name in: $line"
}

# calc EXPRESSION -> its value (python3 arithmetic, 6 significant digits)
calc() { python3 -c "import sys; print(f'{float(eval(sys.argv[1])):.6g}')" "$1"; }
# holds EXPRESSION -> status 0 when it is true
holds() { python3 -c "import sys; sys.exit(0 if eval(sys.argv[1]) else 1)" "$1"; }

# wrk_result OUTFILE WRK-ARGS... : runs wrk, keeps its output, prints the RESULT line.
wrk_result() {
  local out=$1
  shift
  "$@" >"$out" 2>&1 || {
    cat "$out" >&2
    die "wrk failed: $*"
  }
  grep '^RESULT ' "$out" || {
    cat "$out" >&2
    die "wrk printed no RESULT line: $*"
  }
}

rate() { calc "$(field requests "$1") / ($(field duration_us "$1") / 1e6)"; }

# ---------------------------------------------------------------- set-up
cd "$TMP"
log "server folder $TMP, Redis key prefix $PREFIX"
"$BIN" agency create --name "Bench Estates" --slug bench >/dev/null 2>"$TMP/cli.log" ||
  die "latchkey agency create failed: $(cat "$TMP/cli.log")"
emails=("$MAIN_EMAIL")
for ((i = 1; i <= FLOOD_ACCOUNTS; i++)); do
  emails+=("load-$i@bench.example")
done
for email in "${emails[@]}"; do
  "$BIN" staff create --agency bench --email "$email" --name "Bench ${email%@*}" --role staff \
    --temporary-password "$TEMPORARY_PASSWORD" >/dev/null 2>"$TMP/cli.log" ||
    die "latchkey staff create $email failed: $(cat "$TMP/cli.log")"
done
client_json="$("$BIN" client create --name "Bench service" --redirect-uri http://127.0.0.1:9/unused \
  --grant client_credentials --scope email 2>"$TMP/cli.log")" ||
  die "latchkey client create failed: $(cat "$TMP/cli.log")"
CLIENT_ID="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["client_id"])' <<<"$client_json")"
CLIENT_SECRET="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["client_secret"])' <<<"$client_json")"

log "starting latchkey serve on $BASE"
"$BIN" serve >"$TMP/serve.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 200; i++)); do
  if curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null; then
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || {
    tail -n 20 "$TMP/serve.log" >&2
    die "latchkey serve exited during start-up"
  }
  sleep 0.1
done
curl -fsS -o /dev/null "$BASE/healthz" || die "latchkey serve is not answering on $BASE after 20 s"
curl -fsS -o /dev/null "$BASE/readyz" || die "latchkey serve is not ready (database or Redis) on $BASE"

log "forced password change for ${#emails[@]} accounts"
for email in "${emails[@]}"; do
  python3 "$TMP/bench_http.py" change "$BASE" "$email" "$TEMPORARY_PASSWORD" "$PASSWORD" ||
    die "the forced change of $email failed"
done
read -r ARGON2_M ARGON2_T ARGON2_P < <(python3 "$TMP/bench_http.py" hash-params "$TMP/data/latchkey.db" "$MAIN_EMAIL")
read -r SESSION_COOKIE SESSION_DIGEST < <(python3 "$TMP/bench_http.py" sign-in "$BASE" "$MAIN_EMAIL" "$PASSWORD")
read -r CSRF_COOKIE CSRF_TOKEN < <(python3 "$TMP/bench_http.py" presession "$BASE")
[[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: latchkey_session=$SESSION_COOKIE" "$BASE/session")" == 200 ]] ||
  die "GET /session with the bench session did not answer 200"
HASH_SLOTS="$(curl -fsS "$BASE/metrics" | awk '$1 == "latchkey_password_hash_slots" { print $2 }')"
[[ "$HASH_SLOTS" =~ ^[0-9]+$ ]] || die "no latchkey_password_hash_slots in /metrics"
log "stored hashes: argon2id m=$ARGON2_M t=$ARGON2_T p=$ARGON2_P; hash pool: $HASH_SLOTS slots; $CORES cores"
sleep 1
RSS_START_KB="$(ps -o rss= -p "$server_pid" | tr -d ' ')"

export BENCH_PASSWORD="$PASSWORD" BENCH_CSRF_COOKIE="$CSRF_COOKIE" BENCH_CSRF_TOKEN="$CSRF_TOKEN"
BENCH_EMAILS="${emails[*]}"
export BENCH_EMAILS
D="$SECONDS_PER_PHASE"

# CPU ticks: the machine's busy total, and ours (this script's waited-for children, the
# server, Redis), to tell at the end how much else ran on the machine meanwhile.
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
ticks_of() { # PID [WITH_CHILDREN]
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || {
    echo 0
    return
  }
  stat="${stat##*) }"
  awk -v children="${2:-0}" '{ print $12 + $13 + (children ? $14 + $15 : 0) }' <<<"$stat"
}
redis_pid="$(redis-cli -u "$REDIS_URL" info server | awk -F: '/^process_id:/ { print $2 + 0 }')"
ours() { echo $(($(ticks_of $$ 1) + $(ticks_of "$server_pid") + $(ticks_of "${redis_pid:-0}"))); }
busy_before="$(machine_busy)"
ours_before="$(ours)"

results=()
# record NAME MEASURED RATIO GOAL VERDICT
record() {
  printf '%s: %s → %s (target %s) %s\n' "$1" "$2" "$3" "$4" "$5"
  results+=("$1|$3|$4|$5")
}
verdict() { if holds "$1"; then echo PASS; else echo MISS; fi; }

# ---------------------------------------------------------------- a. sign-ins vs raw argon2
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Side by side means interleaved: each round measures one, then the other, and the
# verdict takes the median round, so a burst of other work on the machine skews one
# round rather than one side.
readonly ROUNDS=3
PHASE=$(((D + 1) / 2))
readonly PHASE
SIGNIN_CONNECTIONS=$((2 * HASH_SLOTS))
log "a. raw argon2id verifies ($CORES threads) vs password sign-ins (wrk -t1 -c$SIGNIN_CONNECTIONS over ${#emails[@]} accounts), $ROUNDS rounds of ${PHASE}s each"
raw_rates=() signin_rates=() ratios=()
signin_refused=0
for ((round = 0; round < ROUNDS; round++)); do
  raw_line="$("$ARGON2_RATE" --bench --threads "$CORES" --seconds "$PHASE" \
    --memory-kib "$ARGON2_M" --iterations "$ARGON2_T" --parallelism "$ARGON2_P")" ||
    die "argon2_rate failed"
  raw_rates+=("$(field verifies_per_second "$raw_line")")
  signin_line="$(wrk_result "$TMP/wrk-signin.txt" wrk -t1 -c"$SIGNIN_CONNECTIONS" -d"${PHASE}s" --timeout 10s \
    -s "$TMP/login.lua" "$BASE/login")"
  signin_rates+=("$(calc "$(field signed_in "$signin_line") / ($(field duration_us "$signin_line") / 1e6)")")
  signin_refused=$((signin_refused + $(field refused "$signin_line")))
  ratios+=("$(calc "${signin_rates[round]} / ${raw_rates[round]}")")
done
RAW_RATE="$(median "${raw_rates[@]}")"
SIGNIN_RATE="$(median "${signin_rates[@]}")"
ratio="$(median "${ratios[@]}")"
# Where a gap comes from: the same verifies through Latchkey's hash pool, without HTTP.
pool_line="$("$ARGON2_RATE" --bench --pool --threads "$CORES" --seconds "$PHASE" \
  --memory-kib "$ARGON2_M" --iterations "$ARGON2_T" --parallelism "$ARGON2_P")" ||
  die "argon2_rate --pool failed"
POOL_RATE="$(field verifies_per_second "$pool_line")"
record "a. password sign-ins/s vs raw argon2id verifies/s" \
  "$(printf '%.1f' "$SIGNIN_RATE") sign-ins/s vs $(printf '%.1f' "$RAW_RATE") verifies/s (median of $ROUNDS rounds; refused: $signin_refused; through the hash pool alone: $(printf '%.1f' "$POOL_RATE") verifies/s)" \
  "$(printf '%.3f' "$ratio")" "≥ 0.95" "$(verdict "$ratio >= 0.95")"

# ---------------------------------------------------------------- b. unknown email vs wrong password
log "b. $TIMING_PAIRS sequential unknown-email and wrong-password sign-ins, alternated"
timing_line="$(python3 "$TMP/bench_http.py" timing "$BASE" "$MAIN_EMAIL" "$PASSWORD" "$TIMING_PAIRS")" ||
  die "the timing of failed sign-ins failed"
UNKNOWN_MS="$(field unknown_ms "$timing_line")"
WRONG_MS="$(field wrong_ms "$timing_line")"
ratio="$(calc "$UNKNOWN_MS / $WRONG_MS")"
record "b. median latency, unknown email vs wrong password" \
  "$UNKNOWN_MS ms vs $WRONG_MS ms (statuses: $(field unknown_status "$timing_line") / $(field wrong_status "$timing_line"))" \
  "$(printf '%.3f' "$ratio")" "0.95–1.05" "$(verdict "abs($ratio - 1) <= 0.05")"

# ---------------------------------------------------------------- c. session check vs healthz
readonly HTTP_THREADS=2 HTTP_CONNECTIONS=16
log "c. GET /session vs GET /healthz: wrk -t$HTTP_THREADS -c$HTTP_CONNECTIONS, $ROUNDS rounds of ${PHASE}s each"
session_rates=()
health_rates=()
session_errors=0
for ((round = 0; round < ROUNDS; round++)); do
  line="$(wrk_result "$TMP/wrk-healthz.txt" wrk -t"$HTTP_THREADS" -c"$HTTP_CONNECTIONS" -d"${PHASE}s" \
    -s "$TMP/report.lua" "$BASE/healthz")"
  health_rates+=("$(rate "$line")")
  line="$(wrk_result "$TMP/wrk-session.txt" wrk -t"$HTTP_THREADS" -c"$HTTP_CONNECTIONS" -d"${PHASE}s" \
    -H "Cookie: latchkey_session=$SESSION_COOKIE" -s "$TMP/report.lua" "$BASE/session")"
  session_rates+=("$(rate "$line")")
  session_errors=$((session_errors + $(field non2xx "$line") + $(field errors "$line")))
done
ratios=()
for ((round = 0; round < ROUNDS; round++)); do
  ratios+=("$(calc "${session_rates[round]} / ${health_rates[round]}")")
done
SESSION_RATE="$(median "${session_rates[@]}")"
HEALTH_RATE="$(median "${health_rates[@]}")"
ratio="$(median "${ratios[@]}")"
record "c. GET /session req/s vs GET /healthz req/s" \
  "$(printf '%.0f' "$SESSION_RATE") vs $(printf '%.0f' "$HEALTH_RATE") (median of $ROUNDS rounds; non-200 sessions: $session_errors)" \
  "$(printf '%.3f' "$ratio")" "≥ 0.6" "$(verdict "$ratio >= 0.6")"

# ---------------------------------------------------------------- d. session p99 under a sign-in flood
# The probe paces itself (4 connections, 2 ms between requests: about 2,000 requests/s,
# a fraction of what the server answers), so it measures how long a session check takes,
# not how long it queues behind the probe's own requests.
readonly PROBE_CONNECTIONS=4 PROBE_PAUSE_MS=2
FLOOD_CONNECTIONS=$((10 * HASH_SLOTS))
log "d. /session p99, idle: wrk -t1 -c$PROBE_CONNECTIONS --latency, ${PROBE_PAUSE_MS} ms between requests, for ${D}s"
idle_line="$(BENCH_PAUSE_MS=$PROBE_PAUSE_MS wrk_result "$TMP/wrk-probe-idle.txt" wrk -t1 -c"$PROBE_CONNECTIONS" -d"${D}s" --latency \
  -H "Cookie: latchkey_session=$SESSION_COOKIE" -s "$TMP/report.lua" "$BASE/session")"
log "d. the same while wrk -t2 -c$FLOOD_CONNECTIONS floods sign-ins (10 × the $HASH_SLOTS hash slots)"
wrk -t2 -c"$FLOOD_CONNECTIONS" -d"$((D + 4))s" --timeout 10s -s "$TMP/login.lua" "$BASE/login" \
  >"$TMP/wrk-flood.txt" 2>&1 &
flood_pid=$!
background_pids+=("$flood_pid")
sleep 2
waiting="$(curl -fsS "$BASE/metrics" | awk '$1 == "latchkey_password_hash_waiting" { print $2 }')"
RSS_LOADED_KB="$(ps -o rss= -p "$server_pid" | tr -d ' ')"
loaded_line="$(BENCH_PAUSE_MS=$PROBE_PAUSE_MS wrk_result "$TMP/wrk-probe-loaded.txt" wrk -t1 -c"$PROBE_CONNECTIONS" -d"${D}s" --latency \
  -H "Cookie: latchkey_session=$SESSION_COOKIE" -s "$TMP/report.lua" "$BASE/session")"
wait "$flood_pid" || die "the sign-in flood (wrk) failed: $(cat "$TMP/wrk-flood.txt")"
last_hash_at=$SECONDS
flood_line="$(grep '^RESULT ' "$TMP/wrk-flood.txt")" || die "the sign-in flood printed no RESULT: $(cat "$TMP/wrk-flood.txt")"
IDLE_P99="$(calc "$(field p99_us "$idle_line") / 1000")"
LOADED_P99="$(calc "$(field p99_us "$loaded_line") / 1000")"
FLOOD_RATE="$(calc "$(field signed_in "$flood_line") / ($(field duration_us "$flood_line") / 1e6)")"
ratio="$(calc "$LOADED_P99 / $IDLE_P99")"
record "d. /session p99 idle vs during a 10× sign-in flood" \
  "$IDLE_P99 ms idle vs $LOADED_P99 ms loaded ($(printf '%.0f' "$(rate "$idle_line")") vs $(printf '%.0f' "$(rate "$loaded_line")") req/s; flood: $FLOOD_RATE sign-ins/s, refused $(field refused "$flood_line"), $waiting hashes waiting)" \
  "$(printf '%.2f' "$ratio")×" "≤ 2×" "$(verdict "$ratio <= 2")"

# ---------------------------------------------------------------- e. memory
session_key="${PREFIX}s:$SESSION_DIGEST"
index_key="${PREFIX}as:$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["sub"])' \
  "$(curl -fsS -H "Cookie: latchkey_session=$SESSION_COOKIE" "$BASE/session")")"
SESSION_BYTES="$(redis-cli -u "$REDIS_URL" memory usage "$session_key" samples 0)"
[[ "$SESSION_BYTES" =~ ^[0-9]+$ ]] || die "redis MEMORY USAGE $session_key gave '$SESSION_BYTES'"
index_bytes="$(redis-cli -u "$REDIS_URL" memory usage "$index_key" samples 0)"
index_members="$(redis-cli -u "$REDIS_URL" scard "$index_key")"
INDEX_SHARE="$(calc "$index_bytes / max($index_members, 1)")"
record "e. Redis bytes per session" \
  "$SESSION_BYTES B session key (+ $(printf '%.0f' "$INDEX_SHARE") B share of the account index of $index_members sessions)" \
  "$SESSION_BYTES B" "≤ 1024 B" "$(verdict "$SESSION_BYTES <= 1024")"
# ---------------------------------------------------------------- f. token endpoint vs oidc-provider
PEER_SECRET="bench-peer-$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
readonly PEER_SECRET
server_cpu=() client_cpu=()
if ((has_taskset)); then
  server_cpu=(taskset -c 1)
  client_cpu=(taskset -c 0)
  taskset -a -p -c 1 "$server_pid" >/dev/null || die "taskset could not pin latchkey to core 1"
fi
"${server_cpu[@]}" node "$REPO/tests/peers/bench-op.mjs" \
  "{\"client_id\": \"bench-peer\", \"client_secret\": \"$PEER_SECRET\"}" \
  >"$TMP/peer.out" 2>"$TMP/peer.log" </dev/null &
peer_pid=$!
for ((i = 0; i < 100; i++)); do
  [[ -s "$TMP/peer.out" ]] && break
  kill -0 "$peer_pid" 2>/dev/null || die "oidc-provider (tests/peers/bench-op.mjs) exited: $(cat "$TMP/peer.log")"
  sleep 0.1
done
PEER_BASE="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["issuer"])' <"$TMP/peer.out")" ||
  die "oidc-provider printed no issuer: $(cat "$TMP/peer.log")"
readonly TOKEN_CONNECTIONS=16
token_bench() { # NAME BASE CLIENT_ID SECRET -> RESULT line of a measured run after a warm-up
  local name=$1 base=$2 id=$3 secret=$4 auth
  auth="Authorization: Basic $(printf '%s:%s' "$id" "$secret" | base64 -w0)"
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" -d grant_type=client_credentials "$base/token")" == 200 ]] ||
    die "$name: client_credentials at $base/token did not answer 200"
  BENCH_BODY=grant_type=client_credentials "${client_cpu[@]}" wrk -t1 -c"$TOKEN_CONNECTIONS" -d2s \
    -H "$auth" -s "$TMP/report.lua" "$base/token" >/dev/null 2>&1 || die "$name: wrk warm-up failed"
  BENCH_BODY=grant_type=client_credentials wrk_result "$TMP/wrk-token-$name.txt" "${client_cpu[@]}" \
    wrk -t1 -c"$TOKEN_CONNECTIONS" -d"${D}s" -H "$auth" -s "$TMP/report.lua" "$base/token"
}
pinning="both on core 1, wrk on core 0"
((has_taskset)) || pinning="not pinned (no taskset or one core)"
log "f. client_credentials at /token, Latchkey vs oidc-provider ($pinning): wrk -t1 -c$TOKEN_CONNECTIONS for ${D}s each"
latchkey_line="$(token_bench latchkey "$BASE" "$CLIENT_ID" "$CLIENT_SECRET")"
peer_line="$(token_bench oidc-provider "$PEER_BASE" bench-peer "$PEER_SECRET")"
# The floor under any endpoint on that core: Latchkey's /healthz, same wrk settings.
floor_line="$(wrk_result "$TMP/wrk-healthz-pinned.txt" "${client_cpu[@]}" \
  wrk -t1 -c"$TOKEN_CONNECTIONS" -d"${PHASE}s" -s "$TMP/report.lua" "$BASE/healthz")"
LATCHKEY_TOKEN_RATE="$(rate "$latchkey_line")"
PEER_TOKEN_RATE="$(rate "$peer_line")"
FLOOR_RATE="$(rate "$floor_line")"
token_errors=$(($(field non2xx "$latchkey_line") + $(field errors "$latchkey_line") + $(field non2xx "$peer_line") + $(field errors "$peer_line")))
ratio="$(calc "$LATCHKEY_TOKEN_RATE / $PEER_TOKEN_RATE")"
record "f. token endpoint (client_credentials) req/s, Latchkey vs npm oidc-provider 9" \
  "$(printf '%.0f' "$LATCHKEY_TOKEN_RATE") vs $(printf '%.0f' "$PEER_TOKEN_RATE") ($pinning; non-200: $token_errors; Latchkey's /healthz there: $(printf '%.0f' "$FLOOR_RATE") req/s, $(printf '%.1f' "$(calc "$FLOOR_RATE / $PEER_TOKEN_RATE")")× oidc-provider)" \
  "$(printf '%.2f' "$ratio")×" "≥ 5×" "$(verdict "$ratio >= 5")"

# ---------------------------------------------------------------- e. idle memory
# Idle: no request for a few seconds, and no hash for longer than the hash pool keeps
# unused buffers (10 s, checked every 5 s).
stop_pid "$peer_pid"
peer_pid=''
sleep 3
if ((SECONDS - last_hash_at < 17)); then
  sleep $((17 - (SECONDS - last_hash_at)))
fi
RSS_IDLE_KB="$(ps -o rss= -p "$server_pid" | tr -d ' ')"
mb() { printf '%.1f' "$(calc "$1 / 1024")"; }
record "e. resident memory of the idle server" \
  "$(mb "$RSS_START_KB") MB after start-up, $(mb "$RSS_LOADED_KB") MB during the sign-in flood, $(mb "$RSS_IDLE_KB") MB idle after all the load" \
  "$(mb "$RSS_IDLE_KB") MB" "≤ 50 MB" "$(verdict "$RSS_IDLE_KB <= 50 * 1024")"

# ---------------------------------------------------------------- summary
busy_ticks=$(($(machine_busy) - busy_before))
ours_ticks=$(($(ours) - ours_before))
other_share="$(calc "max($busy_ticks - $ours_ticks, 0) / max($busy_ticks, 1) * 100")"
printf '\nLatchkey benchmarks: %s cores, %s s per phase, argon2id m=%s t=%s p=%s, %s hash slots\n' \
  "$CORES" "$D" "$ARGON2_M" "$ARGON2_T" "$ARGON2_P" "$HASH_SLOTS"
printf 'Other processes used %.0f%% of the CPU time spent on this machine during the run (near 0 on a quiet machine).\n' \
  "$other_share"
{
  printf 'target|measured|goal|verdict\n'
  printf '%s\n' "${results[@]}"
} | awk -F'|' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > width[i]) width[i] = length($i) } }
  END {
    format = "%-" width[1] "s  %-" width[2] "s  %-" width[3] "s  %s\n"
    for (r = 1; r <= NR; r++) printf format, cell[r, 1], cell[r, 2], cell[r, 3], cell[r, 4]
  }'
misses=0
for row in "${results[@]}"; do
  [[ "$row" == *"|MISS" ]] && misses=$((misses + 1))
done
printf '%s of %s targets met\n' "$((${#results[@]} - misses))" "${#results[@]}"
