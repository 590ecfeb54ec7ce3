#!/usr/bin/env bash
# Load benchmark: gatehouse vs nginx on loopback, one worker each, in front of the same
# backend, case by case. Not a test: CI never runs it. See bench/load/README.md.
#
#   bench/load/run.sh            # as root (it apt-get installs what is missing)
#
# Cases (CASES="http grpc tcp"):
#   http  HTTPRoute vs nginx proxy_pass, HTTP/1.1 to an nginx backend (wrk, oha)
#   grpc  GRPCRoute vs nginx grpc_pass, h2c to the grpc-echo backend (h2load, oha --http2)
#   tcp   TCP listener + TCPRoute vs nginx stream proxy_pass, to the nginx backend (wrk, oha)
#
# Knobs (environment): CASES, DURATION=10 (s per measured run), THREADS=2 and CONNS=50 (wrk,
# h2load), H2_STREAMS=1 (concurrent gRPC calls per HTTP/2 connection), RATE=2000 (req/s
# offered for the latency run), ROUNDS=3 (median is reported), WARMUP=3 (s), PAIRED=1 (a
# third run per round: both proxies at RATE at once, pinned to one CPU), BACKEND_WORKERS=1,
# OHA_VERSION=1.16.0, BUILD_TIMEOUT=2400 (s), GATEHOUSE_BIN (skip the build and use this
# binary).
#
# Every wait and every load run is bounded by a timeout; every process started here is
# stopped on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail

