#!/usr/bin/env bash
# Measures the replicated QoS 1 path: a 3-node raftmq cluster against a single node.
#
#   benches/cluster.sh [SECS]        (SECS of load per run, default 10)
#
# Builds raftmq and the loadgen in release, starts a 3-node cluster on loopback
# (127.0.0.2-4, fresh data directories), waits until every node answers /ready, and runs
# `loadgen durable` then `loadgen qos1` with clients spread over the three nodes. Then the
# same two runs against one fresh node (127.0.0.5). Prints a table (deliveries/s,
# acknowledged publishes/s, PUBACK p50/p99) and the cluster's term, leader and leader
# changes before and after its runs (an election under load means the Raft timing is
# too tight), and writes each run's JSON line to OUT/<cluster|single>-<scenario>.json,
# OUT = benches/results/<UTC date>/cluster, with the nodes' logs beside them. Everything
# started here is stopped on exit; every wait is bounded. See benches/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

case ${1:-} in -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
duration=${1:-10}
case $duration in '' | *[!0-9.]*) echo "cluster.sh: SECS wants seconds" >&2; exit 2 ;; esac

SCENARIOS="durable qos1"
NODES=(127.0.0.2 127.0.0.3 127.0.0.4)
SINGLE=127.0.0.5
MQTT_PORT=1883
CLUSTER_PORT=7000
HTTP_PORT=8080

BUILD_TIMEOUT=3600 # s for the cargo build
READY_TIMEOUT=60   # s for every node of a cluster to answer /ready
STOP_TIMEOUT=10    # s between SIGTERM and SIGKILL

