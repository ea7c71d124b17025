#!/usr/bin/env bash
# Issue 14: many persistent sessions in a 3-node cluster, and what they cost.
#
#   benches/sessions.sh [--sessions N] [--queued M] [--in-flight K] [--out DIR]
#
# N persistent sessions (default 1,000,000; clean session 0, one QoS 1 subscription
# each, offline), created by `loadgen sessions` K at a time (default 500) round-robin
# over a fresh 3-node loopback cluster (127.0.0.2-4); with --queued M every session
# shares one filter and M QoS 1 messages are queued in each. Then, on that cluster:
#   a. each node's RSS before and after, and bytes per session; each data dir's size;
#   b. a snapshot built on every node (POST /cluster/snapshot) while a 1 -> 1 QoS 1
#      persistent-session load runs at 5,000 msgs/s: build ms and bytes per node, and
#      the load's PUBACK p50/p99/max and end-to-end max;
#   c. node 3 SIGKILLed and restarted on its data dir: seconds until /ready;
#   d. a 4th node (127.0.0.5) joining with a fresh data dir: seconds until /ready.
# Writes OUT/summary.txt, the loadgen's JSON lines and tables, each node's /cluster
# JSON and log; OUT defaults to benches/results/<UTC date>/sessions-<N>[-q<M>].
# Every wait is bounded; a failed step is reported and the rest goes on where it can.
# 100,000 sessions took about 6 minutes here, most of it the creation (benches/README.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

sessions=1000000 queued=0 in_flight=500 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --sessions) sessions=${2:-}; shift 2 || exit 2 ;;
    --queued) queued=${2:-}; shift 2 || exit 2 ;;
    --in-flight) in_flight=${2:-}; shift 2 || exit 2 ;;
    --out) OUT=${2:-}; shift 2 || exit 2 ;;
    *) echo "sessions.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$sessions" "$queued" "$in_flight"; do
    case $n in '' | *[!0-9]*) echo "sessions.sh: $n is not a number" >&2; exit 2 ;; esac
done
[ "$sessions" -gt 0 ] || { echo "sessions.sh: --sessions must be above 0" >&2; exit 2; }
suffix=sessions-$sessions
[ "$queued" -eq 0 ] || suffix+=-q$queued
OUT=${OUT:-$ROOT/benches/results/$(date -u +%F)/$suffix}

NODES=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5) # node i on NODES[i-1]; node 4 joins later
MQTT_PORT=1883
CLUSTER_PORT=7000
HTTP_PORT=8080
LOAD_SECS=15   # the load during the snapshot
TRIGGER_AT=4   # s into that load when the snapshots are asked for

BUILD_TIMEOUT=3600                                    # s for the cargo build
READY_TIMEOUT=60                                      # s for a fresh node's /ready
CREATE_TIMEOUT=$((sessions / 100 + 600))              # s for creating the sessions
PUBLISH_TIMEOUT=$((queued * sessions / 20000 + 300))  # s for the queued publishes
SYNC_TIMEOUT=600                                      # s for the nodes' applied indexes to agree
SNAPSHOT_TIMEOUT=300                                  # s for every node's snapshot, once asked
RESTART_TIMEOUT=600                                   # s for the restarted node's /ready
JOIN_TIMEOUT=900                                      # s for the new node's /ready
STOP_TIMEOUT=10                                       # s between SIGTERM and SIGKILL

