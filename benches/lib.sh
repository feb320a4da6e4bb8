# shellcheck shell=bash
# Shared by benches/load.sh and benches/breakdown.sh (sourced, never run): the tools, the build,
# the token request, and starting, checking, measuring and stopping the servers under test.
#
# The caller has `set -euo pipefail`, runs from the repository root, and sets $tmp (a directory of
# its own) before starting anything. Every process started here is recorded in STARTED and stopped
# by PID by stop_all (the caller traps EXIT). Everything binds 127.0.0.1.
#
# Variables set here are read by the callers, and $tmp is the caller's:
# shellcheck disable=SC2034,SC2154

PEERS="$PWD/benches/peers"
LUA_MODULES=/usr/lib/nginx/modules
CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
SERVER_CPU=0 # every server under test, and the upstream they share
LOAD_CPU=1   # wrk
BASE_PORT=${BASE_PORT:-19100}
UP_PORT=$BASE_PORT
STARTED=()
declare -A T_PIDS=() T_PORT=()

# --- the tools -------------------------------------------------------------------------------

# Installs what is missing with apt-get (needs root). Extra "command:package" pairs as arguments.
ensure_tools() {
  local need=() pair
  command -v nginx >/dev/null || need+=(nginx)
  [ -f "$LUA_MODULES/ngx_http_lua_module.so" ] || need+=(libnginx-mod-http-lua)
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v redis-server >/dev/null || need+=(redis-server)
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "need root to apt-get install ${need[*]}" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  if [ "$NPROC" -lt 2 ]; then
    echo "warning: $NPROC CPU: servers and wrk share it (figures are not comparable to 2-core runs)" >&2
  fi
}

# Moves this script (and so every tool it starts later: wrk, strace, perf, curl) to LOAD_CPU, so
# that nothing but the servers under test runs on SERVER_CPU.
pin_self() {
  if [ "$NPROC" -ge 2 ]; then taskset -pc "$LOAD_CPU" $$ >/dev/null; fi
}

build() {
  echo "cargo build --release (tokengate, examples/pingora_hop)" >&2
  cargo build --release --quiet --bin tokengate --example pingora_hop
}

# --- the request: PingOne's client_secret_post sample ------------------------------------------
# (../shared/reference/pingone-token-post-auth.txt: curl --data-urlencode of grant_type, code,
# redirect_uri, client_id, client_secret), with concrete values. Two clients: one whose record
# holds a salted SHA-256 of its secret, one an argon2id hash. The secrets carry `~`, which
# RFC 6749 §2.3.1's form-urlencoding turns into %7E inside Basic: the conversion is visible.

ENV_ID=5a0b3c2d-1111-2222-3333-444455556666 # the envID of the measured requests
CHECK_ENV=bench-check                       # the envID of the conversion checks (echoed upstream)
SHA_ID=6f2d1c84-2b1e-4a57-9d0e-1c3b5a7e9f10
SHA_SECRET='Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3dE5fG6hJ8'
ARGON_ID=9b7e4f21-3c5d-4e6f-8a9b-0c1d2e3f4a5b
ARGON_SECRET='Qw3.eR~5tY-u7iO9pA1sD2fG4hJ6kL8zX0cV3bN5'
PARAMS='grant_type=authorization_code&code=00e7f5a2-2f4b-4d7e-8c5d-7e9b1a3c6f21&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback'

# curl --data-urlencode's encoding (RFC 3986 unreserved kept). ASCII input.
url_encode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

# application/x-www-form-urlencoded (RFC 6749 Appendix B, WHATWG byte serializer). ASCII input.
form_encode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9*._-]) out+=$c ;;
      ' ') out+='+' ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

post_body() { printf '%s&client_id=%s&client_secret=%s' "$PARAMS" "$(url_encode "$1")" "$(url_encode "$2")"; }
basic_of() { printf '%s:%s' "$(form_encode "$1")" "$(form_encode "$2")" | base64 -w0; }

# request NAME -> "authorization-header-value|body" (empty header: none)
request_of() {
  case $1 in
    post_sha) printf '|%s' "$(post_body "$SHA_ID" "$SHA_SECRET")" ;;
    post_argon) printf '|%s' "$(post_body "$ARGON_ID" "$ARGON_SECRET")" ;;
    basic_sha) printf 'Basic %s|%s' "$(basic_of "$SHA_ID" "$SHA_SECRET")" "$PARAMS" ;;
    post_wrong) printf '|%s' "$(post_body "$SHA_ID" "wrong-$SHA_SECRET")" ;;
    *) echo "unknown request $1" >&2; return 1 ;;
  esac
}

