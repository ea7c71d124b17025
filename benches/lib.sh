# Shell pieces shared by the benchmark scripts (sourced, not run). The script defines
# `log` and STOP_TIMEOUT before sourcing this.

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
