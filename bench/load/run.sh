#!/usr/bin/env bash
# Load benchmark: gatehouse vs nginx as a reverse proxy, on loopback, one worker each, in
# front of one shared nginx backend. Not a test: CI never runs it. See bench/load/README.md.
#
#   bench/load/run.sh            # as root (it apt-get installs what is missing)
#
# Knobs (environment): DURATION=10 (s per measured run), THREADS=2 and CONNS=50 (wrk),
# RATE=2000 (req/s offered for the latency run), ROUNDS=3 (median is reported), WARMUP=3 (s),
# BACKEND_WORKERS=1, OHA_VERSION=1.16.0, BUILD_TIMEOUT=2400 (s), GATEHOUSE_BIN (skip the
# build and use this binary).
#
# Every wait and every load run is bounded by a timeout; every process started here is
# stopped on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
OHA_VERSION=${OHA_VERSION:-1.16.0}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400}

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
cleanup() {
    local rc=$? p i alive
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for p in "${PIDS[@]}"; do
            # A zombie (Z) has exited; it is reaped below.
            if [[ -r /proc/$p/stat ]] && [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]]; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

exec > >(tee "$OUT/run.log") 2>&1

# ---------------------------------------------------------------------------------------
# 1. Tools. nginx and wrk from Debian; oha (fixed-rate load with latency percentiles) from
#    crates.io, because Debian has no wrk2 package.
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v pgrep >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v oha >/dev/null; then
    log "installing oha $OHA_VERSION (cargo install --locked)"
    timeout 1800 cargo install oha --version "$OHA_VERSION" --locked
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------
# 2. gatehouse, release build.
if [[ -n ${GATEHOUSE_BIN:-} ]]; then
    GH=$GATEHOUSE_BIN
else
    log "building gatehouse (release); this waits for any other cargo holding the target dir"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -p gatehouse)
    GH="${CARGO_TARGET_DIR:-$ROOT/target}/release/gatehouse"
fi
[[ -x $GH ]] || die "no gatehouse binary at $GH"