# What the upstream must receive: "authorization|body" for request NAME under conversion EXPECT
# (unchanged, basic: post -> Basic, post: Basic -> post).
expected_upstream() {
  local id secret
  case $1 in
    post_argon) id=$ARGON_ID secret=$ARGON_SECRET ;;
    *) id=$SHA_ID secret=$SHA_SECRET ;;
  esac
  case $2 in
    unchanged) request_of "$1" ;;
    basic) printf 'Basic %s|%s' "$(basic_of "$id" "$secret")" "$PARAMS" ;;
    post) printf '|%s&client_id=%s&client_secret=%s' "$PARAMS" "$(form_encode "$id")" "$(form_encode "$secret")" ;;
  esac
}

# A wrk script sending request NAME on every request (static: wrk builds it once).
wrk_script() { # name file
  local req auth body
  req=$(request_of "$1")
  auth=${req%%|*}
  body=${req#*|}
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = \"$body\""
    echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
    if [ -n "$auth" ]; then echo "wrk.headers[\"Authorization\"] = \"$auth\""; fi
  } >"$2"
}

# The same, stopping after COUNT responses and then writing MARKER (a fixed-count run, for strace,
# heaptrack and /proc figures: the caller waits for the marker, stops its tool, then stops wrk).
wrk_count_script() { # name count marker file
  wrk_script "$1" "$4"
  cat >>"$4" <<LUA
local done_count = 0
function response(status, headers, body)
  done_count = done_count + 1
  if done_count == $2 then
    local f = io.open("$3", "w")
    f:write(done_count)
    f:close()
    wrk.thread:stop()
  end
end
LUA
}

# --- the targets ---------------------------------------------------------------------------------
# name -> "request conversion"; the port of each is fixed by its place in ALL_TARGETS.

ALL_TARGETS=(upstream nginx_proxy nginx_lua pingora_hop passthrough to_basic to_post
  validate_sha256 validate_argon2id to_basic_t2 to_basic_t2_free validate_redis refuse_local
  refuse_redis passthrough_base to_basic_base)
# The lockout store of the *_redis targets (a redis-server of its own, on the upstream's CPU).
REDIS_PORT=$((BASE_PORT + 50))

target_request() {
  case $1 in
    upstream | nginx_proxy | pingora_hop | passthrough | passthrough_base) echo "post_sha unchanged" ;;
    nginx_lua | to_basic | to_basic_t2 | to_basic_t2_free | to_basic_base | validate_sha256)
      echo "post_sha basic"
      ;;
    validate_argon2id) echo "post_argon basic" ;;
    validate_redis) echo "post_sha basic" ;;
    refuse_local | refuse_redis) echo "post_wrong refused" ;;
    to_post) echo "basic_sha post" ;;
    *) echo "unknown target $1" >&2; return 1 ;;
  esac
}

port_of() {
  local i
  for i in "${!ALL_TARGETS[@]}"; do
    if [ "${ALL_TARGETS[$i]}" = "$1" ]; then echo $((BASE_PORT + i)); return; fi
  done
  echo "unknown target $1" >&2
  return 1
}

# Run in a subshell (`( pin ... ) &` or `$(pin ...)`): exec, so that $! is the program's own PID.
pin() { # cpu-list command...
  if [ "$NPROC" -ge 2 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi
}

port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name pid
  local _
  for _ in $(seq 1 200); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    alive "$3" || { echo "$2 exited before listening on $1 (logs in $tmp)" >&2; exit 1; }
    sleep 0.05
  done
  echo "$2 never listened on port $1 (logs in $tmp)" >&2
  exit 1
}

