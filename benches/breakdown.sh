#!/usr/bin/env bash
# Cost breakdown of one token request (issue 13, point 2): what each server spends per request,
# and where. The same servers, request, pinning and upstream as benches/load.sh (benches/lib.sh).
#
#   bash benches/breakdown.sh                                   # about 3 minutes
#   TARGETS="to_basic validate_sha256" COUNT=50000 bash benches/breakdown.sh
#
# Environment: TARGETS (default: pingora_hop to_basic nginx_proxy nginx_lua), COUNT requests per
# fixed-count run (20000), CONNECTIONS (32), PERF_SECONDS (5), CALLGRAPH (dwarf; or fp: release
# Rust has no frame pointers, so `-g` alone gives good kernel stacks and broken user ones),
# BASE_PORT (19100), OUT (directory; default target/bench/breakdown-DATE).
#
# For each target, with the server (an nginx worker, or the whole Pingora process: every thread)
# pinned to CPU 0 next to the upstream and wrk -t1 -cCONNECTIONS on CPU 1:
#  1. cpu:     a fixed-count run (COUNT responses, counted by wrk's script, which then stops),
#              no tool attached: CPU per request from each thread's /proc/PID/task/TID/schedstat
#              (ns on CPU), voluntary and involuntary context switches per request per thread
#              (/proc/.../status); the upstream's CPU per request.
#  2. strace:  `strace -c -f -p PID` attached during another fixed-count run: syscalls per
#              request, in total and by name (an attached strace slows the server; counts stay).
#  3. trace:   `strace -f -tt -p PID` of two requests on one keep-alive connection (curl): the
#              syscall sequence of one request.
#  4. heap:    the server started under heaptrack (LD_PRELOAD; nginx with master_process off, so
#              one process), twice: once for SMALL requests, once for SMALL + COUNT; allocations
#              per request = difference of "calls to allocation functions" / COUNT (start-up and
#              the 32 connections cancel out), and the allocation sites of the difference
#              (heaptrack_print -d). nginx+Lua: LuaJIT allocates from its own arena, not malloc,
#              so heaptrack sees only nginx's own allocations there.
#  5. perf:    `perf record -F 999 --call-graph CALLGRAPH -p PID` for PERF_SECONDS under full load,
#              then `perf report --no-children --stdio`: top symbols (self), by DSO, and the call
#              graphs of the top symbols; `--children` for the inclusive share of chosen frames.
# Writes OUT/summary.md (printed) and the raw outputs per target next to it.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-20000}
SMALL=${SMALL:-2000}
CONNECTIONS=${CONNECTIONS:-32}
PERF_SECONDS=${PERF_SECONDS:-5}
CALLGRAPH=${CALLGRAPH:-dwarf}
read -r -a TARGETS <<<"${TARGETS:-pingora_hop to_basic nginx_proxy nginx_lua}"
OUT=${OUT:-target/bench/breakdown-$(date +%Y%m%d-%H%M%S)}

# shellcheck source=benches/lib.sh
source benches/lib.sh

