# Shell pieces shared by the benchmark scripts (sourced, not run). The script defines
# `log`, `die`, ROOT, TARGET, BUILD_TIMEOUT and STOP_TIMEOUT before calling them.

build_raftmq_and_loadgen() { # builds both in release; sets RAFTMQ and LOADGEN
    log "building raftmq and loadgen (release)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -p raftmq -p raftmq-benches)
    RAFTMQ=$TARGET/release/raftmq
    LOADGEN=$TARGET/release/loadgen
    local bin
    for bin in "$RAFTMQ" "$LOADGEN"; do
        [ -x "$bin" ] || die "$bin missing after the build"
    done
}

stop_pids() { # pid...: SIGTERM, then SIGKILL whatever is left after STOP_TIMEOUT
    local pid i alive
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for i in $(seq 1 $((STOP_TIMEOUT * 10))); do
        alive=""
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -n "$alive" ] || break
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