alive() { # pid: running (not gone, not a zombie)
  local state
  state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

stop_all() {
  local p _
  for p in "${STARTED[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do
    for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
}

nginx_modules() {
  printf 'load_module %s/ndk_http_module.so; load_module %s/ngx_http_lua_module.so;' \
    "$LUA_MODULES" "$LUA_MODULES"
}

# render_nginx NAME TEMPLATE PORT: a prefix of its own under $tmp with the rendered nginx.conf.
render_nginx() {
  local prefix="$tmp/$1"
  mkdir -p "$prefix/logs"
  sed -e "s|@MODULES@|$(nginx_modules)|" -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$3|g" \
    -e "s|@UPSTREAM@|127.0.0.1:$UP_PORT|g" -e "s|@LUA@|$PEERS/post_to_basic.lua|g" \
    "$PEERS/$2" >"$prefix/nginx.conf"
  nginx -q -t -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log"
}

# The client file of the validate targets: each client in the measured and the check envID.
write_clients() {
  local sha argon env
  sha=$(printf '%s' "$SHA_SECRET" | target/release/tokengate hash-secret --algorithm sha256)
  argon=$(printf '%s' "$ARGON_SECRET" | target/release/tokengate hash-secret --algorithm argon2id)
  for env in "$ENV_ID" "$CHECK_ENV"; do
    cat <<TOML
[[clients]]
env_id = "$env"
client_id = "$SHA_ID"
$sha
auth_methods = ["client_secret_post", "client_secret_basic"]
upstream_method = "client_secret_basic"
grant_types = ["authorization_code", "refresh_token"]

[[clients]]
env_id = "$env"
client_id = "$ARGON_ID"
$argon
auth_methods = ["client_secret_post", "client_secret_basic"]
upstream_method = "client_secret_basic"
grant_types = ["authorization_code", "refresh_token"]

TOML
  done >"$tmp/clients.toml"
}

# tokengate_conf NAME MODE PORT THREADS [LOCKOUT]: writes $tmp/NAME.toml (checked with
# check-config). LOCKOUT "local" or "redis": thresholds out of reach (every wrong secret is
# counted and verified, none locked), counted in the process or in the harness's redis-server.
tokengate_conf() {
  local conf="$tmp/$1.toml"
  cat >"$conf" <<TOML
default_upstream = "up"
[server]
listen = ["127.0.0.1:$3"]
threads = $4
[upstreams.up]
url = "http://127.0.0.1:$UP_PORT"
[[routes]]
name = "token"
path = "/{env_id}/as/token"
mode = "$2"
TOML
  if [ "$2" = validate ]; then
    [ -f "$tmp/clients.toml" ] || write_clients
    printf '[clients]\nfile = "clients.toml"\n' >>"$conf"
  fi
  if [ -n "${5:-}" ]; then
    printf '[lockout]\nmax_failures_per_client = 4294967295\nmax_failures_per_ip = 4294967295\n' >>"$conf"
  fi
  if [ "${5:-}" = redis ]; then
    printf 'store = "redis://127.0.0.1:%s/0"\nstore_key_prefix = "tokengate-bench"\n' "$REDIS_PORT" >>"$conf"
  fi
  target/release/tokengate check-config "$conf" >/dev/null
}

# server_cmd NAME PORT [SINGLE]: sets CMD (the server's command line) and CPUS (where it runs).
# SINGLE=1 runs nginx without a master process (one process, for heaptrack's LD_PRELOAD).
server_cmd() {
  local name=$1 port=$2 single=${3:-0} nginx_g='daemon off;'
  CPUS=$SERVER_CPU
  [ "$single" = 1 ] && nginx_g='daemon off; master_process off;'
  case $name in
    upstream | nginx_proxy | nginx_lua)
      case $name in
        upstream) render_nginx "$name" upstream.conf.in "$port" ;;
        nginx_proxy) render_nginx "$name" proxy_pass.conf.in "$port" ;;
        nginx_lua) render_nginx "$name" lua.conf.in "$port" ;;
      esac
      CMD=(nginx -p "$tmp/$name" -c "$tmp/$name/nginx.conf" -e "$tmp/$name/logs/error.log" -g "$nginx_g")
      ;;
    pingora_hop) CMD=(target/release/examples/pingora_hop "$port" "127.0.0.1:$UP_PORT") ;;
    passthrough | to_basic | to_post) tokengate_conf "$name" "$name" "$port" 1 ;;
    validate_sha256 | validate_argon2id) tokengate_conf "$name" validate "$port" 1 ;;
    validate_redis | refuse_redis) tokengate_conf "$name" validate "$port" 1 redis ;;
    refuse_local) tokengate_conf "$name" validate "$port" 1 local ;;
    to_basic_t2) tokengate_conf "$name" to_basic "$port" 2 ;;
    passthrough_base | to_basic_base) tokengate_conf "$name" "${name%_base}" "$port" 1 ;;
    to_basic_t2_free) tokengate_conf "$name" to_basic "$port" 2 && CPUS="0-$((NPROC - 1))" ;;
    *) echo "unknown target $name" >&2; exit 1 ;;
  esac
  if [ -f "$tmp/$name.toml" ]; then
    CMD=(target/release/tokengate run --config "$tmp/$name.toml")
  fi
  if [[ $name == *_base ]]; then
    CMD=("${BASE_BIN:?set BASE_BIN to the baseline build of tokengate}" run --config "$tmp/$name.toml")
  fi
}
# No access line per request (nginx runs with access_log off; the hop logs nothing). Exported, not
# passed through env(1): heaptrack's LD_PRELOAD does not survive an exec.
export TOKENGATE_LOG=warn

