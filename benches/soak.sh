#!/usr/bin/env bash
# Soak run: DURATION seconds (default 600) of mixed traffic against the release binary in front of a
# loopback upstream, on validating routes with a client file of sha256 and argon2id records:
#
#   bash benches/soak.sh                  # 10 minutes
#   DURATION=60 bash benches/soak.sh      # a quick check
#
# benches/soak_driver.py (Python 3 standard library) drives it:
#   - legitimate clients on 127.0.0.1, each with its own client_id and right secret (post and Basic,
#     token and introspection), LEGIT_THREADS threads at LEGIT_RATE requests/s each: every answer
#     must be 200;
#   - attackers: wrong secrets for the legitimate clients' ids, unknown client_ids, malformed
#     bodies and Basic headers, stalled bodies (from 127.0.0.2); heads trickled a byte a second,
#     connections that send nothing, idle kept-alive connections (from 127.0.0.3);
#   - SIGHUP to the gateway every 10 s (same configuration); the client file rewritten atomically
#     every 30 s (write + rename, one extra record toggled).
# It reports failed legitimate requests (goal 0), what the attackers got, the gateway's RSS and open
# file descriptors after the warm-up (WARMUP, default min(60 s, DURATION / 5)) and at the end
# (medians of 1-s samples over 10 s; goal: flat within 10 %), its CPU time per request answered,
# and its own metrics; prints a summary, writes it as JSON (SOAK_JSON, default
# target/soak/soak-DATE.json) and exits non-zero when a legitimate request failed, RSS or fds grew
# more than 10 %, or the gateway died.
#
# Settings (environment): DURATION WARMUP LEGIT_THREADS LEGIT_RATE GW_PORT ADMIN_PORT UP_PORT
# SOAK_JSON. The rest of the environment reaches the gateway too: MALLOC_MMAP_THRESHOLD_=1048576
# shows its RSS without glibc keeping argon2id's 19 MiB buffers (README, "Soak"). The gateway's
# configuration, client file, log and the summary stay in target/soak/run-DATE/. Everything
# listens on loopback; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
WARMUP=${WARMUP:-$(( DURATION / 5 < 60 ? DURATION / 5 : 60 ))}
LEGIT_THREADS=${LEGIT_THREADS:-4}
LEGIT_RATE=${LEGIT_RATE:-25}
UP_PORT=${UP_PORT:-19410}
GW_PORT=${GW_PORT:-18410}
ADMIN_PORT=${ADMIN_PORT:-19411}
stamp=$(date +%Y%m%d-%H%M%S)
SOAK_JSON=${SOAK_JSON:-target/soak/soak-$stamp.json}
command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
if [ "$DURATION" -lt 20 ]; then echo "DURATION must be at least 20 s"; exit 1; fi

for port in "$UP_PORT" "$GW_PORT" "$ADMIN_PORT"; do
  if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
    echo "port $port is in use (set UP_PORT, GW_PORT, ADMIN_PORT)"; exit 1
  fi
done

nice -n 5 cargo build --release --locked --quiet --bin tokengate --example echo_upstream
BIN=target/release/tokengate
ECHO=target/release/examples/echo_upstream
dir=target/soak/run-$stamp
mkdir -p "$dir"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Connects and closes without sending a byte (a stray newline would be logged as a bad request).
wait_port() { for _ in $(seq 1 200); do (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

python3 benches/soak_driver.py prepare --dir "$dir" --bin "$BIN" \
  --gw-port "$GW_PORT" --admin-port "$ADMIN_PORT" --up-port "$UP_PORT"
"$BIN" check-config "$dir/gateway.toml" >/dev/null

"$ECHO" "$UP_PORT" --quiet 2>"$dir/upstream.log" & pids+=($!)
TOKENGATE_LOG=${TOKENGATE_LOG:-info} "$BIN" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" & gw=$!
pids+=("$gw")
wait_port "$UP_PORT"; wait_port "$GW_PORT"; wait_port "$ADMIN_PORT"

echo "soak: gateway pid $gw, logs and configuration in $dir"
status=0
# In the background and waited for, so that a SIGTERM to this script stops it too (a foreground
# child would hold the traps back until it ended).
python3 benches/soak_driver.py run --dir "$dir" --pid "$gw" --gw-port "$GW_PORT" \
  --admin-port "$ADMIN_PORT" --duration "$DURATION" --warmup "$WARMUP" \
  --legit-threads "$LEGIT_THREADS" --legit-rate "$LEGIT_RATE" \
  --json "$SOAK_JSON" --log "$dir/gateway.log" \
  --command "DURATION=$DURATION bash benches/soak.sh" & driver=$!
pids=("$driver" "${pids[@]}")
wait "$driver" || status=$?
cp "$SOAK_JSON" "$dir/summary.json" 2>/dev/null || true
exit "$status"