log() { printf '[sessions %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

command -v curl >/dev/null || die "curl is needed for the HTTP probes"

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh" # build_raftmq_and_loadgen, stop_pids
build_raftmq_and_loadgen

mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftmq-sessions.XXXXXX")
# The nodes of a cluster share a secret (a node without one refuses --join); the admin
# token lets us POST /cluster/snapshot.
export RAFTMQ_CLUSTER_SECRET=${RAFTMQ_CLUSTER_SECRET:-bench-cluster-secret-0123456789}
export RAFTMQ_ADMIN_TOKEN=${RAFTMQ_ADMIN_TOKEN:-bench-admin-token-0123456789}
# One INFO line per client connect and disconnect would be hundreds of MB: keep the rest.
export RUST_LOG=${RUST_LOG:-info,broker_core::connection=warn}

# Each session is one short connection, and the kernel's connection tracking keeps an
# entry for each for 120 s after it closes: at its default 262,144 entries the table
# fills after about 260,000 sessions and the kernel drops new SYNs ("nf_conntrack: table
# full" in dmesg), which then caps creation at about 2,200/s whatever the broker does.
# Raised for the run when we may (root), put back on exit.
CONNTRACK_MAX=/proc/sys/net/netfilter/nf_conntrack_max
CONNTRACK_WAS=""
if [ -w "$CONNTRACK_MAX" ] && [ "$(cat "$CONNTRACK_MAX")" -lt 2097152 ]; then
    CONNTRACK_WAS=$(cat "$CONNTRACK_MAX")
    echo 2097152 >"$CONNTRACK_MAX" && log "nf_conntrack_max $CONNTRACK_WAS -> 2097152 for the run" \
        || CONNTRACK_WAS=""
elif [ -r "$CONNTRACK_MAX" ]; then
    log "nf_conntrack_max is $(cat "$CONNTRACK_MAX") (not raised): more sessions than that in 120 s stall on dropped SYNs"
fi

declare -a PID=()    # PID[i]: node i's process, while it runs
LOADGEN_PID=""       # a loadgen's timeout, while one runs


cleanup() {
    if [ -n "$LOADGEN_PID" ]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$LOADGEN_PID" 2>/dev/null || true
    fi
    local pid
    for pid in "${PID[@]}"; do
        [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    [ -z "$CONNTRACK_WAS" ] || echo "$CONNTRACK_WAS" >"$CONNTRACK_MAX" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs_since() { # start_ms: seconds since, 2 decimals
    awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }'
}

port_taken() { # ip port
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

start_node() { # id [join-address]: node id on NODES[id-1], data dir kept across restarts
    local id=$1 join=${2:-} ip=${NODES[$1 - 1]} p
    for p in $MQTT_PORT $CLUSTER_PORT $HTTP_PORT; do
        ! port_taken "$ip" "$p" || die "$ip:$p is already in use"
    done
    local args=(--node-id "$id" --data-dir "$WORK/node$id"
        --mqtt-addr "$ip:$MQTT_PORT" --cluster-addr "$ip:$CLUSTER_PORT"
        --http-addr "$ip:$HTTP_PORT" --max-connections 20000
        --max-persistent-sessions $((sessions + 10000)))
    [ -z "$join" ] || args+=(--join "$join")
    "$RAFTMQ" "${args[@]}" >>"$OUT/node$id.log" 2>&1 &
    PID[id]=$!
}

ready() { # id: 0 when node id's /ready answers 200
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://${NODES[$1 - 1]}:$HTTP_PORT/ready" || true)
    [ "$code" = 200 ]
}

WHY="" # why the last wait_ready failed
wait_ready() { # id limit: 0 once /ready answers 200; 1 if the node exits or time runs out
    local id=$1 deadline=$((SECONDS + $2))
    until ready "$id"; do
        if ! kill -0 "${PID[id]}" 2>/dev/null; then
            WHY="node $id exited: $(tail -n 1 "$OUT/node$id.log" | cut -c1-300)"
            log "$WHY"
            return 1
        fi
        [ $SECONDS -lt $deadline ] || { WHY="node $id not ready after $2 s"; log "$WHY"; return 1; }
        sleep 0.1
    done
}

status() { # id: node id's GET /cluster JSON, empty when it does not answer
    curl -s --max-time 5 "http://${NODES[$1 - 1]}:$HTTP_PORT/cluster" || true
}

field() { # json key: the first number (or null) under that key, else empty
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2 || true
}

snap_field() { # json key: a field of the "snapshot" object, empty when there is none
    local obj
    obj=$(grep -o '"snapshot":{[^}]*}' <<<"$1" || true)
    [ -z "$obj" ] || field "$obj" "$2"
}

rss_kib() { # pid: VmRSS in KiB, empty when the process is gone
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

dir_bytes() { # dir
    du -sb "$1" 2>/dev/null | cut -f1 || true
}

or_na() { # value: itself, or n/a when empty or null
    case ${1:-} in '' | null) echo n/a ;; *) echo "$1" ;; esac
}

NOTES=() # failed steps and anything odd, for the summary
note() { log "$*"; NOTES+=("$*"); }

run_loadgen() { # name limit args...: the loadgen's JSON line into OUT/name.json
    local name=$1 limit=$2 rc=0
    shift 2
    timeout -k 10 "$limit" "$LOADGEN" "$@" >"$WORK/$name.out" 2>"$OUT/$name.log" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    grep '^{' "$WORK/$name.out" | tail -n 1 >"$OUT/$name.json" || true
    [ -s "$OUT/$name.json" ] || note "$name: loadgen exit $rc, no result: $(tail -n 2 "$OUT/$name.log" | tr '\n' ' ')"
    [ "$rc" -eq 0 ] || note "$name: loadgen exit $rc"
    return 0
}

# --- the cluster ---------------------------------------------------------------------------

log "starting a 3-node cluster on ${NODES[*]:0:3} (results in $OUT)"
start_node 1
wait_ready 1 "$READY_TIMEOUT" || die "node 1 did not start"
start_node 2 "${NODES[0]}:$CLUSTER_PORT"
start_node 3 "${NODES[0]}:$CLUSTER_PORT"
{ wait_ready 2 "$READY_TIMEOUT" && wait_ready 3 "$READY_TIMEOUT"; } || die "the cluster did not form"
log "cluster ready"
sleep 2 # let the fresh nodes settle before their baseline
declare -a RSS0=() RSS1=() DISK=()
for i in 1 2 3; do RSS0[i]=$(rss_kib "${PID[i]}"); done

# --- a. the sessions -----------------------------------------------------------------------

brokers=()
for i in 1 2 3; do brokers+=(--broker "${NODES[i - 1]}:$MQTT_PORT"); done
flags=(--sessions "$sessions" --in-flight "$in_flight" --timeout "$CREATE_TIMEOUT")
[ "$queued" -eq 0 ] || flags+=(--queued "$queued" --publish-timeout "$PUBLISH_TIMEOUT")
log "creating $sessions sessions ($queued queued messages each), $in_flight at a time"
run_loadgen sessions $((CREATE_TIMEOUT + PUBLISH_TIMEOUT + 60)) sessions "${brokers[@]}" "${flags[@]}"
SJSON=$(cat "$OUT/sessions.json")
created=$(field "$SJSON" created)
created=${created:-0}
log "created $created sessions in $(or_na "$(field "$SJSON" elapsed_s)") s"

# The followers apply what the leader committed a little later: wait until the three
# applied indexes agree.
log "waiting for the nodes' applied indexes to agree"
deadline=$((SECONDS + SYNC_TIMEOUT)) synced=""
while [ $SECONDS -lt $deadline ]; do
    applied=()
    for i in 1 2 3; do applied+=("$(field "$(status "$i")" applied_index)"); done
    if [ -n "${applied[0]}" ] && [ "${applied[0]}" = "${applied[1]}" ] &&
        [ "${applied[0]}" = "${applied[2]}" ]; then
        synced=${applied[0]}
        break
    fi
    sleep 0.5
done
[ -n "$synced" ] || note "applied indexes still differ after ${SYNC_TIMEOUT}s: ${applied[*]}"
sleep 3 # deferred frees, the last disconnects
for i in 1 2 3; do
    RSS1[i]=$(rss_kib "${PID[i]}")
    DISK[i]=$(dir_bytes "$WORK/node$i")
    status "$i" >"$OUT/cluster-node$i-after-sessions.json"
done

# --- b. a snapshot under load --------------------------------------------------------------

declare -a BUILDS0=() BUILDS1=() SNAP_MS=() SNAP_HOLD=() SNAP_BYTES=() SNAP_IDX0=() SNAP_IDX1=() POST=()
for i in 1 2 3; do
    json=$(status "$i")
    BUILDS0[i]=$(snap_field "$json" builds)
    SNAP_IDX0[i]=$(field "$json" snapshot_index)
done
[ -n "${BUILDS0[1]}" ] || note "GET /cluster has no \"snapshot\" object: snapshot figures n/a"
if "$LOADGEN" --help 2>/dev/null | grep -q 'latency-durable'; then
    load=(latency-durable --broker "${NODES[0]}:$MQTT_PORT" --broker "${NODES[1]}:$MQTT_PORT"
        --duration "$LOAD_SECS")
else
    load=(durable --publishers 1 --subscribers 1 --rate 5000 --duration "$LOAD_SECS"
        --broker "${NODES[0]}:$MQTT_PORT" --broker "${NODES[1]}:$MQTT_PORT")
fi
log "snapshot: loadgen ${load[*]}; POST /cluster/snapshot on every node after ${TRIGGER_AT}s"
timeout -k 10 $((LOAD_SECS * 3 + 120)) "$LOADGEN" "${load[@]}" >"$WORK/load.out" \
    2>"$OUT/snapshot-load.log" &
LOADGEN_PID=$!
start=$SECONDS triggered="" CURLS=()
{
    while kill -0 "$LOADGEN_PID" 2>/dev/null ||
        { [ -n "${BUILDS0[1]}" ] && [ $((SECONDS - start)) -lt $((TRIGGER_AT + SNAPSHOT_TIMEOUT)) ]; }; do
        if [ -z "$triggered" ] && [ $((SECONDS - start)) -ge $TRIGGER_AT ]; then
            # In the background and all at once: the answer may wait for the build.
            for i in 1 2 3; do
                curl -s -o "$WORK/post$i" -w '%{http_code}' --max-time "$SNAPSHOT_TIMEOUT" \
                    -X POST -H "Authorization: Bearer $RAFTMQ_ADMIN_TOKEN" \
                    "http://${NODES[i - 1]}:$HTTP_PORT/cluster/snapshot" >"$WORK/post$i.code" &
                CURLS+=($!)
                echo "$(date -u +%T.%N) node$i POST /cluster/snapshot sent"
            done
            triggered=1
        fi
        grown=1
        for i in 1 2 3; do
            json=$(status "$i")
            b=$(snap_field "$json" builds)
            echo "$(date -u +%T.%N) node$i applied $(field "$json" applied_index)" \
                "snapshot_index $(field "$json" snapshot_index) snapshot $(grep -o '"snapshot":{[^}]*}' <<<"$json" || echo -)"
            if [ -z "$triggered" ] || [ -z "$b" ] || [ -z "${BUILDS0[i]}" ] || [ "$b" -le "${BUILDS0[i]}" ]; then
                grown=""
            fi
        done
        # Once the load is over, only the snapshots are waited for.
        if [ -n "$grown" ] && ! kill -0 "$LOADGEN_PID" 2>/dev/null; then break; fi
        sleep 0.5
    done
} >"$OUT/snapshot-poll.log"
rc=0
wait "$LOADGEN_PID" || rc=$?
LOADGEN_PID=""
for pid in "${CURLS[@]}"; do wait "$pid" 2>/dev/null || true; done # bounded by --max-time
for i in 1 2 3; do
    POST[i]=$(cat "$WORK/post$i.code" 2>/dev/null || true)
    echo "node$i POST /cluster/snapshot: $(or_na "${POST[i]}") $(cat "$WORK/post$i" 2>/dev/null || true)" \
        >>"$OUT/snapshot-poll.log"
done
grep '^{' "$WORK/load.out" | tail -n 1 >"$OUT/snapshot-load.json" || true
LJSON=$(cat "$OUT/snapshot-load.json")
[ -n "$LJSON" ] || note "snapshot load: loadgen exit $rc, no result"
[ "$rc" -eq 0 ] || note "snapshot load: loadgen exit $rc"
# A stalled or cut load leaves latency figures that describe only what went through.
published=$(field "$LJSON" published)
if [ -n "$published" ] && [ "$published" -lt $((5000 * LOAD_SECS * 9 / 10)) ]; then
    note "snapshot load: $published published of $((5000 * LOAD_SECS)) paced: its latency figures cover only what went through"
fi
while IFS= read -r line; do
    note "snapshot load: $line"
done < <({ grep -E '^ +note ' "$OUT/snapshot-load.log" || true; } | sed 's/^ *note *//')
for i in 1 2 3; do
    json=$(status "$i")
    printf '%s\n' "$json" >"$OUT/cluster-node$i-after-snapshot.json"
    BUILDS1[i]=$(snap_field "$json" builds)
    SNAP_MS[i]=$(snap_field "$json" last_build_ms)
    SNAP_HOLD[i]=$(snap_field "$json" last_hold_ms)
    SNAP_BYTES[i]=$(snap_field "$json" last_bytes)
    SNAP_IDX1[i]=$(field "$json" snapshot_index)
    if [ -n "${BUILDS0[i]}" ] && { [ -z "${BUILDS1[i]}" ] || [ "${BUILDS1[i]}" -le "${BUILDS0[i]}" ]; }; then
        note "node $i built no snapshot within ${SNAPSHOT_TIMEOUT}s of the request (POST: ${POST[i]})"
    fi
done
# Snapshots the nodes built on their own during the load (every 5,000 log entries).
declare -a AUTO=()
for i in 1 2 3; do
    AUTO[i]=$({ grep "node$i applied" "$OUT/snapshot-poll.log" || true; } | awk '{ print $6 }' | uniq | sed 1d | wc -l)
done

us_as_ms() { # json object key: that latency field in ms
    local v
    v=$(grep -o "\"$2\":{[^}]*}" <<<"$1" | grep -o "\"$3\":[0-9]*" | cut -d: -f2 || true)
    [ -n "$v" ] && awk -v u="$v" 'BEGIN { printf "%.1f", u / 1000 }' || echo n/a
}

# --- c. restart ----------------------------------------------------------------------------

log "restart: SIGKILL node 3 and start it again on its data dir"
RESTART_S="" RESTART_FROM_KILL_S="" RSS_RESTART=""
kill -KILL "${PID[3]}" 2>/dev/null || true
kill_ms=$(now_ms)
wait "${PID[3]}" 2>/dev/null || true
PID[3]=""
start_ms=$(now_ms)
start_node 3
if wait_ready 3 "$RESTART_TIMEOUT"; then
    RESTART_S=$(secs_since "$start_ms")
    RESTART_FROM_KILL_S=$(secs_since "$kill_ms")
    RSS_RESTART=$(rss_kib "${PID[3]}")
    log "node 3 ready ${RESTART_S}s after its restart"
else
    note "restart: $WHY"
fi
status 3 >"$OUT/cluster-node3-after-restart.json"

# --- d. join -------------------------------------------------------------------------------

log "join: node 4 on ${NODES[3]} with a fresh data dir"
JOIN_S="" RSS_JOIN="" DISK_JOIN=""
start_ms=$(now_ms)
start_node 4 "${NODES[0]}:$CLUSTER_PORT"
if wait_ready 4 "$JOIN_TIMEOUT"; then
    JOIN_S=$(secs_since "$start_ms")
    sleep 3
    RSS_JOIN=$(rss_kib "${PID[4]}")
    DISK_JOIN=$(dir_bytes "$WORK/node4")
    log "node 4 ready ${JOIN_S}s after its start"
else
    note "join: $WHY"
fi
status 4 >"$OUT/cluster-node4-after-join.json"
json=$(status 1)
printf '%s\n' "$json" >"$OUT/cluster-node1-end.json"

declare -a RSS_END=() DISK_END=()
live=()
for i in 1 2 3 4; do
    [ -z "${PID[i]:-}" ] || live+=("${PID[i]}")
    RSS_END[i]=$(rss_kib "${PID[i]:-0}")
    DISK_END[i]=$(dir_bytes "$WORK/node$i")
done
stop_pids "${live[@]}"
PID=()

# --- e. summary ----------------------------------------------------------------------------

per_session() { # kib0 kib1: bytes per created session
    if [ -n "$1" ] && [ -n "$2" ] && [ "$created" -gt 0 ]; then
        awk -v a="$1" -v b="$2" -v n="$created" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }'
    else
        echo n/a
    fi
}
dec1() { # number: with one decimal, n/a when empty
    case ${1:-} in '' | null) echo n/a ;; *) awk -v v="$1" 'BEGIN { printf "%.1f", v }' ;; esac
}
mib() { # kib or bytes divisor: MiB with one decimal
    [ -n "$1" ] && awk -v v="$1" -v d="$2" 'BEGIN { printf "%.1f", v / d }' || echo n/a
}
{
    echo "persistent sessions in a 3-node cluster (issue 14), $(date -u '+%F %T') UTC"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: benches/sessions.sh --sessions $sessions --queued $queued --in-flight $in_flight"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')," \
        "$(git -C "$ROOT" status --porcelain -- crates 2>/dev/null | wc -l) files under crates/ modified since"
    echo
    echo "a. sessions (loadgen sessions, ${in_flight} in flight, round-robin over nodes 1-3)"
    echo "  created $(or_na "$created") of $sessions, failed $(or_na "$(field "$SJSON" failed)"), retries $(or_na "$(field "$SJSON" retried)")," \
        "filter $(grep -o '"filter":"[a-z]*"' <<<"$SJSON" | cut -d'"' -f4 || true)"
    echo "  elapsed $(or_na "$(field "$SJSON" elapsed_s)") s: $(or_na "$(field "$SJSON" sessions_per_sec)") sessions/s;" \
        "one session p50 $(or_na "$(grep -o '"create_ms":{[^}]*}' <<<"$SJSON" | grep -o '"p50":[0-9.]*' | cut -d: -f2 || true)") ms," \
        "p99 $(or_na "$(grep -o '"create_ms":{[^}]*}' <<<"$SJSON" | grep -o '"p99":[0-9.]*' | cut -d: -f2 || true)") ms"
    if [ "$queued" -gt 0 ]; then
        echo "  queued: $(or_na "$(field "$SJSON" acked)") of $queued publishes acknowledged in" \
            "$(or_na "$(field "$SJSON" publish_elapsed_s)") s; PUBACK" \
            "p50 $(or_na "$(grep -o '"puback_ms":{[^}]*}' <<<"$SJSON" | grep -o '"p50":[0-9.]*' | cut -d: -f2 || true)") ms," \
            "p99 $(or_na "$(grep -o '"puback_ms":{[^}]*}' <<<"$SJSON" | grep -o '"p99":[0-9.]*' | cut -d: -f2 || true)") ms," \
            "max $(or_na "$(grep -o '"puback_ms":{[^}]*}' <<<"$SJSON" | grep -o '"max":[0-9.]*' | cut -d: -f2 || true)") ms"
    fi
    echo "  applied indexes agreed at: $(or_na "$synced")"
    printf '  %-6s %12s %12s %16s %14s\n' node "RSS before" "RSS after" "bytes/session" "data dir"
    for i in 1 2 3; do
        printf '  %-6s %8s MiB %8s MiB %16s %10s MiB\n' "$i" "$(mib "${RSS0[i]}" 1024)" \
            "$(mib "${RSS1[i]}" 1024)" "$(per_session "${RSS0[i]}" "${RSS1[i]}")" \
            "$(mib "${DISK[i]}" 1048576)"
    done
    echo
    echo "b. snapshot under load ($(or_na "${load[0]}"), ${LOAD_SECS}s on nodes 1 and 2; POST /cluster/snapshot at ${TRIGGER_AT}s)"
    printf '  %-6s %6s %10s %10s %10s %10s %16s %18s\n' node POST "builds" "build ms" "hold ms" \
        "size MiB" "snapshot_index" "index changes"
    for i in 1 2 3; do
        printf '  %-6s %6s %10s %10s %10s %10s %16s %18s\n' "$i" "$(or_na "${POST[i]:-}")" \
            "$(or_na "${BUILDS0[i]}")->$(or_na "${BUILDS1[i]}")" "$(dec1 "${SNAP_MS[i]}")" \
            "$(dec1 "${SNAP_HOLD[i]}")" \
            "$(mib "${SNAP_BYTES[i]}" 1048576)" "$(or_na "${SNAP_IDX0[i]}")->$(or_na "${SNAP_IDX1[i]}")" \
            "${AUTO[i]}"
    done
    echo "  load: acked $(or_na "$(field "$LJSON" acked)"), lost $(or_na "$(field "$LJSON" lost)");" \
        "PUBACK p50 $(us_as_ms "$LJSON" ack_latency_us p50) ms, p99 $(us_as_ms "$LJSON" ack_latency_us p99) ms," \
        "max $(us_as_ms "$LJSON" ack_latency_us max) ms; end to end p50 $(us_as_ms "$LJSON" latency_us p50) ms," \
        "p99 $(us_as_ms "$LJSON" latency_us p99) ms, max $(us_as_ms "$LJSON" latency_us max) ms"
    echo
    echo "c. restart: node 3 SIGKILLed, started again on its data dir: ready after" \
        "$(or_na "$RESTART_S") s ($(or_na "$RESTART_FROM_KILL_S") s from the kill); RSS then $(mib "$RSS_RESTART" 1024) MiB"
    echo "d. join: node 4, fresh data dir, --join node 1: ready after $(or_na "$JOIN_S") s;" \
        "RSS 3 s later $(mib "$RSS_JOIN" 1024) MiB, data dir $(mib "$DISK_JOIN" 1048576) MiB"
    echo "  (snapshot_index changes: snapshots seen in /cluster while the load ran, the"
    echo "  requested one and any the node built on its own every 5,000 log entries)"
    echo
    echo "at the end (after the load, the restart and the join):"
    for i in 1 2 3 4; do
        echo "  node $i: RSS $(mib "${RSS_END[i]}" 1024) MiB, data dir $(mib "${DISK_END[i]}" 1048576) MiB"
    done
    echo
    echo "notes:"
    [ ${#NOTES[@]} -gt 0 ] || echo "  none"
    for n in "${NOTES[@]}"; do echo "  - $n"; done
    echo "node log lines at WARN or ERROR:"
    for f in "$OUT"/node*.log; do
        printf '  %-12s %s\n' "$(basename "$f")" "$(grep -cE 'WARN|ERROR' "$f" || true)"
    done
} | tee "$OUT/summary.txt"
log "results in $OUT"
