#!/usr/bin/env bash
# Side-by-side load harness (issue 13, point 1): tokengate against what a user would deploy
# instead, measured in one run, on the same request, the same upstream and the same core.
#
#   bash benches/load.sh                        # 5 interleaved rounds of 10 s (about 10 minutes)
#   ROUNDS=1 DURATION=2 bash benches/load.sh    # quick check that everything runs
#
# Environment: ROUNDS (5), DURATION seconds per run (10), CONNECTIONS (32), WARMUP seconds per
# target before the rounds (2), TARGETS (space-separated, default below), BASE_PORT (19100; the
# targets take the ports after it), OUT (the JSON file; default target/bench/load-DATE.json).
#
# Targets (every server 1 worker / 1 thread, pinned to CPU 0 with the upstream; wrk -t1 on CPU 1):
#   upstream           wrk -> tiny nginx `return 200` with a token JSON (the floor: no proxy)
#   nginx_proxy        wrk -> nginx proxy_pass, upstream keepalive pool -> upstream (the reference)
#   nginx_lua          wrk -> nginx + benches/peers/post_to_basic.lua (post -> Basic) -> upstream
#   pingora_hop        wrk -> examples/pingora_hop (ProxyHttp forwarding unchanged) -> upstream
#   passthrough        wrk -> tokengate, route mode passthrough -> upstream
#   to_basic           wrk -> tokengate, mode to_basic (post -> Basic) -> upstream
#   to_post            wrk -> tokengate, mode to_post (the Basic equivalent -> post) -> upstream
#   validate_sha256    wrk -> tokengate, mode validate, salted SHA-256 record, upstream_method Basic
#   validate_argon2id  wrk -> tokengate, mode validate, argon2id record (verified once, remembered)
# Opt-in (TARGETS=...): to_basic_t2 (server.threads = 2, pinned to CPU 0), to_basic_t2_free
# (threads = 2 on both CPUs, sharing wrk's); the lockout store's cost (a redis-server is started,
# pinned with the upstream):
#   validate_redis     validate_sha256 with [lockout] store = Redis (remembered secret: no call)
#   refuse_local       a wrong secret every time, thresholds out of reach: every request reserves a
#                      failure in the process's counters, verifies (sha256) and answers 401
#   refuse_redis       the same with the failures counted in Redis: one round trip per request
# (their "upstream CPU" column includes redis-server's CPU)
#   passthrough_base, to_basic_base: the same as passthrough and to_basic, run by another build of
#                      tokengate (BASE_BIN=path/to/tokengate, e.g. main before a change): before and
#                      after in one run
#
# The request is PingOne's client_secret_post token sample (see benches/lib.sh); to_post gets its
# Basic equivalent. Before measuring, one request per target to a check envID that the upstream
# echoes proves the conversion (Basic seen upstream, credentials gone from the body, or the
# reverse); any non-2xx answer or socket error during a run fails the run.
#
# Per target: median req/s and its spread (min-max), medians of wrk's p50/p99 latency, the CPU time
# (utime+stime from /proc/PID/stat, all processes and threads of the target) per request over each
# run, the upstream's CPU per request separately, peak RSS (VmHWM, summed over the target's
# processes: nginx master + worker), and ratios to nginx_proxy. Rounds are interleaved, each in a
# rotated order, so a noisy neighbour hurts every target alike. A req/s spread above 25% of the
# median flags the run as disturbed; a round whose p99 is over 10x the median p99 is named (the
# JSON keeps every round, and each target's worst-round p99). Loopback only; every process started
# here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
DEFAULT_TARGETS="upstream nginx_proxy nginx_lua pingora_hop passthrough to_basic to_post validate_sha256 validate_argon2id"
read -r -a TARGETS <<<"${TARGETS:-$DEFAULT_TARGETS}"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-target/bench/load-$STAMP.json}

# shellcheck source=benches/lib.sh
source benches/lib.sh