# ---------------------------------------------------------------------------------------
# Helpers.
USED_PORTS=" "
# free_port VAR: a port nobody listens on, below the ephemeral range, not handed out before.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_ok URL PID [SECONDS]: until URL answers 200, failing if PID dies or time runs out.
wait_ok() {
    local url=$1 pid=$2 secs=${3:-15} i code
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited while waiting for $url"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$url not ready after ${secs}s"
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
# 3. The backend: a second nginx with its own worker(s), answering 200 "ok\n".
free_port BACKEND_PORT
free_port NGINX_PORT
free_port GH_PORT
free_port GH_ADMIN

BD="$WORK/backend"
mkdir -p "$BD/tmp"
{
    nginx_common "$BD"
    cat <<EOF
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
EOF
} >"$BD/nginx.conf"
nginx -p "$BD" -e "$BD/error.log" -c "$BD/nginx.conf" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")

# ---------------------------------------------------------------------------------------
# 4a. nginx as the reverse proxy: one worker, upstream keepalive, HTTP/1.1 upstream.
ND="$WORK/nginx"
mkdir -p "$ND/tmp"
{
    nginx_common "$ND"
    cat <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
$(nginx_temp_paths "$ND")
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$ND/nginx.conf"
nginx -p "$ND" -e "$ND/error.log" -c "$ND/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# 4b. gatehouse: one worker, a Gateway on GH_PORT, a PathPrefix / route to the backend.
GD="$WORK/gatehouse"
mkdir -p "$GD"
cat >"$GD/bench.yaml" <<EOF
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
    - name: http
      protocol: HTTP
      port: $GH_PORT
---
apiVersion: gateway.networking.k8s.io/v1
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
          port: 80
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
    port: $BACKEND_PORT
EOF
RUST_LOG=warn "$GH" run --config "$GD" --admin "127.0.0.1:$GH_ADMIN" --bind 127.0.0.1 --workers 1 \
    --drain-timeout 1s 2>"$OUT/gatehouse.log" &
GH_PID=$!
PIDS+=("$GH_PID")

wait_ok "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID"
wait_ok "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"
wait_ok "http://127.0.0.1:$GH_ADMIN/ready" "$GH_PID"
wait_ok "http://127.0.0.1:$GH_PORT/" "$GH_PID"
for url in "http://127.0.0.1:$NGINX_PORT/" "http://127.0.0.1:$GH_PORT/"; do
    body=$(curl -s --max-time 2 "$url")
    [[ $body == ok ]] || die "$url answered '$body', not the backend's 'ok'"
done

NGINX_WORKERS=$(children "$NGINX_PID")
BACKEND_WORKERS_PIDS=$(children "$BACKEND_PID")
PIDS+=($NGINX_WORKERS $BACKEND_WORKERS_PIDS)
[[ -n $NGINX_WORKERS ]] || die "the nginx proxy has no worker"
NGINX_WORKER=${NGINX_WORKERS%% *}

# ---------------------------------------------------------------------------------------
# 5. Measurements.
{
    echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:        $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "gatehouse:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "nginx:       $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk:         $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "oha:         $(oha --version | awk '{print $2}')"
    echo "parameters:  ROUNDS=$ROUNDS DURATION=${DURATION}s THREADS=$THREADS CONNS=$CONNS RATE=$RATE/s BACKEND_WORKERS=$BACKEND_WORKERS CLK_TCK=$CLK_TCK"
    echo "ports:       backend $BACKEND_PORT, nginx $NGINX_PORT, gatehouse $GH_PORT (admin $GH_ADMIN)"
} | tee "$OUT/environment.txt"

declare -A URL CPU_PIDS RSS_PID
URL[gatehouse]="http://127.0.0.1:$GH_PORT/"
URL[nginx]="http://127.0.0.1:$NGINX_PORT/"
CPU_PIDS[gatehouse]="$GH_PID"
CPU_PIDS[nginx]="$NGINX_PID $NGINX_WORKERS"
RSS_PID[gatehouse]=$GH_PID
RSS_PID[nginx]=$NGINX_WORKER

# µs of CPU per request: usec_per_req TICKS REQUESTS
usec_per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan"}'; }

# One saturation run with wrk; appends "rps cpu_us_per_req errors" to $OUT/NAME.max.tsv.
run_max() {
    local name=$1 round=$2 raw="$OUT/$1.wrk.$2.txt" t0 t1 reqs rps errs
    t0=$(cpu_ticks ${CPU_PIDS[$name]})
    timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${URL[$name]}" >"$raw"
    t1=$(cpu_ticks ${CPU_PIDS[$name]})
    reqs=$(awk '/requests in/ {print $1}' "$raw")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw")
    errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$raw")
    printf '%s\t%s\t%s\n' "$rps" "$(usec_per_req $((t1 - t0)) "$reqs")" "$errs" >>"$OUT/$name.max.tsv"
    log "$name round $round: wrk ${rps} req/s, $(usec_per_req $((t1 - t0)) "$reqs") CPU-µs/req, $errs errors"
}

# One fixed-rate run with oha; appends "p50_ms p99_ms achieved_rps cpu_us_per_req errors".
run_rate() {
    local name=$1 round=$2 raw="$OUT/$1.oha.$2.json" t0 t1 ok total p50 p99 rps
    t0=$(cpu_ticks ${CPU_PIDS[$name]})
    timeout $((DURATION + 30)) oha -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction -w \
        --no-tui --output-format json "${URL[$name]}" >"$raw"
    t1=$(cpu_ticks ${CPU_PIDS[$name]})
    ok=$(jq '[.statusCodeDistribution // {} | to_entries[] | select(.key | startswith("2")) | .value] | add // 0' "$raw")
    total=$(jq '([.statusCodeDistribution // {} | .[]] | add // 0) + ([.errorDistribution // {} | .[]] | add // 0)' "$raw")
    p50=$(jq '.latencyPercentiles.p50 * 1000' "$raw")
    p99=$(jq '.latencyPercentiles.p99 * 1000' "$raw")
    rps=$(jq '.summary.requestsPerSec' "$raw")
    printf '%s\t%s\t%s\t%s\t%s\n' "$p50" "$p99" "$rps" "$(usec_per_req $((t1 - t0)) "$ok")" "$((total - ok))" >>"$OUT/$name.rate.tsv"
    log "$name round $round: oha @${RATE}/s p50 $(printf %.3f "$p50") ms, p99 $(printf %.3f "$p99") ms, $(usec_per_req $((t1 - t0)) "$ok") CPU-µs/req"
}

for name in gatehouse nginx; do
    log "warming up $name (${WARMUP}s)"
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "${URL[$name]}" >"$OUT/$name.warmup.txt"
done
: >"$OUT/gatehouse.max.tsv"; : >"$OUT/nginx.max.tsv"; : >"$OUT/gatehouse.rate.tsv"; : >"$OUT/nginx.rate.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate who goes first, so slow drift in the machine's load hits both alike.
    if ((round % 2)); then order="gatehouse nginx"; else order="nginx gatehouse"; fi
    for name in $order; do run_max "$name" "$round"; done
    for name in $order; do run_rate "$name" "$round"; done
done

for name in gatehouse nginx; do
    col() { cut -f"$2" "$OUT/$name.$1.tsv" | median; }
    declare -g "${name}_rps=$(col max 1)" "${name}_cpu_max=$(col max 2)" "${name}_err_max=$(cut -f3 "$OUT/$name.max.tsv" | total)"
    declare -g "${name}_p50=$(col rate 1)" "${name}_p99=$(col rate 2)" "${name}_rate=$(col rate 3)" "${name}_cpu_rate=$(col rate 4)" \
        "${name}_err_rate=$(cut -f5 "$OUT/$name.rate.tsv" | total)"
    declare -g "${name}_rss=$(awk -v k="$(hwm_kib "${RSS_PID[$name]}")" 'BEGIN {printf "%.1f", k / 1024}')"
done
nginx_master_rss=$(awk -v k="$(hwm_kib "$NGINX_PID")" 'BEGIN {printf "%.1f", k / 1024}')

# ---------------------------------------------------------------------------------------
# 6. The table.
row() { # label gatehouse nginx [noratio]
    awk -v l="$1" -v g="$2" -v n="$3" -v nr="${4:-}" 'BEGIN {
        r = (nr == "" && n + 0 != 0 && g != "nan" && n != "nan") ? sprintf("%.2f", g / n) : "-"
        printf "| %-40s | %12s | %12s | %15s |\n", l, g, n, r }'
}
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {if (v == "nan") print v; else printf f, v}'; }
{
    echo
    echo "Median of $ROUNDS rounds; errors are totals over all rounds."
    echo
    printf '| %-40s | %12s | %12s | %15s |\n' metric gatehouse nginx gatehouse/nginx
    printf '| %-40s | %12s | %12s | %15s |\n' "$(printf -- '-%.0s' {1..40})" "------------" "------------" "---------------"
    row "max throughput, req/s (wrk -t$THREADS -c$CONNS)" "$(fmt "$gatehouse_rps" %.0f)" "$(fmt "$nginx_rps" %.0f)"
    row "CPU-us/request at max throughput" "$gatehouse_cpu_max" "$nginx_cpu_max"
    row "latency p50 @ $RATE req/s, ms (oha)" "$(fmt "$gatehouse_p50" %.3f)" "$(fmt "$nginx_p50" %.3f)"
    row "latency p99 @ $RATE req/s, ms (oha)" "$(fmt "$gatehouse_p99" %.3f)" "$(fmt "$nginx_p99" %.3f)"
    row "achieved rate @ $RATE req/s" "$(fmt "$gatehouse_rate" %.0f)" "$(fmt "$nginx_rate" %.0f)"
    row "CPU-us/request @ $RATE req/s" "$gatehouse_cpu_rate" "$nginx_cpu_rate"
    row "peak RSS, MiB (VmHWM; nginx: worker)" "$gatehouse_rss" "$nginx_rss"
    row "errors (non-2xx + socket), wrk / oha" "$gatehouse_err_max / $gatehouse_err_rate" "$nginx_err_max / $nginx_err_rate" noratio
    echo
    echo "nginx master VmHWM: $nginx_master_rss MiB. CPU counts gatehouse's whole process and nginx's master + worker;"
    echo "the backend, wrk and oha share the same CPUs and are not counted."
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg). Raw output: ${OUT#"$ROOT"/}"
} | tee "$OUT/summary.txt"
