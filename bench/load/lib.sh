# Sourced by run.sh and instructions.sh (which set ROOT, BUILD_TIMEOUT and define `log`
# and `die`): what both do the same way.

# apt_install PACKAGE...: installs the Debian packages given, if any (apt-get update first).
apt_install() {
    (($#)) || return 0
    log "installing $* (apt-get)"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@"
}

# oha_install: oha (fixed-rate load with latency percentiles) from crates.io, if missing:
# Debian has no wrk2 package.
oha_install() {
    command -v oha >/dev/null && return 0
    local version=${OHA_VERSION:-1.16.0}
    log "installing oha $version (cargo install --locked)"
    timeout 1800 cargo install oha --version "$version" --locked
}

# gatehouse_binary: sets GH to $GATEHOUSE_BIN, or to a release build made now.
gatehouse_binary() {
    if [[ -n ${GATEHOUSE_BIN:-} ]]; then
        GH=$GATEHOUSE_BIN
    else
        log "building gatehouse (release); this waits for any other cargo holding the target dir"
        (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -p gatehouse)
        GH="${CARGO_TARGET_DIR:-$ROOT/target}/release/gatehouse"
    fi
    [[ -x $GH ]] || die "no gatehouse binary at $GH"
}

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
