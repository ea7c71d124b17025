#!/usr/bin/env bash
# Measures failover time: a node of a 3-node raftmq cluster is SIGKILLed; how long until
# its persistent subscribers are served again by the other nodes?
#
#   benches/failover.sh [--max-connect-rate R] [--out NAME] [RUNS] [-- LOADGEN-FAILOVER-FLAGS...]
#                                                                   (RUNS default 10)
#
# Each run starts a fresh cluster on loopback (127.0.0.2-4, fresh data directories),
# waits until every node answers /ready and all three are voters, then runs
# `loadgen failover`: 20 persistent QoS 1 subscribers on the victim, a publisher on a
# survivor (QoS 1 every 10 ms), SIGKILL of the victim by the loadgen (T0), subscribers
# reconnecting round-robin to the survivors. Odd runs kill the leader, even runs a
# follower. Flags after `--` go to the loadgen (`loadgen failover --help`). Prints per
# run and per kind the failover time (T0 to the last subscriber's first message after
# reconnecting), the resume time (T0 to the last CONNACK with session present, p50, p99),
# the survivors' peak RSS and CPU seconds during the storm, and the lost messages and
# session-present violations (both must be 0). --max-connect-rate R starts every node
# with it. Writes OUT/runs.jsonl (one loadgen JSON line per run), the nodes' logs, the
# survivors' /cluster counters every 0.25 s (run*-cluster.log: proposer batches) and
# OUT/summary.txt, OUT = benches/results/<UTC date>/NAME (NAME default failover).
# Everything started here is stopped on exit; every wait is bounded. See benches/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

case ${1:-} in -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
connect_rate="" name=failover
while [ $# -gt 0 ]; do
    case $1 in
    --max-connect-rate) connect_rate=${2:-}; shift 2 || exit 2 ;;
    --out) name=${2:-}; shift 2 || exit 2 ;;
    *) break ;;
    esac
