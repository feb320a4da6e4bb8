#!/usr/bin/env bash
# Load harness: wrk against tokengate in front of a loopback upstream, reported as ratios against a
# plain passthrough through the same gateway, measured in the same run.
#
#   bash benches/load.sh     # DURATION=5 ROUNDS=3 CONNECTIONS=32 to change the defaults
#
# The runs below are interleaved ROUNDS times (so that a noisy neighbour hurts all of them alike)
# and the median of each is reported; each is DURATION seconds of wrk -t1 -cCONNECTIONS, keep-alive:
#   upstream     wrk -> echo_upstream                       (the floor: no proxy)
#   passthrough  wrk -> tokengate (no route, streamed)      -> echo_upstream   (baseline)
#   to_basic     wrk -> tokengate (/{env}/as/token, post->basic) -> echo_upstream
#   to_post      wrk -> tokengate (/{env}/as/token, basic->post) -> echo_upstream
# Everything binds 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
UP_PORT=${UP_PORT:-19000}
GW_PORT=${GW_PORT:-18080}
GW2_PORT=${GW2_PORT:-18081}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)"; exit 1; }

cargo build --release --quiet --bin tokengate --example echo_upstream
BIN=target/release/tokengate
ECHO=target/release/examples/echo_upstream
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# Two cores: the gateway on CPU 0, the load generator and the upstream on CPU 1.
# Always called in a subshell (`&` or `$(...)`): exec, so that $! is the program's own PID.
pin() { if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }

wait_port() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

gateway_conf() { # port mode
  cat > "$tmp/gw-$2.toml" <<TOML
default_upstream = "up"
[server]
listen = ["127.0.0.1:$1"]
threads = 1
[upstreams.up]
url = "http://127.0.0.1:$UP_PORT"
[[routes]]
path = "/{env_id}/as/token"
mode = "$2"
TOML
  echo "$tmp/gw-$2.toml"
}

pin 1 "$ECHO" "$UP_PORT" --quiet 2>/dev/null & pids+=($!)
TOKENGATE_LOG=warn pin 0 "$BIN" run --config "$(gateway_conf "$GW_PORT" to_basic)" 2>"$tmp/gw1.log" & pids+=($!)
TOKENGATE_LOG=warn pin 0 "$BIN" run --config "$(gateway_conf "$GW2_PORT" to_post)" 2>"$tmp/gw2.log" & pids+=($!)
wait_port "$UP_PORT"; wait_port "$GW_PORT"; wait_port "$GW2_PORT"

ENV=5a0b3c2d-1111-2222-3333-444455556666
POST_BODY="grant_type=authorization_code&code=c0de-%7B%7BpostAuthCode%7D%7D&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback&client_id=$ENV&client_secret=Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3dE5fG6hJ8"
BASIC=$(printf '%s:%s' "$ENV" 'Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3dE5fG6hJ8' | base64 -w0)

lua() { # file body [basic-credentials]
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = \"$2\""
    echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
    if [ -n "${3:-}" ]; then echo "wrk.headers[\"Authorization\"] = \"Basic $3\""; fi
  } > "$1"
}
lua "$tmp/post.lua" "$POST_BODY"
lua "$tmp/basic.lua" "grant_type=authorization_code&code=c0de&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback" "$BASIC"

run() { # name url script -> prints req/s
  local out
  out=$(pin 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$3" "$2")
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  if [ -n "$non2xx" ] || grep -q "Socket errors" <<<"$out"; then echo "$1: errors during run:"; echo "$out"; exit 1; fi
  printf '%s %s %s\n' "$1" "$rps" "$p99"
}

# Warm up connections and caches.
(pin 1 wrk -t1 -c"$CONNECTIONS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:$GW_PORT/$ENV/as/token" >/dev/null)

raw=$(
  for _ in $(seq 1 "$ROUNDS"); do
    run upstream    "http://127.0.0.1:$UP_PORT/$ENV/as/token"         "$tmp/post.lua"
    run passthrough "http://127.0.0.1:$GW_PORT/$ENV/as/introspect"    "$tmp/post.lua"
    run to_basic    "http://127.0.0.1:$GW_PORT/$ENV/as/token"         "$tmp/post.lua"
    run to_post     "http://127.0.0.1:$GW2_PORT/$ENV/as/token"        "$tmp/basic.lua"
  done
)
echo "$raw" | sed 's/^/  round: /'
# Median req/s (and its p99) per run name, in first-seen order.
results=$(for name in upstream passthrough to_basic to_post; do
  awk -v n="$name" '$1==n' <<<"$raw" | sort -k2,2n | awk -v r="$ROUNDS" 'NR==int((r+1)/2)'
done)
base=$(awk '$1=="passthrough" {print $2}' <<<"$results")
echo
printf '%-12s %12s %10s %22s\n' run req/s p99 "ratio vs passthrough"
awk -v base="$base" '{ printf "%-12s %12.0f %10s %22.2f\n", $1, $2, $3, $2/base }' <<<"$results"
echo "(median of $ROUNDS interleaved rounds of wrk -t1 -c$CONNECTIONS -d${DURATION}s; gateway threads=1 on CPU 0, wrk and upstream on CPU 1)"