tmp=$(mktemp -d /tmp/tokengate-load.XXXXXX)
finish() {
  local rc=$?
  stop_all
  if [ "$rc" -eq 0 ]; then rm -rf "$tmp"; else echo "failed ($rc); logs kept in $tmp" >&2; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2119 # no extra tools
ensure_tools
build
pin_self

start_target upstream
if [[ " ${TARGETS[*]} " == *_redis\ * ]]; then start_redis; fi
for t in "${TARGETS[@]}"; do
  if [ "$t" != upstream ]; then start_target "$t"; fi
done
UP_PIDS=${T_PIDS[upstream]}

for r in post_sha post_argon basic_sha post_wrong; do wrk_script "$r" "$tmp/$r.lua"; done

echo "checking that every target answers 200 and converts (upstream echo):" >&2
for t in "${TARGETS[@]}"; do
  check_target "$t"
  echo "  $t: ok ($(target_request "$t"))" >&2
done

# run NAME SECONDS -> "requests rps p50 p99 cpu_us_per_request upstream_cpu_us_per_request"
# (for the *_redis targets the upstream column includes redis-server's CPU: what they depend on)
run() {
  local name=$1 seconds=$2 spec out before up_before after up_after pids parsed deps=$UP_PIDS
  if [[ $name == *_redis ]]; then deps="$deps ${T_PIDS[redis]}"; fi
  spec=$(target_request "$name")
  read -r -a pids <<<"${T_PIDS[$name]}"
  before=$(ticks "${pids[@]}")
  # shellcheck disable=SC2086 # PIDs: split on whitespace
  up_before=$(ticks $deps)
  out=$(pin "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --latency \
    -s "$tmp/${spec% *}.lua" "http://127.0.0.1:${T_PORT[$name]}/$ENV_ID/as/token")
  after=$(ticks "${pids[@]}")
  # shellcheck disable=SC2086
  up_after=$(ticks $deps)
  parsed=$(parse_wrk "$name" "$out")
  awk -v p="$parsed" -v b="$before" -v a="$after" -v ub="$up_before" -v ua="$up_after" \
    -v hz="$CLK_TCK" -v self="$([ "$name" = upstream ] && echo 1 || echo 0)" 'BEGIN {
      split(p, f, " ")
      cpu = (a - b) / hz * 1e6 / f[1]
      up = self ? 0 : (ua - ub) / hz * 1e6 / f[1]
      printf "%s %s %s %s %.2f %.2f\n", f[1], f[2], f[3], f[4], cpu, up
    }'
}

echo "warming up (${WARMUP}s each)" >&2
for t in "${TARGETS[@]}"; do run "$t" "$WARMUP" >/dev/null; done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
raw="$tmp/rounds.tsv"
: >"$raw"
n=${#TARGETS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 0; k < n; k++)); do
    t=${TARGETS[$(((k + round - 1) % n))]}
    line=$(run "$t" "$DURATION")
    printf '%s\t%s\t%s\n' "$round" "$t" "${line// /$'\t'}" >>"$raw"
    printf 'round %d/%d %-18s %s\n' "$round" "$ROUNDS" "$t" "$line" >&2
  done
done

# --- summary -------------------------------------------------------------------------------------
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v t="$1" -v c="$2" '$2 == t { print $c }' "$raw"; }

summary="$tmp/summary.tsv"
: >"$summary"
for t in "${TARGETS[@]}"; do
  read -r -a pids <<<"${T_PIDS[$t]}"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" \
    "$(col "$t" 4 | median)" "$(col "$t" 4 | sort -g | head -1)" "$(col "$t" 4 | sort -g | tail -1)" \
    "$(col "$t" 5 | median)" "$(col "$t" 6 | median)" "$(col "$t" 7 | median)" \
    "$(col "$t" 8 | median)" "$(hwm_kb "${pids[@]}")" >>"$summary"
done

base=$(awk -F'\t' '$1 == "nginx_proxy" { print $2 "\t" $7 }' "$summary")
table=$(awk -F'\t' -v base="$base" '
  BEGIN {
    split(base, b, "\t")
    printf "| target | req/s (median) | min–max | p50 ms | p99 ms | CPU µs/req | upstream CPU µs/req | peak RSS MiB | req/s ratio | CPU/req ratio |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
  }
  {
    rr = (b[1] > 0) ? sprintf("%.2f", $2 / b[1]) : "-"
    cr = (b[2] > 0) ? sprintf("%.2f", $7 / b[2]) : "-"
    up = ($1 == "upstream") ? "(itself)" : sprintf("%.1f", $8)
    printf "| %s | %.0f | %.0f–%.0f | %.2f | %.2f | %.1f | %s | %.1f | %s | %s |\n",
      $1, $2, $3, $4, $5, $6, $7, up, $9 / 1024, rr, cr
  }' "$summary")

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# A run is suspect when some target's req/s spread (max - min) exceeds a quarter of its median:
# something else ran on the machine (the servers and wrk alone keep the load average near 2).
disturbed=$(awk -F'\t' '$2 > 0 && ($4 - $3) / $2 > 0.25 { printf "%s%s (%.0f%%)", sep, $1, 100 * ($4 - $3) / $2; sep = ", " }' "$summary")
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
settings="ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS: wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency on CPU $LOAD_CPU; servers (1 worker / 1 thread) and the upstream on CPU $SERVER_CPU; medians of $ROUNDS interleaved rounds; ratios against nginx_proxy"
echo
echo "$(date) — $NPROC CPUs, $cpu_model — $settings"
echo "$table"
echo "load average (1, 5, 15 min) before the rounds: $LOAD_BEFORE; after: $LOAD_AFTER"
# A latency spike in one round is hidden by the median p99: name it.
awk -F'\t' '{ if ($6 > max[$2]) { max[$2] = $6; at[$2] = $1 } }
  END { for (t in max) print t, max[t], at[t] }' "$raw" | while read -r t worst round; do
  med=$(awk -F'\t' -v t="$t" '$1 == t { print $6 }' "$summary")
  if awk -v w="$worst" -v m="$med" 'BEGIN { exit !(w > 10 * m) }'; then
    echo "NOTE: $t: p99 ${worst} ms in round $round (median p99 ${med} ms)"
  fi
done
if [ -n "$disturbed" ]; then
  echo "WARNING: req/s spread above 25% of the median for $disturbed: the run looks disturbed; rerun on a quiet machine"
fi

mkdir -p "$(dirname "$OUT")"
jq -n --rawfile summary "$summary" --rawfile rounds "$raw" \
  --arg date "$(date -Iseconds)" --arg cpu "$cpu_model" --argjson nproc "$NPROC" \
  --argjson rounds_n "$ROUNDS" --argjson duration "$DURATION" --argjson connections "$CONNECTIONS" \
  --arg settings "$settings" --arg table "$table" --arg load_before "$LOAD_BEFORE" \
  --arg load_after "$LOAD_AFTER" --arg disturbed "$disturbed" '
  def rows($s): $s | split("\n") | map(select(length > 0) | split("\t"));
  (rows($summary) | map({
      target: .[0], rps_median: (.[1] | tonumber), rps_min: (.[2] | tonumber),
      rps_max: (.[3] | tonumber), p50_ms: (.[4] | tonumber), p99_ms: (.[5] | tonumber),
      cpu_us_per_request: (.[6] | tonumber), upstream_cpu_us_per_request: (.[7] | tonumber),
      peak_rss_kb: (.[8] | tonumber)
    } | . + {rps_spread: ((.rps_max - .rps_min) / .rps_median)})) as $targets
  | (rows($rounds)) as $r
  | ($targets | map(.target as $t | . + {p99_ms_worst_round: ($r | map(select(.[1] == $t) | .[5] | tonumber) | max)})) as $targets
  | ($targets | map(select(.target == "nginx_proxy")) | first) as $base
  | {
      date: $date, machine: {nproc: $nproc, cpu: $cpu},
      loadavg: {before: $load_before, after: $load_after},
      disturbed: (if $disturbed == "" then null else $disturbed end),
      settings: {rounds: $rounds_n, duration_s: $duration, connections: $connections, text: $settings},
      targets: ($targets | map(. + (if $base then {
        rps_ratio_to_nginx_proxy: (.rps_median / $base.rps_median),
        cpu_ratio_to_nginx_proxy: (.cpu_us_per_request / $base.cpu_us_per_request)
      } else {} end))),
      rounds: (rows($rounds) | map({
        round: (.[0] | tonumber), target: .[1], requests: (.[2] | tonumber),
        rps: (.[3] | tonumber), p50_ms: (.[4] | tonumber), p99_ms: (.[5] | tonumber),
        cpu_us_per_request: (.[6] | tonumber), upstream_cpu_us_per_request: (.[7] | tonumber)
      })),
      table: $table
    }' >"$OUT"
echo
echo "JSON: $OUT"