done
case $connect_rate in *[!0-9]*) echo "failover.sh: --max-connect-rate wants a number" >&2; exit 2 ;; esac
case $name in '' | /* | *..*) echo "failover.sh: --out wants a relative name" >&2; exit 2 ;; esac
runs=10
if [ $# -gt 0 ] && [ "$1" != -- ]; then runs=$1; shift; fi
case $runs in '' | *[!0-9]* | 0) echo "failover.sh: RUNS wants a positive number" >&2; exit 2 ;; esac
[ $# -eq 0 ] || { [ "$1" = -- ] && shift; } || { echo "failover.sh: extra flags go after --" >&2; exit 2; }
EXTRA=("$@")

NODES=(127.0.0.2 127.0.0.3 127.0.0.4) # node i+1 on NODES[i]
MQTT_PORT=1883
CLUSTER_PORT=7000
HTTP_PORT=8080

BUILD_TIMEOUT=3600  # s for the cargo build
READY_TIMEOUT=60    # s for a fresh cluster to have three ready voters
LOADGEN_TIMEOUT=${LOADGEN_TIMEOUT:-300} # s for one `loadgen failover` (its own waits add up to ~135 s)
STOP_TIMEOUT=10     # s between SIGTERM and SIGKILL

log() { printf '[failover %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

command -v curl >/dev/null || die "curl is needed for the /ready and /cluster probes"

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh" # build_raftmq_and_loadgen, stop_pids
build_raftmq_and_loadgen

OUT=$ROOT/benches/results/$(date -u +%F)/$name
mkdir -p "$OUT"
rm -f "$OUT"/runs.jsonl "$OUT"/run*-node*.log "$OUT"/run*-loadgen.log "$OUT"/run*-cluster.log
WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftmq-failover.XXXXXX")
PID=()             # PID[i]: node i's process, while it may run
LOADGEN_PID=""     # the loadgen's timeout, while one runs
STARTED=$SECONDS


stop_cluster() {
    local pids=() i
    for i in "${!PID[@]}"; do pids+=("${PID[$i]}"); done
    PID=()
    stop_pids ${pids[@]+"${pids[@]}"}
}

cleanup() {
    if [ -n "$LOADGEN_PID" ]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$LOADGEN_PID" 2>/dev/null || true
    fi
    local i
    for i in "${!PID[@]}"; do kill -KILL "${PID[$i]}" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_taken() { # ip port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

start_node() { # run id [join-address]
    local run=$1 id=$2 join=${3:-} ip=${NODES[$(($2 - 1))]} p
    for p in $MQTT_PORT $CLUSTER_PORT $HTTP_PORT; do
        ! port_taken "$ip" "$p" || die "$ip:$p is already in use"
    done
    local args=(--node-id "$id" --data-dir "$WORK/run$run-node$id"
        --mqtt-addr "$ip:$MQTT_PORT" --cluster-addr "$ip:$CLUSTER_PORT"
        --http-addr "$ip:$HTTP_PORT")
    [ -z "$join" ] || args+=(--join "$join")
    [ -z "$connect_rate" ] || args+=(--max-connect-rate "$connect_rate")
    # The nodes of a cluster share a secret (a node without one refuses --join).
    RAFTMQ_CLUSTER_SECRET=${RAFTMQ_CLUSTER_SECRET:-bench-cluster-secret-0123456789} \
        "$RAFTMQ" "${args[@]}" >"$OUT/run$run-node$id.log" 2>&1 &
    PID[$id]=$!
}

status() { # ip: the /cluster JSON, or nothing
    curl -s --max-time 2 "http://$1:$HTTP_PORT/cluster" || true
}

field() { # json key: a top-level number (or null); nothing when absent
    { grep -o "\"$2\":[^,}]*" <<<"$1" || true; } | head -1 | cut -d: -f2
}

wait_cluster() { # ip...: every node /ready, and three voters with a leader
    local deadline=$((SECONDS + READY_TIMEOUT)) ip i code json
    for ip in "$@"; do
        while :; do
            for i in "${!PID[@]}"; do
                kill -0 "${PID[$i]}" 2>/dev/null || die "node $i exited while starting"
            done
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
                "http://$ip:$HTTP_PORT/ready" || true)
            [ "$code" != 200 ] || break
            [ $SECONDS -lt $deadline ] || die "$ip not ready after ${READY_TIMEOUT}s (last: $code)"
            sleep 0.2
        done
    done
    while :; do
        json=$(status "$1")
        [ "$(grep -o '"voter":true' <<<"$json" | wc -l)" -eq 3 ] &&
            [[ $(field "$json" leader) =~ ^[1-3]$ ]] && return 0
        [ $SECONDS -lt $deadline ] || die "no three voters with a leader after ${READY_TIMEOUT}s"
        sleep 0.2
    done
}

run_once() { # run
    local r=$1 kind victim leader json i
    log "run $r/$runs: starting a 3-node cluster on ${NODES[*]}"
    start_node "$r" 1
    wait_cluster_one "${NODES[0]}"
    start_node "$r" 2 "${NODES[0]}:$CLUSTER_PORT"
    start_node "$r" 3 "${NODES[0]}:$CLUSTER_PORT"
    wait_cluster "${NODES[@]}"
    leader=$(field "$(status "${NODES[0]}")" leader)
    local followers=()
    for i in 1 2 3; do [ "$i" = "$leader" ] || followers+=("$i"); done
    if [ $((r % 2)) -eq 1 ]; then
        kind=leader victim=$leader
    else
        kind=follower victim=${followers[$((r / 2 % 2))]}
    fi
    local survivors=()
    for i in 1 2 3; do
        [ "$i" = "$victim" ] || survivors+=(--survivor "${NODES[$((i - 1))]}:$MQTT_PORT"
            --survivor-pid "${PID[$i]}")
    done
    log "run $r: leader is node $leader; killing node $victim ($kind)"
    local rc=0
    timeout -k 10 "$LOADGEN_TIMEOUT" "$LOADGEN" failover --kind "$kind" \
        --victim "${NODES[$((victim - 1))]}:$MQTT_PORT" "${survivors[@]}" \
        --kill-pid "${PID[$victim]}" ${EXTRA[@]+"${EXTRA[@]}"} \
        >"$WORK/out" 2>"$OUT/run$r-loadgen.log" &
    LOADGEN_PID=$!
    watch_counters "$r" "$victim" &
    local watcher=$!
    # (stderr: bash would report the victim's death by SIGKILL while waiting here)
    wait "$LOADGEN_PID" 2>/dev/null || rc=$?
    LOADGEN_PID=""
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    # The victim is dead when the loadgen got as far as the kill; reap it either way.
    kill -KILL "${PID[$victim]}" 2>/dev/null || true
    wait "${PID[$victim]}" 2>/dev/null || true
    unset "PID[$victim]"
    local after=null line
    for i in 1 2 3; do
        [ "$i" = "$victim" ] && continue
        after=$(field "$(status "${NODES[$((i - 1))]}")" leader)
        break
    done
    line=$(grep '^{' "$WORK/out" | tail -n 1 || true)
    [ -n "$line" ] || line="{\"scenario\":\"failover\",\"kind\":\"$kind\",\"failover_ms\":null,\"error\":\"loadgen exit $rc, no result\"}"
    printf '{"run":%d,"victim_node":%s,"leader_before":%s,"leader_after":%s,%s\n' \
        "$r" "$victim" "$leader" "${after:-null}" "${line#\{}" >>"$OUT/runs.jsonl"
    log "run $r ($kind): failover $(field "$line" failover_ms) ms, median $(field "$line" median_ms) ms, lost $(field "$line" lost)$( [ $rc -eq 0 ] || echo ", loadgen exit $rc")"
    stop_cluster
}

watch_counters() { # run victim: the survivors' /cluster every 0.25 s, while the loadgen runs
    local i
    while kill -0 "$LOADGEN_PID" 2>/dev/null; do
        for i in 1 2 3; do
            [ "$i" = "$2" ] || printf '%s node%s %s\n' "$(date -u +%s.%N)" "$i" \
                "$(status "${NODES[$((i - 1))]}" | grep -o '"role":"[a-z]*"\|"events":{[^}]*}' | tr '\n' ' ')"
        done
        sleep 0.25
    done >>"$OUT/run$1-cluster.log"
}

wait_cluster_one() { # ip: the first node alone is /ready
    local deadline=$((SECONDS + READY_TIMEOUT)) code
    while :; do
        kill -0 "${PID[1]}" 2>/dev/null || die "node 1 exited while starting"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1:$HTTP_PORT/ready" || true)
        [ "$code" != 200 ] || return 0
        [ $SECONDS -lt $deadline ] || die "$1 not ready after ${READY_TIMEOUT}s (last: $code)"
        sleep 0.2
    done
}

for r in $(seq 1 "$runs"); do
    run_once "$r"
    rm -rf "${WORK:?}"/run"$r"-node*
done

# --- summary -------------------------------------------------------------------------------

stats() { # values on stdin: "median worst" of the numbers, or "- -"
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- -"; exit }
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f\n", m, v[NR] }'
}

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || commit+=" (dirty tree)"
{
    echo "failover of a 3-node raftmq cluster, $(date -u +%F), commit $commit, $(nproc) cores"
    echo "max_connect_rate: ${connect_rate:-off}; loadgen flags: ${EXTRA[*]:-(defaults)}"
    echo "per run: T0 = SIGKILL of the victim; failover = T0 to the last subscriber's first"
    echo "message after reconnecting, median = the median subscriber's; times in ms"
    printf '\n%3s %-8s %6s %6s %9s %9s %9s %5s %9s  %s\n' run kind victim leader \
        failover median CONNACK lost "!present" status
    while IFS= read -r line; do
        err=$(grep -o '"error":"[^"]*"' <<<"$line" | head -1 | cut -d'"' -f4 || true)
        printf '%3s %-8s %6s %3s→%-2s %9s %9s %9s %5s %9s  %s\n' "$(field "$line" run)" \
            "$(grep -o '"kind":"[a-z]*"' <<<"$line" | cut -d'"' -f4)" \
            "$(field "$line" victim_node)" "$(field "$line" leader_before)" \
            "$(field "$line" leader_after)" "$(field "$line" failover_ms)" \
            "$(field "$line" median_ms)" "$(field "$line" connack_max_ms)" \
            "$(field "$line" lost)" "$(field "$line" session_present_violations)" "${err:-ok}"
    done <"$OUT/runs.jsonl"
    printf '\n%-9s %5s %16s %15s %18s\n' kind runs "median failover" "worst failover" \
        "median subscriber"
    for kind in leader follower all; do
        sel=$(grep "\"kind\":\"${kind/all/}" "$OUT/runs.jsonl" | grep -v '"failover_ms":null' || true)
        n=$(grep -c . <<<"$sel" || true)
        read -r fmed fworst < <(grep -o '"failover_ms":[0-9.]*' <<<"$sel" | cut -d: -f2 | stats)
        read -r mmed _ < <(grep -o '"median_ms":[0-9.]*' <<<"$sel" | cut -d: -f2 | stats)
        printf '%-9s %5s %13s ms %12s ms %15s ms\n' "$kind" "$n" "$fmed" "$fworst" "$mmed"
    done
    printf '\n%3s %-8s %6s %9s %8s %8s %9s  %s\n' run kind N resume p50 p99 resumes/s \
        "survivors, then loadgen: peak RSS MiB, CPU s (T0 to all resumed)"
    while IFS= read -r line; do
        printf '%3s %-8s %6s %9s %8s %8s %9s  %s\n' "$(field "$line" run)" \
            "$(grep -o '"kind":"[a-z]*"' <<<"$line" | cut -d'"' -f4)" \
            "$(field "$line" subscribers)" "$(field "$line" resume_ms)" \
            "$(field "$line" resume_p50_ms)" "$(field "$line" resume_p99_ms)" \
            "$(field "$line" resumes_per_sec)" \
            "$(grep -o '"rss_peak_kib":[0-9]*,"cpu_secs":[0-9.]*' <<<"$line" |
                awk -F'[:,]' '{ printf "%s%d MiB %.1f s", (NR > 1 ? ", " : ""), $2 / 1024, $4 }')"
    done <"$OUT/runs.jsonl"
    sum() { grep -o "\"$1\":[0-9]*" "$OUT/runs.jsonl" | cut -d: -f2 | awk '{ s += $1 } END { print s + 0 }'; }
    echo
    echo "runs without a failover time (failed): $(grep -c '"failover_ms":null' "$OUT/runs.jsonl" || true)"
    echo "acknowledged messages never delivered to some subscriber: $(sum lost)"
    echo "reconnects without session present: $(sum session_present_violations)"
    echo "node log lines at WARN or ERROR: $(cat "$OUT"/run*-node*.log | grep -cE 'WARN|ERROR' || true)"
    echo "wall time: $((SECONDS - STARTED)) s for $runs runs"
} | tee "$OUT/summary.txt"
log "results in $OUT"