CASES=${CASES:-http grpc tcp}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
H2_STREAMS=${H2_STREAMS:-1}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400}
PAIRED=${PAIRED:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$HERE/results/$STAMP"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
export PATH="$HOME/.cargo/bin:$PATH"

# ---------------------------------------------------------------------------------------
# Cleanup: stop everything we started (TERM, a bounded wait, then KILL) and drop the temp dir.
PIDS=()
# stop_pids PID...: TERM, up to 5 s for them to exit, then KILL; reaped and dropped from PIDS.
stop_pids() {
    local p i alive keep=()
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for p in "$@"; do
            # A zombie (Z) has exited; it is reaped below.
            if [[ -r /proc/$p/stat ]] && [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]]; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ((${#PIDS[@]})) && stop_pids "${PIDS[@]}"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$HERE/lib.sh"

exec > >(tee "$OUT/run.log") 2>&1

# ---------------------------------------------------------------------------------------
# 1. Tools. nginx, its stream module, wrk and h2load (nghttp2-client) from Debian; oha
#    (fixed-rate load with latency percentiles) from crates.io, because Debian has no wrk2
#    package; the gRPC backend is bench/load/grpc-echo, built here (not a workspace member).
missing=()
command -v nginx >/dev/null || missing+=(nginx)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v pgrep >/dev/null || missing+=(procps)
command -v taskset >/dev/null || missing+=(util-linux)
apt_install "${missing[@]}"
oha_install
CLK_TCK=$(getconf CLK_TCK)
PAIR_CPU=$(($(nproc) - 1))
if ((PAIRED)) && { ((PAIR_CPU < 1)) || [[ ! -r /proc/self/schedstat ]]; }; then
    log "no paired runs: they need two CPUs and /proc/PID/schedstat"
    PAIRED=0
fi

# ---------------------------------------------------------------------------------------
# 2. gatehouse, release build.
gatehouse_binary
if [[ " $CASES " == *" grpc "* ]]; then
    log "building bench/load/grpc-echo (release, its own target dir)"
    timeout "$BUILD_TIMEOUT" cargo build --release --locked --quiet --manifest-path "$HERE/grpc-echo/Cargo.toml"
    GRPC_ECHO="$HERE/grpc-echo/target/release/grpc-echo"
fi

# ---------------------------------------------------------------------------------------
# Helpers.

# try_ok URL PID [SECONDS]: until URL answers 200 (true), or PID dies or time runs out (false).
try_ok() {
    local url=$1 pid=$2 secs=${3:-15} i code
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "process $pid exited while waiting for $url"; return 1; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}
# wait_ok URL PID [SECONDS]: try_ok or die.
wait_ok() { try_ok "$@" || die "$1 not ready after ${3:-15}s"; }

# grpc_ok PORT: one unary call through PORT (nghttp, h2c) returns our message and grpc-status 0.
grpc_ok() {
    local out
    out=$(timeout 5 nghttp -v -d "$GRPC_REQ" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$1$GRPC_PATH" 2>&1 | tr -d '\0') || true
    [[ $out == *"grpc-status: 0"* && $out == *"$GRPC_MESSAGE"* ]]
}
# wait_grpc PORT PID [SECONDS]: until grpc_ok, or die.
wait_grpc() {
    local i
    for ((i = 0; i < ${3:-15} * 10; i++)); do
        kill -0 "$2" 2>/dev/null || die "process $2 exited while waiting for gRPC on port $1"
        grpc_ok "$1" && return 0
        sleep 0.1
    done
    die "no gRPC reply through port $1 after ${3:-15}s"
}

# children PID: the PIDs of its child processes (nginx workers).
children() { pgrep -P "$1" | tr '\n' ' '; }

# cpu_ticks PID...: utime + stime (fields 14 and 15 of /proc/PID/stat, all threads), summed.
cpu_ticks() {
    local total=0 p s
    local -a f
    for p in "$@"; do
        s=$(<"/proc/$p/stat")
        s=${s##*) } # drop "pid (comm) ": f[0] is field 3
        read -ra f <<<"$s"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# cpu_ns PID...: on-CPU nanoseconds of all their threads (/proc/PID/task/*/schedstat), summed.
cpu_ns() {
    local total=0 p t ns
    for p in "$@"; do
        for t in /proc/"$p"/task/*/schedstat; do
            read -r ns _ <"$t"
            total=$((total + ns))
        done
    done
    echo "$total"
}

# hwm_kib PID: peak resident set size (VmHWM) in KiB.
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# total of the numbers on stdin.
total() { awk '{s += $1} END {print s + 0}'; }
# median of the numbers on stdin.
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

nginx_common() { # prefix dir
    cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
EOF
}
nginx_temp_paths() { # prefix dir
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $1/tmp/$d;"; done
}

# ---------------------------------------------------------------------------------------
# 3. The backends. HTTP (cases http, tcp): a second nginx with its own worker(s),
#    answering 200 "ok\n". gRPC (case grpc): grpc-echo, h2c, echoing each unary call.
free_port BACKEND_PORT
BD="$WORK/backend"
mkdir -p "$BD/tmp"
{
    nginx_common "$BD"
    cat <<EOC
worker_processes $BACKEND_WORKERS;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
$(nginx_temp_paths "$BD")
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOC
} >"$BD/nginx.conf"
nginx -p "$BD" -e "$BD/error.log" -c "$BD/nginx.conf" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_ok "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID"
BACKEND_WORKERS_PIDS=$(children "$BACKEND_PID")
PIDS+=($BACKEND_WORKERS_PIDS)

# The gRPC request: one length-prefixed message (flag 0, 4-byte big-endian length) with a
# 32-byte payload, sent by h2load, oha and nghttp as a POST body.
GRPC_PATH=/bench.Echo/Say
GRPC_MESSAGE=gatehouse-bench-grpc-payload-32b
GRPC_REQ="$WORK/grpc-request.bin"
printf '\x00\x00\x00\x00\x20%s' "$GRPC_MESSAGE" >"$GRPC_REQ"
if [[ " $CASES " == *" grpc "* ]]; then
    free_port GRPC_BACKEND_PORT
    "$GRPC_ECHO" "127.0.0.1:$GRPC_BACKEND_PORT" "$BACKEND_WORKERS" &
    GRPC_BACKEND_PID=$!
    PIDS+=("$GRPC_BACKEND_PID")
    wait_grpc "$GRPC_BACKEND_PORT" "$GRPC_BACKEND_PID"
fi

{
    echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:        $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "gatehouse:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "nginx:       $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk:         $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "h2load:      $(h2load --version 2>&1 | head -1 | awk '{print $NF}')"
    echo "oha:         $(oha --version | awk '{print $2}')"
    echo "cases:       $CASES"
    echo "parameters:  ROUNDS=$ROUNDS DURATION=${DURATION}s THREADS=$THREADS CONNS=$CONNS H2_STREAMS=$H2_STREAMS RATE=$RATE/s PAIRED=$PAIRED BACKEND_WORKERS=$BACKEND_WORKERS CLK_TCK=$CLK_TCK"
    echo "backends:    nginx $BACKEND_PORT, grpc-echo ${GRPC_BACKEND_PORT:--}"
} | tee "$OUT/environment.txt"

# ---------------------------------------------------------------------------------------
# 4. The proxies of a case: nginx (one worker) and gatehouse (one worker).

# start_nginx_proxy CASE PORT: writes its config for CASE and starts it; sets NGINX_PID.
start_nginx_proxy() {
    local case=$1 port=$2 d="$WORK/nginx-$1"
    mkdir -p "$d/tmp"
    {
        nginx_common "$d"
        [[ $case == tcp ]] && echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
        echo "worker_processes 1;"
        echo "events { worker_connections 4096; }"
        case $case in
        http) cat <<EOC
http {
    access_log off;
    keepalive_requests 10000000;
$(nginx_temp_paths "$d")
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What gatehouse does to every request: the client's Host passed on, and
            # X-Forwarded-For (appended to), -Proto and -Host set. Not nginx's default.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOC
            ;;
        grpc) cat <<EOC
http {
    access_log off;
    keepalive_requests 10000000;
$(nginx_temp_paths "$d")
    upstream grpc_backend {
        server 127.0.0.1:$GRPC_BACKEND_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port http2 backlog=4096;
        location / {
            grpc_pass grpc://grpc_backend;
            # As for http: the X-Forwarded fields gatehouse sets.
            grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            grpc_set_header X-Forwarded-Proto \$scheme;
            grpc_set_header X-Forwarded-Host \$host;
        }
    }
}
EOC
            ;;
        tcp) cat <<EOC
stream {
    upstream backend { server 127.0.0.1:$BACKEND_PORT; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        proxy_pass backend;
    }
}
EOC
            ;;
        esac
    } >"$d/nginx.conf"
    nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

# gatehouse_config CASE PORT: the Gateway, route, Service and EndpointSlice for CASE.
gatehouse_config() {
    local case=$1 port=$2 protocol=HTTP backend_port=$BACKEND_PORT route
    case $case in
    http) route="apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bench
  namespace: default
spec:
  parentRefs:
    - name: bench
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /
      backendRefs:
        - name: backend
          port: 80" ;;
    grpc) backend_port=$GRPC_BACKEND_PORT route="apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: bench
  namespace: default
spec:
  parentRefs:
    - name: bench
  rules:
    - matches:
        - method:
            service: bench.Echo
            method: Say
      backendRefs:
        - name: backend
          port: 80" ;;
    tcp) protocol=TCP route="apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata:
  name: bench
  namespace: default
spec:
  parentRefs:
    - name: bench
  rules:
    - backendRefs:
        - name: backend
          port: 80" ;;
    esac
    # No appProtocol: GRPCRoute backends speak HTTP/2 (h2c) by default.
    cat <<EOC
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gatehouse
spec:
  controllerName: gatehouse.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bench
  namespace: default
spec:
  gatewayClassName: gatehouse
  listeners:
    - name: $case
      protocol: $protocol
      port: $port
---
$route
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: default
spec:
  ports:
    - name: http
      port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend
  namespace: default
  labels:
    kubernetes.io/service-name: backend
addressType: IPv4
endpoints:
  - addresses: ["127.0.0.1"]
ports:
  - name: http
    port: $backend_port
EOC
}

# start_gatehouse CASE PORT: sets GH_PID and GH_ADMIN.
start_gatehouse() {
    local d="$WORK/gatehouse-$1"
    mkdir -p "$d"
    gatehouse_config "$1" "$2" >"$d/bench.yaml"
    free_port GH_ADMIN
    RUST_LOG=warn "$GH" run --config "$d" --admin "127.0.0.1:$GH_ADMIN" --bind 127.0.0.1 --workers 1 \
        --drain-timeout 1s 2>"$OUT/$1.gatehouse.log" &
    GH_PID=$!
    PIDS+=("$GH_PID")
}

# ---------------------------------------------------------------------------------------
# 5. Measurements.
declare -A URL CPU_PIDS RSS_PID

# µs of CPU per request: usec_per_req TICKS REQUESTS
usec_per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan"}'; }

# The saturating load generator: wrk for HTTP/1.1 (cases http, tcp), h2load for gRPC.
max_tool() { if [[ $CASE == grpc ]]; then echo "h2load -c$CONNS -m$H2_STREAMS"; else echo "wrk -t$THREADS -c$CONNS"; fi; }
saturate() { # name seconds raw-file
    if [[ $CASE == grpc ]]; then
        timeout $(($2 + 30)) h2load -t"$THREADS" -c"$CONNS" -m"$H2_STREAMS" -D "$2" -d "$GRPC_REQ" \
            -H 'content-type: application/grpc' -H 'te: trailers' "${URL[$1]}" >"$3"
    else
        timeout $(($2 + 30)) wrk -t"$THREADS" -c"$CONNS" -d"$2s" --latency "${URL[$1]}" >"$3"
    fi
}

# One saturation run; appends "rps cpu_us_per_req errors" to $OUT/CASE.NAME.max.tsv.
run_max() {
    local name=$1 round=$2 raw="$OUT/$CASE.$1.max.$2.txt" t0 t1 reqs rps errs
    t0=$(cpu_ticks ${CPU_PIDS[$name]})
    saturate "$name" "$DURATION" "$raw"
    t1=$(cpu_ticks ${CPU_PIDS[$name]})
    if [[ $CASE == grpc ]]; then
        # "finished in 10.00s, 12345.67 req/s, ..."; "requests: T total, S started, D done, OK succeeded, F failed, ..."
        reqs=$(awk '/^requests:/ {print $8}' "$raw")
        rps=$(awk '/^finished in/ {print $4}' "$raw")
        errs=$(awk '/^requests:/ {n += $10} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' "$raw")
    else
        reqs=$(awk '/requests in/ {print $1}' "$raw")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw")
        errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$raw")
    fi
    printf '%s\t%s\t%s\n' "$rps" "$(usec_per_req $((t1 - t0)) "$reqs")" "$errs" >>"$OUT/$CASE.$name.max.tsv"
    log "$CASE $name round $round: ${rps} req/s, $(usec_per_req $((t1 - t0)) "$reqs") CPU-µs/req, $errs errors"
}

# oha_rate NAME RAW [CMD...]: oha at $RATE for DURATION against NAME, JSON into RAW; CMD
# (taskset ...) runs it.
oha_rate() {
    local name=$1 raw=$2
    shift 2
    local -a extra=()
    if [[ $CASE == grpc ]]; then
        extra=(--http2 -p "$H2_STREAMS" -m POST -D "$GRPC_REQ" -H 'content-type: application/grpc' -H 'te: trailers')
    fi
    "$@" timeout $((DURATION + 30)) oha -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction -w \
        --no-tui --output-format json "${extra[@]}" "${URL[$name]}" >"$raw"
}
# oha_counts RAW: "answered-2xx all" of an oha run. Calls oha itself cut off at the end of
# the run ("aborted due to deadline", which -w does not prevent with --http2) are not the
# proxy's errors.
oha_counts() {
    jq -r '[([.statusCodeDistribution // {} | to_entries[] | select(.key | startswith("2")) | .value] | add // 0),
        ([.statusCodeDistribution // {} | .[]] | add // 0)
        + ([.errorDistribution // {} | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)]
        | @tsv' "$1"
}

# One fixed-rate run with oha; appends "p50_ms p99_ms achieved_rps cpu_us_per_req errors".
run_rate() {
    local name=$1 round=$2 raw="$OUT/$CASE.$1.oha.$2.json" t0 t1 ok total p50 p99 rps
    t0=$(cpu_ticks ${CPU_PIDS[$name]})
    oha_rate "$name" "$raw"
    t1=$(cpu_ticks ${CPU_PIDS[$name]})
    read -r ok total < <(oha_counts "$raw")
    p50=$(jq '.latencyPercentiles.p50 * 1000' "$raw")
    p99=$(jq '.latencyPercentiles.p99 * 1000' "$raw")
    rps=$(jq '.summary.requestsPerSec' "$raw")
    printf '%s\t%s\t%s\t%s\t%s\n' "$p50" "$p99" "$rps" "$(usec_per_req $((t1 - t0)) "$ok")" "$((total - ok))" >>"$OUT/$CASE.$name.rate.tsv"
    log "$CASE $name round $round: oha @${RATE}/s p50 $(printf %.3f "$p50") ms, p99 $(printf %.3f "$p99") ms, $(usec_per_req $((t1 - t0)) "$ok") CPU-µs/req"
}

# One paired run (PAIRED=1): both proxies pinned to the last CPU and loaded at $RATE at the
# same time, by two oha on the other CPUs, so that whatever else the machine does falls on
# both alike. Apart, rounds of one proxy after the other differ by up to 15% here; paired,
# by about 1%. CPU is on-CPU time from schedstat (ns), not ticks. Appends
# "cpu_us_per_req errors p99_ms" to $OUT/CASE.NAME.paired.tsv.
run_paired() {
    local round=$1 name order raw ok total p99
    local -A t0 t1 oha_pid
    if ((round % 2)); then order="gatehouse nginx"; else order="nginx gatehouse"; fi
    for name in gatehouse nginx; do pin "$PAIR_CPU" ${CPU_PIDS[$name]}; done
    for name in gatehouse nginx; do t0[$name]=$(cpu_ns ${CPU_PIDS[$name]}); done
    for name in $order; do
        oha_rate "$name" "$OUT/$CASE.$name.paired.$round.json" taskset -c "0-$((PAIR_CPU - 1))" &
        oha_pid[$name]=$!
    done
    for name in $order; do wait "${oha_pid[$name]}"; done
    for name in gatehouse nginx; do t1[$name]=$(cpu_ns ${CPU_PIDS[$name]}); done
    for name in gatehouse nginx; do pin "0-$PAIR_CPU" ${CPU_PIDS[$name]}; done
    for name in gatehouse nginx; do
        raw="$OUT/$CASE.$name.paired.$round.json"
        read -r ok total < <(oha_counts "$raw")
        p99=$(jq '.latencyPercentiles.p99 * 1000' "$raw")
        awk -v ns=$((t1[$name] - t0[$name])) -v n="$ok" -v e=$((total - ok)) -v p99="$p99" \
            'BEGIN {printf "%s\t%d\t%s\n", (n > 0) ? sprintf("%.2f", ns / 1000 / n) : "nan", e, p99}' >>"$OUT/$CASE.$name.paired.tsv"
    done
    log "$CASE paired round $round: CPU-µs/req gatehouse $(tail -1 "$OUT/$CASE.gatehouse.paired.tsv" | cut -f1)," \
        "nginx $(tail -1 "$OUT/$CASE.nginx.paired.tsv" | cut -f1)"
}
# pin CPUS PID...: every thread of each PID on CPUS.
pin() {
    local cpus=$1 p
    shift
    for p in "$@"; do taskset -a -p -c "$cpus" "$p" >/dev/null; done
}
# paired_ratios COLUMN: the per-round ratios gatehouse/nginx of a column of the paired runs
# (1: CPU, 3: p99), "median (min-max)".
paired_ratios() {
    paste "$OUT/$CASE.gatehouse.paired.tsv" "$OUT/$CASE.nginx.paired.tsv" |
        awk -v c="$1" '$c != "nan" && $(c + 3) + 0 > 0 {print $c / $(c + 3)}' |
        sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else printf "%.3f (%.3f-%.3f)", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR]}'
}

row() { # label gatehouse nginx [noratio]
    awk -v l="$1" -v g="$2" -v n="$3" -v nr="${4:-}" 'BEGIN {
        r = (nr == "" && n + 0 != 0 && g != "nan" && n != "nan") ? sprintf("%.2f", g / n) : "-"
        printf "| %-40s | %12s | %12s | %15s |\n", l, g, n, r }'
}
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {if (v == "nan") print v; else printf f, v}'; }

declare -A TITLE
TITLE[http]="HTTP: HTTPRoute vs nginx proxy_pass (HTTP/1.1, nginx backend)"
TITLE[grpc]="gRPC unary: GRPCRoute vs nginx grpc_pass (h2c, grpc-echo backend)"
TITLE[tcp]="TCP: TCPRoute vs nginx stream proxy_pass (HTTP/1.1 through it, nginx backend)"

# run_case CASE: start its proxies, check them, measure, print its table, stop them.
run_case() {
    CASE=$1
    local np gp name round order nginx_workers nginx_worker gw
    free_port np
    free_port gp
    log "case $CASE: nginx on $np, gatehouse on $gp"
    start_nginx_proxy "$CASE" "$np"
    start_gatehouse "$CASE" "$gp"
    wait_ok "http://127.0.0.1:$GH_ADMIN/ready" "$GH_PID"
    case $CASE in
    grpc)
        URL[nginx]="http://127.0.0.1:$np$GRPC_PATH" URL[gatehouse]="http://127.0.0.1:$gp$GRPC_PATH"
        wait_grpc "$np" "$NGINX_PID"
        wait_grpc "$gp" "$GH_PID"
        ;;
    *)
        URL[nginx]="http://127.0.0.1:$np/" URL[gatehouse]="http://127.0.0.1:$gp/"
        wait_ok "${URL[nginx]}" "$NGINX_PID"
        if ! try_ok "${URL[gatehouse]}" "$GH_PID" 10; then
            if [[ $CASE == tcp ]]; then
                curl -s --max-time 2 "http://127.0.0.1:$GH_ADMIN/status" >"$OUT/tcp.gatehouse.status.json" || true
                { echo; echo "### ${TITLE[$CASE]}"; echo; echo "skipped: TCP listener not served"; } | tee -a "$OUT/summary.txt"
                stop_pids "$GH_PID" "$NGINX_PID" $(children "$NGINX_PID")
                return 0
            fi
            die "${URL[gatehouse]} not ready"
        fi
        for url in "${URL[nginx]}" "${URL[gatehouse]}"; do
            body=$(curl -s --max-time 2 "$url")
            [[ $body == ok ]] || die "$url answered '$body', not the backend's 'ok'"
        done
        ;;
    esac
    nginx_workers=$(children "$NGINX_PID")
    PIDS+=($nginx_workers)
    [[ -n $nginx_workers ]] || die "the nginx proxy has no worker"
    nginx_worker=${nginx_workers%% *}
    CPU_PIDS[gatehouse]="$GH_PID"
    CPU_PIDS[nginx]="$NGINX_PID $nginx_workers"
    RSS_PID[gatehouse]=$GH_PID
    RSS_PID[nginx]=$nginx_worker

    for name in gatehouse nginx; do
        log "$CASE: warming up $name (${WARMUP}s)"
        saturate "$name" "$WARMUP" "$OUT/$CASE.$name.warmup.txt"
        : >"$OUT/$CASE.$name.max.tsv"
        : >"$OUT/$CASE.$name.rate.tsv"
        : >"$OUT/$CASE.$name.paired.tsv"
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        # Alternate who goes first, so slow drift in the machine's load hits both alike.
        if ((round % 2)); then order="gatehouse nginx"; else order="nginx gatehouse"; fi
        for name in $order; do run_max "$name" "$round"; done
        for name in $order; do run_rate "$name" "$round"; done
        ((PAIRED)) && run_paired "$round"
    done
    if [[ $CASE == grpc ]]; then
        # Still answering with grpc-status 0 after the load (h2load and oha see only HTTP).
        for p in "$np" "$gp"; do grpc_ok "$p" || die "no clean gRPC reply through port $p after the load"; done
    fi

    for name in gatehouse nginx; do
        col() { cut -f"$2" "$OUT/$CASE.$name.$1.tsv" | median; }
        declare -g "${name}_rps=$(col max 1)" "${name}_cpu_max=$(col max 2)" "${name}_err_max=$(cut -f3 "$OUT/$CASE.$name.max.tsv" | total)"
        declare -g "${name}_p50=$(col rate 1)" "${name}_p99=$(col rate 2)" "${name}_rate=$(col rate 3)" "${name}_cpu_rate=$(col rate 4)" \
            "${name}_err_rate=$(cut -f5 "$OUT/$CASE.$name.rate.tsv" | total)"
        declare -g "${name}_cpu_paired=$(cut -f1 "$OUT/$CASE.$name.paired.tsv" | median)" \
            "${name}_err_paired=$(cut -f2 "$OUT/$CASE.$name.paired.tsv" | total)" \
            "${name}_p99_paired=$(cut -f3 "$OUT/$CASE.$name.paired.tsv" | median)"
        declare -g "${name}_rss=$(awk -v k="$(hwm_kib "${RSS_PID[$name]}")" 'BEGIN {printf "%.1f", k / 1024}')"
    done
    {
        echo
        echo "### ${TITLE[$CASE]}"
        echo
        printf '| %-40s | %12s | %12s | %15s |\n' metric gatehouse nginx gatehouse/nginx
        printf '| %-40s | %12s | %12s | %15s |\n' "$(printf -- '-%.0s' {1..40})" "------------" "------------" "---------------"
        row "max throughput, req/s ($(max_tool))" "$(fmt "$gatehouse_rps" %.0f)" "$(fmt "$nginx_rps" %.0f)"
        row "CPU-us/request at max throughput" "$gatehouse_cpu_max" "$nginx_cpu_max"
        row "latency p50 @ $RATE req/s, ms (oha)" "$(fmt "$gatehouse_p50" %.3f)" "$(fmt "$nginx_p50" %.3f)"
        row "latency p99 @ $RATE req/s, ms (oha)" "$(fmt "$gatehouse_p99" %.3f)" "$(fmt "$nginx_p99" %.3f)"
        row "achieved rate @ $RATE req/s" "$(fmt "$gatehouse_rate" %.0f)" "$(fmt "$nginx_rate" %.0f)"
        row "CPU-us/request @ $RATE req/s" "$gatehouse_cpu_rate" "$nginx_cpu_rate"
        if ((PAIRED)); then
            row "CPU-us/request @ $RATE req/s, paired" "$gatehouse_cpu_paired" "$nginx_cpu_paired"
            row "latency p99 @ $RATE req/s, paired, ms" "$(fmt "$gatehouse_p99_paired" %.3f)" "$(fmt "$nginx_p99_paired" %.3f)"
        fi
        row "peak RSS, MiB (VmHWM; nginx: worker)" "$gatehouse_rss" "$nginx_rss"
        row "errors (non-2xx + socket), max / oha" "$gatehouse_err_max / $gatehouse_err_rate" "$nginx_err_max / $nginx_err_rate" noratio
        echo
        echo "nginx master VmHWM: $(awk -v k="$(hwm_kib "$NGINX_PID")" 'BEGIN {printf "%.1f", k / 1024}') MiB."
        if ((PAIRED)); then
            echo "Paired runs, gatehouse/nginx round by round: CPU $(paired_ratios 1), p99 $(paired_ratios 3);" \
                "errors $gatehouse_err_paired / $nginx_err_paired."
        fi
    } | tee -a "$OUT/summary.txt"
    stop_pids "$GH_PID" "$NGINX_PID" $nginx_workers
}

{
    echo "Median of $ROUNDS rounds; errors are totals over all rounds. CPU counts gatehouse's whole"
    echo "process and nginx's master + worker; the backend and the load generators share the same"
    echo "CPUs and are not counted."
} | tee "$OUT/summary.txt"
for c in $CASES; do
    [[ -n ${TITLE[$c]:-} ]] || die "unknown case '$c' (known: http grpc tcp)"
    run_case "$c"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg). Raw output: ${OUT#"$ROOT"/}" | tee -a "$OUT/summary.txt"