# launch NAME PORT CPU-LIST COMMAND...: starts it pinned, records it, waits for the port; the
# PID is in LAUNCHED, stderr in $tmp/NAME.log.
launch() {
  local name=$1 port=$2 cpus=$3
  shift 3
  port_free "$port" || { echo "port $port is taken (set BASE_PORT)" >&2; exit 1; }
  (pin "$cpus" "$@" >>"$tmp/$name.log" 2>&1) &
  LAUNCHED=$!
  STARTED+=("$LAUNCHED")
  wait_port "$port" "$name" "$LAUNCHED"
}

# start_redis: the lockout store of the *_redis targets, without persistence, on the servers' CPU.
start_redis() {
  launch redis "$REDIS_PORT" "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no
  T_PIDS[redis]=$LAUNCHED
}

# start_target NAME: starts the target's server (the upstream first: start_target upstream);
# sets T_PIDS[NAME] (every process of it: an nginx master and its worker) and T_PORT[NAME].
start_target() {
  local name=$1 port workers _
  port=$(port_of "$name")
  server_cmd "$name" "$port"
  launch "$name" "$port" "$CPUS" "${CMD[@]}"
  T_PIDS[$name]=$LAUNCHED
  T_PORT[$name]=$port
  if [ "${CMD[0]}" = nginx ]; then
    for _ in $(seq 1 100); do
      workers=$(children_of "$LAUNCHED")
      [ -n "$workers" ] && break
      sleep 0.02
    done
    [ -n "$workers" ] || { echo "$name: no worker process" >&2; exit 1; }
    # shellcheck disable=SC2206 # PIDs: split on whitespace
    STARTED+=($workers)
    T_PIDS[$name]="$LAUNCHED $(echo "$workers" | tr '\n' ' ')"
  fi
}

# --- checks and measurements ---------------------------------------------------------------------

# One request to the check envID (the upstream echoes what it received) and one to the measured
# envID; fails loudly unless both are 200 and the upstream saw the expected conversion.
check_target() { # NAME
  local name=$1 port=${T_PORT[$1]} spec req exp auth body out want args
  spec=$(target_request "$name")
  if [ "${spec#* }" = refused ]; then
    # A wrong secret: verified (a failure counted) and refused, never forwarded.
    out=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/x-www-form-urlencoded' \
      --data-binary "$(request_of "${spec% *}" | cut -d'|' -f2-)" "http://127.0.0.1:$port/$ENV_ID/as/token")
    if [ "$out" != 401 ]; then
      echo "CHECK FAILED: $name answered $out to a wrong secret (401 expected)" >&2
      exit 1
    fi
    return 0
  fi
  req=$(request_of "${spec% *}")
  exp=$(expected_upstream "${spec% *}" "${spec#* }")
  auth=${req%%|*}
  body=${req#*|}
  args=(-sS -m 10 -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$body")
  if [ -n "$auth" ]; then args+=(-H "Authorization: $auth"); fi
  out=$(curl "${args[@]}" -w '\nstatus=%{http_code}' "http://127.0.0.1:$port/$CHECK_ENV/as/token")
  want=$(printf 'authorization=%s\ncontent_length=%s\nbody=%s\n\nstatus=200' \
    "${exp%%|*}" "$(printf '%s' "${exp#*|}" | wc -c)" "${exp#*|}")
  if [ "$out" != "$want" ]; then
    printf 'CHECK FAILED: %s (%s): the upstream received\n%s\nexpected\n%s\n' "$name" "$spec" "$out" "$want" >&2
    exit 1
  fi
  out=$(curl "${args[@]}" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/$ENV_ID/as/token")
  if [ "$out" != 200 ]; then
    echo "CHECK FAILED: $name answered $out on the measured path" >&2
    exit 1
  fi
}

# Sum of utime+stime (clock ticks) of the given PIDs (whole processes: all their threads).
ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")
    t=$((t + v))
  done
  echo "$t"
}

# Sum of VmHWM (kB) of the given PIDs.
hwm_kb() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status")
    t=$((t + v))
  done
  echo "$t"
}

# wrk output -> "requests rps p50_ms p99_ms"; fails loudly on non-2xx answers or socket errors.
parse_wrk() { # name output (refuse_* targets answer 401 by design: only socket errors fail them)
  local bad=(-e 'Socket errors')
  [[ $1 == refuse_* ]] || bad+=(-e 'Non-2xx')
  if grep -q "${bad[@]}" <<<"$2"; then
    printf 'RUN FAILED: %s: errors during the run:\n%s\n' "$1" "$2" >&2
    exit 1
  fi
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return v + 0
    }
    $2 == "requests" && $3 == "in" { n = $1 }
    $1 == "Requests/sec:" { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END {
      if (n == "" || n == 0 || rps == "") { print "no requests" > "/dev/stderr"; exit 1 }
      printf "%d %.1f %.3f %.3f\n", n, rps, p50, p99
    }' <<<"$2"
}