log() { printf '[cluster %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

command -v curl >/dev/null || die "curl is needed for the /ready probes"

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh" # build_raftmq_and_loadgen, stop_pids
build_raftmq_and_loadgen

OUT=$ROOT/benches/results/$(date -u +%F)/cluster
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftmq-cluster.XXXXXX")
PIDS=()        # nodes running now
LOADGEN_PID="" # the loadgen's timeout, while one runs


cleanup() {
    if [ -n "$LOADGEN_PID" ]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$LOADGEN_PID" 2>/dev/null || true
    fi
    [ ${#PIDS[@]} -eq 0 ] || kill -KILL "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_taken() { # ip port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

start_node() { # setup id ip [join-address]
    local setup=$1 id=$2 ip=$3 join=${4:-}
    local p
    for p in $MQTT_PORT $CLUSTER_PORT $HTTP_PORT; do
        ! port_taken "$ip" "$p" || die "$ip:$p is already in use"
    done
    local args=(--node-id "$id" --data-dir "$WORK/$setup-node$id"
        --mqtt-addr "$ip:$MQTT_PORT" --cluster-addr "$ip:$CLUSTER_PORT"
        --http-addr "$ip:$HTTP_PORT" --max-connections 20000)
    [ -z "$join" ] || args+=(--join "$join")
    # The nodes of a cluster share a secret (a node without one refuses --join).
    RAFTMQ_CLUSTER_SECRET=${RAFTMQ_CLUSTER_SECRET:-bench-cluster-secret-0123456789} \
        "$RAFTMQ" "${args[@]}" >"$OUT/$setup-node$id.log" 2>&1 &
    PIDS+=($!)
}

wait_ready() { # ip...: every node answers /ready with 200 within READY_TIMEOUT
    local deadline=$((SECONDS + READY_TIMEOUT)) ip pid code
    for ip in "$@"; do
        while :; do
            for pid in "${PIDS[@]}"; do
                kill -0 "$pid" 2>/dev/null || die "node (pid $pid) exited while starting"
            done
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
                "http://$ip:$HTTP_PORT/ready" || true)
            [ "$code" != 200 ] || break
            [ $SECONDS -lt $deadline ] || die "$ip not ready after ${READY_TIMEOUT}s (last: $code)"
            sleep 0.2
        done
    done
}

field() { # json key: a top-level number
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2
}

raft_view() { # "TERM LEADER C1,C2,C3": node 1's term and leader, and the leader changes
    # each node counted (events.leader_changes); "?" for what a node did not answer
    local ip json term="" leader="" changes=()
    for ip in "${NODES[@]}"; do
        json=$(curl -s --max-time 2 "http://$ip:$HTTP_PORT/cluster" || true)
        [ -n "$term" ] || term=$({ field "$json" term || true; })
        [ -n "$leader" ] || leader=$({ field "$json" leader || true; })
        changes+=("$({ grep -o '"leader_changes":[0-9]*' <<<"$json" || echo :?; } | cut -d: -f2)")
    done
    local IFS=,
    echo "${term:-?} ${leader:-?} ${changes[*]}"
}

ack_ms() { # json percentile: from ack_latency_us, in ms
    local us
    us=$(grep -o '"ack_latency_us":{[^}]*}' <<<"$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2 || true)
    [ -n "$us" ] && awk -v u="$us" 'BEGIN { printf "%.2f", u / 1000 }' || echo "-"
}

ROWS=()

run_loadgen() { # setup scenario address...
    local setup=$1 scenario=$2
    shift 2
    local brokers=() a
    for a in "$@"; do brokers+=(--broker "$a"); done
    local json=$OUT/$setup-$scenario.json stderr=$OUT/$setup-$scenario.log rc=0
    local limit
    limit=$(awk -v d="$duration" 'BEGIN { printf "%d", d * 3 + 120 }')
    log "$setup: loadgen $scenario for ${duration}s on $*"
    timeout -k 10 "$limit" "$LOADGEN" "$scenario" "${brokers[@]}" \
        --label "raftmq-$setup" --duration "$duration" >"$WORK/out" 2>"$stderr" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    local line
    line=$(grep '^{' "$WORK/out" | tail -n 1 || true)
    local died="" pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || died+=" $pid"
    done
    if [ -z "$line" ]; then
        log "FAILED $setup $scenario: loadgen exit $rc, no result: $(tail -n 2 "$stderr" | tr '\n' ' ')"
        ROWS+=("$setup|$scenario|-|-|-|-|-|loadgen exit $rc")
        return
    fi
    printf '%s\n' "$line" >"$json"
    local err=""
    [ -z "$died" ] || err="nodes exited:$died"
    [[ $line == *'"error":null'* ]] || err+=" $(grep -o '"error":"[^"]*"' <<<"$line" | head -1)"
    local dps acked elapsed pps
    dps=$(field "$line" deliveries_per_sec)
    acked=$(field "$line" acked)
    elapsed=$(field "$line" elapsed_s)
    pps=$(awk -v a="$acked" -v e="$elapsed" 'BEGIN { if (e > 0) printf "%.0f", a / e; else print "-" }')
    ROWS+=("$setup|$scenario|${dps%.*}|$pps|$(ack_ms "$line" p50)|$(ack_ms "$line" p99)|$(field "$line" lost)|${err:-ok}")
    log "$setup $scenario: ${dps%.*} deliveries/s, PUBACK p50 $(ack_ms "$line" p50) ms p99 $(ack_ms "$line" p99) ms${err:+ ($err)}"
}

# --- 3-node cluster ------------------------------------------------------------------------

log "starting a 3-node cluster on ${NODES[*]}"
start_node cluster 1 "${NODES[0]}"
wait_ready "${NODES[0]}"
start_node cluster 2 "${NODES[1]}" "${NODES[0]}:$CLUSTER_PORT"
start_node cluster 3 "${NODES[2]}" "${NODES[0]}:$CLUSTER_PORT"
wait_ready "${NODES[@]}"
log "cluster ready"
read -r TERM_BEFORE LEADER_BEFORE CHANGES_BEFORE < <(raft_view)
for scenario in $SCENARIOS; do
    run_loadgen cluster "$scenario" "${NODES[@]/%/:$MQTT_PORT}"
    sleep 1
done
read -r TERM_AFTER LEADER_AFTER CHANGES_AFTER < <(raft_view)
log "cluster: term $TERM_BEFORE -> $TERM_AFTER, leader $LEADER_BEFORE -> $LEADER_AFTER"
stop_pids "${PIDS[@]}"
PIDS=()

# --- single node ---------------------------------------------------------------------------

log "starting a single node on $SINGLE"
start_node single 1 "$SINGLE"
wait_ready "$SINGLE"
for scenario in $SCENARIOS; do
    run_loadgen single "$scenario" "$SINGLE:$MQTT_PORT"
    sleep 1
done
stop_pids "${PIDS[@]}"
PIDS=()

# --- summary -------------------------------------------------------------------------------

{
    printf '\n%-8s %-8s %13s %13s %12s %12s %6s  %s\n' setup scenario deliveries/s \
        publishes/s "PUBACK p50" "PUBACK p99" lost status
    for row in "${ROWS[@]}"; do
        IFS='|' read -r setup scenario dps pps p50 p99 lost status <<<"$row"
        printf '%-8s %-8s %13s %13s %9s ms %9s ms %6s  %s\n' "$setup" "$scenario" "$dps" \
            "$pps" "$p50" "$p99" "$lost" "$status"
    done
    echo
    echo "cluster across its runs: term $TERM_BEFORE -> $TERM_AFTER, leader $LEADER_BEFORE ->" \
        "$LEADER_AFTER, leader changes counted by nodes 1,2,3: $CHANGES_BEFORE -> $CHANGES_AFTER"
    echo
    echo "node log lines at WARN or ERROR:"
    for f in "$OUT"/*-node*.log; do
        printf '  %-22s %s\n' "$(basename "$f")" "$(grep -cE 'WARN|ERROR' "$f" || true)"
    done
} | tee "$OUT/summary.txt"
log "results in $OUT"
