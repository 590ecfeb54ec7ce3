#!/usr/bin/env bash
# Instructions per proxied request, gatehouse vs nginx, counted by callgrind: the HTTP case
# of run.sh (one worker each, an nginx backend answering "ok", HTTP/1.1 keep-alive on both
# sides), with the counters zeroed after a warm-up so that start-up is not counted.
# Instruction counts do not depend on what else the machine runs, so this ratio is
# repeatable where run.sh's timings are not; they leave out the kernel. See README.md.
#
#   bench/load/instructions.sh      # as root (it apt-get installs what is missing)
#
# Knobs (environment): DURATION=8 (s of measured load), CONNS=10, WARMUP=2 (s),
# RATE (req/s: oha at this fixed rate instead of wrk as fast as it can, so that requests
# come one at a time and each pays for its own wake-ups, as at run.sh's fixed rate; under
# callgrind keep it at a few hundred), CLOSE=1 (with RATE: a new client connection for each
# request, so that accepting, spawning and ending a connection are counted too),
# GATEHOUSE_BIN (skip the build), BUILD_TIMEOUT=2400 (s), KEEP=DIR (keep the callgrind dumps
# there, for callgrind_annotate).
set -euo pipefail

DURATION=${DURATION:-8}
CONNS=${CONNS:-10}
WARMUP=${WARMUP:-2}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/gatehouse-instructions.XXXXXX)
export PATH="$HOME/.cargo/bin:$PATH"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[instructions %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$HERE/lib.sh"
[[ ${CLOSE:-0} != 1 || -n ${RATE:-} ]] || die "CLOSE=1 needs RATE (oha)"

missing=()
tools=(nginx curl valgrind)
if [[ -n ${RATE:-} ]]; then tools+=(jq); else tools+=(wrk); fi
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
apt_install "${missing[@]}"
[[ -z ${RATE:-} ]] || oha_install
gatehouse_binary

# wait_ok URL PID: until URL answers 200, for at most 60 s (callgrind starts slowly).
wait_ok() {
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$2" 2>/dev/null || die "process $2 exited while waiting for $1"
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true) == 200 ]] && return 0
        sleep 0.1
    done
    die "$1 not ready after 60 s"
}
# nginx_conf DIR PORT BODY: a one-worker, single-process nginx serving BODY (http block).
nginx_conf() {
    mkdir -p "$1/tmp"
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
$3
}
EOF
}

free_port BACKEND
nginx_conf "$WORK/backend" "$BACKEND" "    server { listen 127.0.0.1:$BACKEND; location / { return 200 \"ok\\n\"; } }"
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)
wait_ok "http://127.0.0.1:$BACKEND/" "$!"

free_port NGINX_PORT
nginx_conf "$WORK/nginx" "$NGINX_PORT" "    upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";
            # As in run.sh: the forwarding gatehouse does to every request.
            proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
        }
    }"

free_port GH_PORT
free_port GH_ADMIN
mkdir -p "$WORK/gatehouse"
cat >"$WORK/gatehouse/bench.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, protocol: HTTP, port: $GH_PORT}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules: [{matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: backend, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend, namespace: default, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
endpoints: [{addresses: ["127.0.0.1"]}]
ports: [{name: http, port: $BACKEND}]
EOF

# load URL SECONDS: drives load, prints the number of requests answered.
load() {
    if [[ -n ${RATE:-} ]]; then
        # -w: requests still out at the end are answered, and counted, not cut off.
        local -a close=()
        [[ ${CLOSE:-0} == 1 ]] && close=(--disable-keepalive)
        timeout $(($2 + 60)) oha -z "${2}s" -w -q "$RATE" -c "$CONNS" "${close[@]}" --no-tui --output-format json "$1" |
            jq '.statusCodeDistribution["200"] // empty'
    else
        timeout $(($2 + 60)) wrk -t1 -c"$CONNS" -d"${2}s" "$1" | awk '/requests in/ {print $1}'
    fi
}

# measure NAME URL COMMAND...: runs COMMAND under callgrind, warms it up, zeroes the
# counters, drives DURATION s of load and dumps; sets REQS and INSTRUCTIONS.
measure() {
    local name=$1 url=$2 out="$WORK/$1.callgrind" pid dump
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ok "$url" "$pid"
    load "$url" "$WARMUP" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    REQS=$(load "$url" "$DURATION")
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The one dump: counts since the counters were zeroed (killed, so no dump at exit).
    dump=$(ls -1 "$out".* 2>/dev/null | head -1)
    [[ -n $dump ]] || die "no callgrind dump for $name"
    INSTRUCTIONS=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/$name.callgrind"; fi
    [[ $REQS =~ ^[0-9]+$ ]] && ((REQS > 0)) && [[ -n $INSTRUCTIONS ]] || die "no figures for $name"
}

log "gatehouse under callgrind"
measure gatehouse "http://127.0.0.1:$GH_PORT/" \
    "$GH" run --config "$WORK/gatehouse" --admin "127.0.0.1:$GH_ADMIN" --bind 127.0.0.1 --workers 1
gh_reqs=$REQS gh_ir=$INSTRUCTIONS
log "nginx under callgrind"
measure nginx "http://127.0.0.1:$NGINX_PORT/" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
ng_reqs=$REQS ng_ir=$INSTRUCTIONS

awk -v gr="$gh_reqs" -v gi="$gh_ir" -v nr="$ng_reqs" -v ni="$ng_ir" 'BEGIN {
    g = gi / gr; n = ni / nr
    printf "| %-34s | %10s | %10s | %15s |\n", "HTTP, user-space", "gatehouse", "nginx", "gatehouse/nginx"
    printf "| %-34s | %10s | %10s | %15s |\n", "----------------------------------", "----------", "----------", "---------------"
    printf "| %-34s | %10d | %10d | %15s |\n", "requests measured", gr, nr, "-"
    printf "| %-34s | %10.0f | %10.0f | %15.2f |\n", "instructions per request", g, n, g / n
}'