tmp=$(mktemp -d /tmp/tokengate-breakdown.XXXXXX)
finish() {
  local rc=$?
  stop_all
  if [ "$rc" -eq 0 ]; then rm -rf "$tmp"; else echo "failed ($rc); logs kept in $tmp" >&2; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

ensure_tools strace:strace perf:linux-perf heaptrack:heaptrack
build
pin_self
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

start_target upstream
for t in "${TARGETS[@]}"; do start_target "$t"; done
UP_PIDS=${T_PIDS[upstream]}
for t in "${TARGETS[@]}"; do check_target "$t"; done

# The process to look at: an nginx worker (the master is idle), else the (only) process.
server_pids() { # name -> PIDs
  read -r -a all <<<"${T_PIDS[$1]}"
  if [ ${#all[@]} -gt 1 ]; then echo "${all[@]:1}"; else echo "${all[0]}"; fi
}

url_of() { echo "http://127.0.0.1:$1/$ENV_ID/as/token"; }

# fixed_start NAME PORT: starts wrk, stopping itself after COUNT responses (marker file written);
# fixed_wait: waits for the marker; fixed_end: stops wrk, checks it, prints its request count.
fixed_start() {
  local spec
  spec=$(target_request "$1")
  MARKER="$tmp/marker.$RANDOM$RANDOM"
  wrk_count_script "${spec% *}" "$FIXED_COUNT" "$MARKER" "$tmp/count.lua"
  (pin "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d600s -s "$tmp/count.lua" "$(url_of "$2")" >"$tmp/wrk.out") &
  WRK=$!
}
fixed_wait() {
  while [ ! -e "$MARKER" ]; do
    alive "$WRK" || { echo "wrk ended before $FIXED_COUNT responses:" >&2; cat "$tmp/wrk.out" >&2; exit 1; }
    sleep 0.01
  done
}
fixed_end() {
  kill -INT "$WRK"
  wait "$WRK" || true
  parse_wrk "$1" "$(cat "$tmp/wrk.out")" >/dev/null
}
FIXED_COUNT=$COUNT

thread_snapshot() { # pids... -> "tid comm ns vcsw ivcsw" per thread
  local p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      printf '%s %s %s %s %s\n' "${t##*/}" "$(tr ' ' '_' <"$t/comm")" "$(cut -d' ' -f1 "$t/schedstat")" \
        "$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")" \
        "$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status")"
    done
  done
}
ns_sum() { local p s=0; for p in "$@"; do s=$((s + $(awk '{ print $1 }' /proc/"$p"/schedstat))); done; echo "$s"; }

# 1. CPU and context switches per request, per thread.
measure_cpu() { # name
  local name=$1 port=${T_PORT[$1]} pids before after up_before up_after
  read -r -a pids <<<"${T_PIDS[$name]}"
  fixed_start "$name" "$port" # warm-up run (connections, pools, caches)
  fixed_wait
  fixed_end "$name"
  before=$(thread_snapshot "${pids[@]}")
  # shellcheck disable=SC2086 # PIDs: split on whitespace
  up_before=$(ns_sum $UP_PIDS)
  fixed_start "$name" "$port"
  fixed_wait
  after=$(thread_snapshot "${pids[@]}")
  # shellcheck disable=SC2086
  up_after=$(ns_sum $UP_PIDS)
  fixed_end "$name"
  join -a2 -e0 -o 2.1,2.2,1.3,2.3,1.4,2.4,1.5,2.5 <(sort <<<"$before") <(sort <<<"$after") |
    awk -v n="$COUNT" -v ub="$up_before" -v ua="$up_after" '
      { cpu = ($4 - $3) / 1000 / n; v = ($6 - $5) / n; iv = ($8 - $7) / n
        tc += cpu; tv += v; ti += iv
        if (cpu > 0.005 || v > 0.005 || iv > 0.005)
          lines = lines sprintf("| %s (%s) | %.2f | %.3f | %.3f |\n", $2, $1, cpu, v, iv) }
      END {
        printf "total %.2f %.3f %.3f %.2f\n", tc, tv, ti, (ua - ub) / 1000 / n
        printf "| thread (tid) | CPU µs/req | voluntary cs/req | involuntary cs/req |\n|---|---:|---:|---:|\n%s", lines
      }' >"$OUT/$name.cpu.txt"
}

# 2. Syscalls per request (strace -c), of the server and, separately, of the upstream's worker
# (how the server writes to it decides how often it wakes and reads).
measure_syscalls() { # name
  local name=$1 port=${T_PORT[$1]} s u args=() p
  for p in $(server_pids "$name"); do args+=(-p "$p"); done
  strace -c -f -q -o "$tmp/strace.txt" "${args[@]}" &
  s=$!
  strace -c -q -o "$tmp/strace-up.txt" -p "$(server_pids upstream)" &
  u=$!
  sleep 1 # attached to every thread
  fixed_start "$name" "$port"
  fixed_wait
  kill -INT "$s" "$u"
  wait "$s" "$u" || true
  fixed_end "$name"
  per_request "$tmp/strace.txt" >"$OUT/$name.syscalls.txt"
  per_request "$tmp/strace-up.txt" >"$OUT/$name.upstream-syscalls.txt"
  cp "$tmp/strace.txt" "$OUT/$name.strace-c.txt"
}
per_request() { # strace -c output -> "syscall calls-per-request", most frequent first
  awk -v n="$COUNT" '
    $1 ~ /^[0-9.]+$/ && $NF != "total" { printf "%s %.3f\n", $NF, $4 / n }
    $NF == "total" { printf "total %.3f\n", $4 / n }' "$1" | sort -k2,2gr
}

# 3. The syscall sequence of two requests on one connection.
trace_sequence() { # name
  local name=$1 port=${T_PORT[$1]} s spec req args=() p
  for p in $(server_pids "$name"); do args+=(-p "$p"); done
  strace -f -tt -s 48 -q -o "$OUT/$name.sequence.txt" "${args[@]}" &
  s=$!
  sleep 1
  spec=$(target_request "$name")
  req=$(request_of "${spec% *}")
  local curl_args=(-sS -o /dev/null -o /dev/null -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "${req#*|}")
  if [ -n "${req%%|*}" ]; then curl_args+=(-H "Authorization: ${req%%|*}"); fi
  curl "${curl_args[@]}" "$(url_of "$port")" "$(url_of "$port")"
  sleep 0.3
  kill -INT "$s"
  wait "$s" || true
  # Drop the idle timer thread's 10 ms sleeps (Pingora's "Timer thread") from the listing.
  grep -v -e 'clock_nanosleep' -e 'restart_syscall' "$OUT/$name.sequence.txt" >"$tmp/seq" || true
  mv "$tmp/seq" "$OUT/$name.sequence.txt"
}

# 4. Heap allocations per request (heaptrack, two runs).
heap_run() { # name count port -> the heaptrack file
  local name=$1 count=$2 port=$3 exe c srv='' tmp="$tmp/heap" # its own configs and prefixes
  mkdir -p "$tmp"
  server_cmd "$name" "$port" 1
  case ${CMD[0]} in
    nginx) exe=$(readlink -f "$(command -v nginx)") ;;
    *) exe=$(readlink -f "${CMD[0]}") ;;
  esac
  launch "heap-$name" "$port" "$SERVER_CPU" heaptrack -o "$tmp/heap-$name-$count" "${CMD[@]}"
  local hp=$LAUNCHED
  for c in $(children_of "$hp"); do
    if [ "$(readlink -f "/proc/$c/exe")" = "$exe" ]; then srv=$c; fi
  done
  [ -n "$srv" ] || { echo "heaptrack: no $exe under $hp" >&2; exit 1; }
  STARTED+=("$srv")
  FIXED_COUNT=$count
  fixed_start "$name" "$port"
  fixed_wait
  fixed_end "$name"
  FIXED_COUNT=$COUNT
  kill -INT "$srv"
  while alive "$hp"; do sleep 0.1; done
  ls "$tmp/heap-$name-$count".*
}
measure_heap() { # name
  local name=$1 port small big a b
  port=$((BASE_PORT + 40))
  small=$(heap_run "$name" "$SMALL" "$port")
  big=$(heap_run "$name" "$((SMALL + COUNT))" "$port")
  a=$(heaptrack_print -f "$small" -p 0 -a 0 -T 0 | awk '/^calls to allocation functions:/ { print $5 }')
  b=$(heaptrack_print -f "$big" -p 0 -a 0 -T 0 | awk '/^calls to allocation functions:/ { print $5 }')
  awk -v a="$a" -v b="$b" -v n="$COUNT" 'BEGIN { printf "%.1f %d %d\n", (b - a) / n, a, b }' >"$OUT/$name.heap.txt"
  # Allocation sites of the difference (the per-request work), top 20, as "allocations per
  # request  innermost frame  (via: the first caller outside alloc/core/std/bytes, on the
  # site's most frequent backtrace)".
  heaptrack_print -f "$big" -d "$small" -p 0 -T 0 -a 1 -n 20 -s 1 2>/dev/null | demangle |
    awk -v n="$COUNT" '
      function flush() { if (c != "") printf "%6.2f  %s%s\n", c / n, loc, (via != "" ? "  (via " via ")" : "") }
      / calls to allocation functions with / { flush(); c = $1; getline; loc = $0; via = ""; bt = 0; next }
      / calls with .* from:$/ { bt++; next }
      bt == 1 && via == "" && /^    [^ ]/ {
        f = $0; sub(/^ +/, "", f)
        if (f !~ /^(<?alloc::|<?core::|<?std::|<?bytes::|hashbrown::|__rust|_\{|in |at )/) via = f
      }
      END { flush() }' >"$OUT/$name.heap-sites.txt" || true
}

# Rust legacy-mangled leftovers in heaptrack's output, made readable.
demangle() {
  # shellcheck disable=SC2016 # literal $ in sed expressions
  sed -E -e 's/::h[0-9a-f]{16}//g' -e 's/_\$LT\$/</g' -e 's/\$LT\$/</g' -e 's/\$GT\$/>/g' \
    -e 's/\$u7b\$/{/g' -e 's/\$u7d\$/}/g' -e 's/\$C\$/,/g' -e 's/\$u20\$/ /g' -e 's/\$RF\$/\&/g' \
    -e 's/\$BP\$/*/g' -e 's/\$u27\$/'"'"'/g' -e 's/\.\./::/g' -e 's/::_\{/::{/g' |
    awk '{ # v0-mangled names (_RNv...): keep the path identifiers, enough to read them
      out = ""
      while (match($0, /_R[A-Za-z0-9_]+/)) {
        sym = substr($0, RSTART, RLENGTH); path = ""; start = RSTART; len = RLENGTH
        sub(/Cs[A-Za-z0-9]+_/, "", sym)
        while (match(sym, /[0-9]+/)) {
          n = substr(sym, RSTART, RLENGTH) + 0; sym = substr(sym, RSTART + RLENGTH); id = substr(sym, 1, n)
          if (n > 0 && length(id) == n && id ~ /^[A-Za-z][A-Za-z0-9_]*$/) {
            path = path (path == "" ? "" : "::") id
            sym = substr(sym, n + 1)
          }
        }
        out = out substr($0, 1, start - 1) path; $0 = substr($0, start + len)
      }
      print out $0 }'
}

# 5. perf profile under full load.
measure_perf() { # name
  local name=$1 port=${T_PORT[$1]} spec w pids cg
  spec=$(target_request "$name")
  wrk_script "${spec% *}" "$tmp/load.lua"
  (pin "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$((PERF_SECONDS + 2))s" -s "$tmp/load.lua" "$(url_of "$port")" >"$tmp/wrk.out") &
  w=$!
  sleep 1
  pids=$(server_pids "$name" | tr ' ' ',')
  cg=(-g)
  [ "$CALLGRAPH" = dwarf ] && cg=(--call-graph "dwarf,16384")
  perf record -q -F 999 "${cg[@]}" -p "$pids" -o "$tmp/perf.data" -- sleep "$PERF_SECONDS" 2>/dev/null
  wait "$w"
  parse_wrk "$name" "$(cat "$tmp/wrk.out")" >/dev/null
  local report=(perf report -i "$tmp/perf.data" --stdio --no-header)
  # Self time per symbol (all), per DSO; callers of the top symbols; inclusive time per symbol.
  "${report[@]}" --no-children --sort dso,symbol -g none 2>/dev/null | grep -v -e '^#' -e '^$' |
    sed -E 's/ +$//' >"$OUT/$name.perf-self.txt" || true
  "${report[@]}" --no-children --sort dso -g none 2>/dev/null | grep -v -e '^#' -e '^$' |
    sed -E 's/ +$//' >"$OUT/$name.perf-dso.txt" || true
  "${report[@]}" --no-children --sort symbol -G --percent-limit 2 2>/dev/null |
    sed -E 's/ +$//' >"$OUT/$name.perf-callers.txt" || true
  "${report[@]}" --children --sort symbol -g none --percent-limit 0.5 2>/dev/null |
    grep -v -e '^#' -e '^$' | sed -E 's/ +$//' >"$OUT/$name.perf-children.txt" || true
}

# Inclusive share (perf --children) of the frames that tell where a request's time goes.
FRAMES=(
  "server::HttpSession::read_request|downstream: read and parse the request"
  "HttpSession::write_request_header|upstream: write the request head (one send; inlined in the hop)"
  "client::HttpSession::write_body|upstream: write the request body (another send)"
  "read_resp_header_parts|upstream: read and parse the response head"
  "server::HttpSession::write_body_buf|downstream: write the response (head and body, one send)"
  "release_http_session|upstream: return the connection to the pool"
  "tokengate::|tokengate's own code (outermost tokengate:: frame)"
  "ngx_http_lua|nginx+Lua: the Lua module"
  "ngx_writev|nginx: writev (upstream request, downstream response: head and body together)"
  "__x64_sys_getpeername|getpeername"
  "tcp_sendmsg|kernel: every send (TCP send, loopback delivery into the peer's socket)"
  "tcp_recvmsg|kernel: every recv"
  "finish_task_switch|kernel: switching away and back (preempted by the co-pinned upstream)"
)
where_frames() { # name
  local f pat label line
  for f in "${FRAMES[@]}"; do
    pat=${f%%|*}
    label=${f#*|}
    line=$(grep -m1 -F -e "$pat" "$OUT/$1.perf-children.txt" || true)
    if [ -n "$line" ]; then printf '| %s | %s |\n' "$label" "$(awk '{ print $1 }' <<<"$line")"; fi
  done
}
# Self share of malloc/free and friends (libc), and of the kernel.
alloc_share() {
  awk '$2 ~ /libc/ && $4 ~ /^(_int_malloc|_int_free|malloc|free|cfree|__libc_malloc|__libc_free|_int_free_merge_chunk|_int_free_create_chunk|_int_free_maybe_consolidate|malloc_consolidate|realloc|_int_realloc|__libc_calloc|calloc|unlink_chunk|tcache_get|tcache_put)(\.[a-z0-9.]+|@.*)?$/ { s += $1 }
       END { printf "%.1f%%", s }' "$OUT/$1.perf-self.txt"
}

for t in "${TARGETS[@]}"; do
  echo "$t: cpu" >&2
  measure_cpu "$t"
  echo "$t: strace -c" >&2
  measure_syscalls "$t"
  echo "$t: syscall sequence" >&2
  trace_sequence "$t"
  echo "$t: perf" >&2
  measure_perf "$t"
done
for t in "${TARGETS[@]}"; do
  echo "$t: heaptrack" >&2
  measure_heap "$t"
done

# --- summary -------------------------------------------------------------------------------------
syscall_of() { awk -v s="$2" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }' "$OUT/$1.syscalls.txt"; }
{
  echo "# Cost breakdown, $(date)"
  echo
  echo "$NPROC CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); servers and upstream on CPU $SERVER_CPU, wrk -t1 -c$CONNECTIONS on CPU $LOAD_CPU;"
  echo "fixed-count runs of $COUNT requests; heaptrack difference of $((SMALL + COUNT)) and $SMALL requests; perf $PERF_SECONDS s, call graph $CALLGRAPH."
  echo
  echo "| target | CPU µs/req | upstream CPU µs/req | ctx switches/req (vol+invol) | syscalls/req | send/write | recv/read | epoll_wait | getpeername | futex | allocations/req |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    read -r _ cpu vcs ics up <"$OUT/$t.cpu.txt"
    send=$(awk '$1 ~ /^(sendto|sendmsg|write|writev)$/ { s += $2 } END { printf "%.2f", s }' "$OUT/$t.syscalls.txt")
    recv=$(awk '$1 ~ /^(recvfrom|recvmsg|read|readv)$/ { s += $2 } END { printf "%.2f", s }' "$OUT/$t.syscalls.txt")
    printf '| %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$cpu" "$up" \
      "$(awk -v a="$vcs" -v b="$ics" 'BEGIN { print a + b }')" "$(syscall_of "$t" total)" "$send" "$recv" \
      "$(syscall_of "$t" epoll_wait)" "$(syscall_of "$t" getpeername)" "$(syscall_of "$t" futex)" \
      "$(awk '{ print $1 }' "$OUT/$t.heap.txt")"
  done
  for t in "${TARGETS[@]}"; do
    echo
    echo "## $t"
    echo
    tail -n +2 "$OUT/$t.cpu.txt"
    echo
    echo "syscalls per request: $(head -12 "$OUT/$t.syscalls.txt" | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')"
    echo
    echo "the upstream's syscalls per request behind it: $(head -8 "$OUT/$t.upstream-syscalls.txt" | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')"
    echo
    echo "Where the server's CPU samples fall (perf, inclusive):"
    echo
    echo "| frame | share |"
    echo "|---|---:|"
    where_frames "$t"
    printf '| malloc/free and friends in libc (self) | %s |\n' "$(alloc_share "$t")"
    awk '{ printf "| DSO %s (self) | %s |\n", $2, $1 }' "$OUT/$t.perf-dso.txt" | head -4
    echo
    echo "Top symbols (self):"
    echo '```'
    head -15 "$OUT/$t.perf-self.txt" | cut -c1-150
    echo '```'
    echo
    echo "Allocation sites, allocations per request (heaptrack, innermost frame):"
    echo '```'
    head -20 "$OUT/$t.heap-sites.txt" | cut -c1-220
    echo '```'
  done
  echo
  echo "Raw outputs: $OUT (*.cpu.txt, *.syscalls.txt, *.strace-c.txt, *.sequence.txt, *.heap.txt,"
  echo "*.heap-sites.txt, *.perf-self.txt, *.perf-dso.txt, *.perf-callers.txt, *.perf-children.txt)."
} >"$OUT/summary.md"
cat "$OUT/summary.md"
echo
echo "written: $OUT/summary.md"
