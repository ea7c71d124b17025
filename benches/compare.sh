#!/usr/bin/env bash
# Compares raftmq with Mosquitto and rumqttd under the same load, on this machine.
#
#   benches/compare.sh [--rounds N] [--duration SECS] [--scenarios "qos0 qos1 ..."]
#                      [--brokers "raftmq mosquitto rumqttd"] [--out DIR]
#
# Installs the peers when missing, builds raftmq and the loadgen in release, then for each
# round, each scenario and each broker in turn starts a fresh broker on a free loopback
# port, runs the loadgen against it, stops it, and appends the result line to
# OUT/raw.jsonl (default OUT: benches/results/<UTC date>). A run that fails is recorded
# with its error and the comparison goes on. Ends with bench-report OUT (summary.md,
# summary.json, throughput.svg, latency.svg). See benches/README.md.
#
# Opt-in scenarios, not in the default list: tls-qos0, tls-qos1, tls-connections and
# tls-idle run the loadgen's qos0, qos1, connections and idle over TLS (--tls-ca), against
# raftmq's --tls-addr and a Mosquitto TLS listener on the same certificates, made once
# per run by scripts/test-certs.sh; rumqttd is not set up for TLS and is recorded as
# skipped. tls-idle: 5,000 idle TLS clients opened 50 at a time, RSS per connection.
#
# Scenarios beyond the loadgen's own: idle-max is idle at the machine's limit (19,000
# clients: the hard limit is 20,000 open files per process); latency-3n,
# latency-durable-3n and durable-3n run latency, latency-durable and durable with raftmq
# as a three-node cluster on loopback (the clients spread over the nodes: the publisher
# on node 1, its subscriber on node 2), beside the peers on one node, as they do not
# replicate. The default list is the loadgen's throughput scenarios, the latency and
# connection scenarios on one node, and the three-node ones; a full run takes about an
# hour here.
#
# LOADGEN=/path/to/loadgen uses that binary instead of building one (testing the script).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin

rounds=3
duration=10
scenarios="qos0 qos1 durable fanout fanin fanin-shared latency latency-durable overload connections idle idle-max latency-3n latency-durable-3n durable-3n"
brokers="raftmq mosquitto rumqttd"
out=""

# Every wait is bounded, so a hung broker or loadgen costs minutes, never the whole run.
START_TIMEOUT=15   # s for a broker to accept TCP
READY_TIMEOUT=60   # s for every node of a three-node raftmq to answer /ready
STOP_TIMEOUT=10    # s between SIGTERM and SIGKILL
BUILD_TIMEOUT=3600 # s for a cargo build or install

usage() {
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=${2:?}; shift 2 ;;
        --duration) duration=${2:?}; shift 2 ;;
        --scenarios) scenarios=${2:?}; shift 2 ;;
        --brokers) brokers=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
case $rounds in '' | *[!0-9]* | 0) echo "compare.sh: --rounds wants a positive integer" >&2; exit 2 ;; esac
case $duration in '' | *[!0-9.]*) echo "compare.sh: --duration wants seconds" >&2; exit 2 ;; esac
for b in $brokers; do
    case $b in raftmq | mosquitto | rumqttd) ;; *) echo "compare.sh: unknown broker $b" >&2; exit 2 ;; esac
done

log() { printf '[compare %s] %s\n' "$(date -u +%T)" "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# --- peers -------------------------------------------------------------------------------

find_mosquitto() { command -v mosquitto || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true; }
find_rumqttd() { command -v rumqttd || { [ -x "$CARGO_BIN/rumqttd" ] && echo "$CARGO_BIN/rumqttd"; } || true; }

MOSQUITTO=""
RUMQTTD=""
case " $brokers " in *" mosquitto "*)
    MOSQUITTO=$(find_mosquitto)
    if [ -z "$MOSQUITTO" ]; then
        log "installing mosquitto (apt)"
        $SUDO timeout "$BUILD_TIMEOUT" apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO timeout "$BUILD_TIMEOUT" apt-get install -y mosquitto
        MOSQUITTO=$(find_mosquitto)
    fi
    [ -n "$MOSQUITTO" ] || { echo "compare.sh: mosquitto not found after install" >&2; exit 1; }
esac
case " $brokers " in *" rumqttd "*)
    RUMQTTD=$(find_rumqttd)
    if [ -z "$RUMQTTD" ] || ! "$RUMQTTD" --version 2>/dev/null | grep -q ' 0\.20\.0'; then
        # Not --locked: 0.20.0's lock file pins a crate that no longer builds.
        log "installing rumqttd 0.20.0 (cargo install, several minutes)"
        timeout "$BUILD_TIMEOUT" cargo install rumqttd --version 0.20.0
        RUMQTTD=$CARGO_BIN/rumqttd
    fi
esac

# --- build ---------------------------------------------------------------------------------

packages=(-p raftmq -p raftmq-bench-report)
[ -n "${LOADGEN:-}" ] || packages+=(-p raftmq-benches)
log "building ${packages[*]} (release)"
(cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release "${packages[@]}")
RAFTMQ=$TARGET/release/raftmq
REPORT=$TARGET/release/bench-report
LOADGEN=${LOADGEN:-$TARGET/release/loadgen}
for bin in "$RAFTMQ" "$REPORT" "$LOADGEN"; do
    [ -x "$bin" ] || { echo "compare.sh: $bin missing after the build" >&2; exit 1; }
done

# --- output and machine --------------------------------------------------------------------

[ -n "$out" ] || out=$ROOT/benches/results/$(date -u +%F)
mkdir -p "$out"
out=$(cd "$out" && pwd)
RAW=$out/raw.jsonl
if [ -s "$RAW" ]; then
    log "appending to $RAW ($(wc -l <"$RAW") lines already): its runs join the medians"
fi

# Each broker gets as many descriptors as the hard limit allows (10k connections).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 1048576 2>/dev/null || true
log "fd limit $(ulimit -n)"

json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=$(printf '%s' "$s" | tr '\n\r\t' '   ' | tr -d '\000-\037' | sed 's/ *$//')
    printf '"%s"' "$s"
}

cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
# First line of a command's output; `mosquitto -h` exits non-zero, and `| head` could
# SIGPIPE the writer, either of which would stop the script under pipefail.
first_line() {
    local o
    o=$("$@" 2>&1 || true)
    printf '%s' "${o%%$'\n'*}"
}
# Untracked files (earlier results, this run's own folder) do not change the build.
versions="raftmq $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null || true)" ] || versions+=" (uncommitted changes)"
[ -z "$MOSQUITTO" ] || versions+=", $(first_line "$MOSQUITTO" -h)"
[ -z "$RUMQTTD" ] || versions+=", $(first_line "$RUMQTTD" --version)"
cat >"$out/meta.json" <<EOF
{"date":$(json_str "$(date -u +'%F %H:%M UTC')"),"nproc":$(json_str "$(nproc)"),"cpu":$(json_str "${cpu:-unknown}"),"kernel":$(json_str "$(uname -r)"),"rounds":$rounds,"duration_s":$duration,"brokers":$(json_str "$versions"),"fd_limit":$(json_str "$(ulimit -n)")}
EOF

# --- brokers -------------------------------------------------------------------------------

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh" # stop_pids

WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftmq-compare.XXXXXX")
BROKER_PID=""   # the broker, or node 1 of a three-node raftmq
NODE_PIDS=()    # nodes 2 and 3 of a three-node raftmq
BROKER_ADDRS=() # the MQTT addresses the loadgen spreads its clients over
LOADGEN_PID=""

case " $scenarios " in *"-3n "*)
    command -v curl >/dev/null || { echo "compare.sh: the -3n scenarios need curl (/ready probes)" >&2; exit 1; }
esac

cleanup() {
    if [ -n "$LOADGEN_PID" ]; then
        # timeout leads its own process group: TERM reaches the loadgen through it, and the
        # group kill catches a loadgen that ignores it.
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$LOADGEN_PID" 2>/dev/null || true
    fi
    [ -z "$BROKER_PID" ] || kill -KILL "$BROKER_PID" 2>/dev/null || true
    [ ${#NODE_PIDS[@]} -eq 0 ] || kill -KILL "${NODE_PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# TLS scenarios: one CA, server certificate (127.0.0.1, localhost) and key for the run.
CERTS=$WORK/certs
case " $scenarios " in *" tls-"*)
    log "making test certificates (scripts/test-certs.sh)"
    bash "$ROOT/scripts/test-certs.sh" "$CERTS" >"$WORK/certs.log" 2>&1 \
        || { cat "$WORK/certs.log" >&2; echo "compare.sh: scripts/test-certs.sh failed" >&2; exit 1; }
esac

# Below the kernel's ephemeral range (32768+), where the loadgen's 10k client ports live.
free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        if ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

write_configs() { # port tls|plain
    cat >"$WORK/mosquitto.conf" <<EOF
listener $1 127.0.0.1
allow_anonymous true
# 0 = unlimited: at the default (1000) Mosquitto silently drops QoS 1 messages under load.
max_queued_messages 0
# raftmq sets TCP_NODELAY; without it Mosquitto's latency would suffer from Nagle's delay.
set_tcp_nodelay true
EOF
    if [ "$2" = tls ]; then
        # Options of the listener above. user root: started as root, Mosquitto drops to
        # its own user before reading the key, which lives in our root-only WORK.
        cat >>"$WORK/mosquitto.conf" <<EOF
user root
cafile $CERTS/ca.pem
certfile $CERTS/server.pem
keyfile $CERTS/server.key
EOF
    fi
    # Only the v4 listener: the default config's v5, websocket, console and prometheus
    # listeners would bind fixed ports. next_connection_delay_ms defaults to 1, which
    # would cap accepts at 1000/s.
    cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$1"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
EOF
}

start_broker() { # name port log tls|plain [TCP port of raftmq over TLS]
    local name=$1 port=$2 blog=$3 tls=$4 mqtt_port=$2
    local tls_args=()
    write_configs "$port" "$tls"
    if [ "$tls" = tls ]; then
        # raftmq always has a TCP listener: it goes on another port, unused.
        mqtt_port=$5
        tls_args=(--tls-addr "127.0.0.1:$port" --tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key")
    fi
    case $name in
        # In WORK so that nothing lands in the caller's directory (./data).
        raftmq) (cd "$WORK" && exec "$RAFTMQ" --mqtt-addr "127.0.0.1:$mqtt_port" "${tls_args[@]}" --cluster-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --data-dir "$WORK/raftmq-data-$port" --max-connections 20000) >"$blog" 2>&1 & ;;
        mosquitto) "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$blog" 2>&1 & ;;
        rumqttd) "$RUMQTTD" -q -c "$WORK/rumqttd.toml" >"$blog" 2>&1 & ;;
    esac
    BROKER_PID=$!
}

# raftmq as three nodes on 127.0.0.1: node 1's MQTT on `port`, the rest on free ports;
# nodes 2 and 3 join node 1. Returns once every node answers /ready (a member, a leader
# known, caught up), or fails after READY_TIMEOUT.
start_raftmq_cluster() { # port log
    local port=$1 blog=$2 i mqtt cport hport join="" taken=" $1 "
    local http=()
    pick() { # a free port not in `taken` (the caller adds it: this runs in a subshell)
        local p _
        for _ in $(seq 1 20); do
            p=$(free_port) || return 1
            case $taken in *" $p "*) continue ;; esac
            echo "$p"
            return 0
        done
        return 1
    }
    BROKER_ADDRS=()
    for i in 1 2 3; do
        mqtt=$port
        if [ "$i" -ne 1 ]; then mqtt=$(pick) && taken+="$mqtt " || return 1; fi
        cport=$(pick) && taken+="$cport " || return 1
        hport=$(pick) && taken+="$hport " || return 1
        local args=(--node-id "$i" --mqtt-addr "127.0.0.1:$mqtt" --cluster-addr "127.0.0.1:$cport"
            --http-addr "127.0.0.1:$hport" --data-dir "$WORK/raftmq-3n-$port-$i" --max-connections 20000)
        [ -z "$join" ] || args+=(--join "$join")
        (cd "$WORK" && RAFTMQ_CLUSTER_SECRET=compare-cluster-secret-0123456789 exec "$RAFTMQ" "${args[@]}") \
            >"$blog.node$i" 2>&1 &
        if [ "$i" -eq 1 ]; then
            BROKER_PID=$!
            join=127.0.0.1:$cport
        else
            NODE_PIDS+=($!)
        fi
        BROKER_ADDRS+=("127.0.0.1:$mqtt")
        http+=("127.0.0.1:$hport")
        # Node 1 first forms its cluster of one; the others join it.
        [ "$i" -ne 1 ] || node_ready "${http[0]}" || return 1
    done
    local h
    for h in "${http[@]}"; do node_ready "$h" || return 1; done
}

node_ready() { # http-address
    local deadline=$((SECONDS + READY_TIMEOUT)) pid
    while [ $SECONDS -lt $deadline ]; do
        for pid in "$BROKER_PID" "${NODE_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || return 1
        done
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/ready" || true)" != 200 ] || return 0
        sleep 0.2
    done
    return 1
}

wait_ready() { # port
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    stop_pids "$BROKER_PID" "${NODE_PIDS[@]}"
    BROKER_PID=""
    NODE_PIDS=()
}

record_error() { # scenario broker round message
    log "FAILED $1 on $2: $4"
    printf '{"round":%s,"scenario":%s,"broker":%s,"error":%s}\n' \
        "$3" "$(json_str "$1")" "$(json_str "$2")" "$(json_str "$4")" >>"$RAW"
}

# --- runs ----------------------------------------------------------------------------------

run_one() { # round scenario broker
    local round=$1 scenario=$2 broker=$3 port blog="$WORK/broker.log"
    local stdout="$WORK/loadgen.out" stderr="$WORK/loadgen.err" rc=0 line
    local tls=plain plain_port="" loadgen_scenario=$scenario loadgen_tls=() nodes=1 extra=()
    case $scenario in
        *-3n)
            loadgen_scenario=${scenario%-3n}
            [ "$broker" != raftmq ] || nodes=3
            ;;
        # 19,000 and the loadgen's own descriptors stay under the 20,000 hard limit.
        idle-max) loadgen_scenario=idle extra=(--connections 19000) ;;
    esac
    if [[ $scenario == tls-* ]]; then
        tls=tls
        loadgen_scenario=${scenario#tls-}
        loadgen_tls=(--tls-ca "$CERTS/ca.pem")
        if [ "$broker" = rumqttd ]; then
            record_error "$scenario" "$broker" "$round" "skipped: compare.sh does not set rumqttd up for TLS"
            return
        fi
    fi
    if ! port=$(free_port) || { [ "$tls" = tls ] && ! plain_port=$(free_port); }; then
        record_error "$scenario" "$broker" "$round" "no free port"
        return
    fi
    if [ "$nodes" -eq 3 ]; then
        if ! start_raftmq_cluster "$port" "$blog"; then
            record_error "$scenario" "$broker" "$round" \
                "three nodes not ready within ${READY_TIMEOUT}s: $(tail -q -n 2 "$blog".node* | tr '\n' ' ')"
            stop_broker "$broker"
            return
        fi
        blog=$blog.node1
    else
        BROKER_ADDRS=("127.0.0.1:$port")
        start_broker "$broker" "$port" "$blog" "$tls" "$plain_port"
    fi
    if ! wait_ready "$port"; then
        local why="did not accept TCP within ${START_TIMEOUT}s"
        kill -0 "$BROKER_PID" 2>/dev/null || why="exited at start"
        record_error "$scenario" "$broker" "$round" \
            "broker $why: $(tail -n 3 "$blog" | tr '\n' ' ')"
        stop_broker "$broker"
        return
    fi

    # The loadgen bounds its own run; this bounds a loadgen that hangs anyway.
    local limit
    limit=$(awk -v d="$duration" 'BEGIN { printf "%d", d * 3 + 120 }')
    local addrs=() a
    for a in "${BROKER_ADDRS[@]}"; do addrs+=(--broker "$a"); done
    timeout -k 10 "$limit" "$LOADGEN" "$loadgen_scenario" "${addrs[@]}" --name "$scenario" \
        --label "$broker" --broker-pid "$BROKER_PID" --duration "$duration" "${loadgen_tls[@]}" \
        "${extra[@]}" >"$stdout" 2>"$stderr" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""

    local died="" pid
    for pid in "$BROKER_PID" "${NODE_PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            died="broker (pid $pid) exited during the run: $(tail -n 2 "$blog" | tr '\n' ' ')"
        fi
    done
    stop_broker "$broker"
    {
        echo "== round $round, $scenario, $broker (exit $rc) =="
        cat "$stderr"
    } >>"$out/loadgen.log"

    line=$(grep '^{' "$stdout" | tail -n 1 || true)
    if [ -z "$line" ]; then
        local why="loadgen exit $rc, no result line"
        [ "$rc" -ne 124 ] || why="loadgen timed out after ${limit}s"
        record_error "$scenario" "$broker" "$round" "$why: $(tail -n 2 "$stderr" | tr '\n' ' ')"
        return
    fi
    # A broker that crashed mid-run must not pass for a clean run.
    if [ -n "$died" ] && [[ $line == *'"error":null'* ]]; then
        # Split and join rather than ${//}: bash 5.2 expands & in a replacement.
        line="${line%%\"error\":null*}\"error\":$(json_str "$died")${line#*\"error\":null}"
    fi
    echo "{\"round\":$round,${line#\{}" >>"$RAW"
    local dps
    dps=$(grep -o '"deliveries_per_sec":[^,}]*' <<<"$line" | cut -d: -f2 || true)
    local err
    err=$(grep -o '"error":"[^"]*"' <<<"$line" | head -1 || true)
    log "round $round $scenario $broker: ${dps:-?} deliveries/s ${err}"
}

n_runs=$(($(wc -w <<<"$scenarios") * $(wc -w <<<"$brokers") * rounds))
log "$n_runs runs of ${duration}s, about $(awk -v n="$n_runs" -v d="$duration" \
    'BEGIN { printf "%d", n * (d + 4) / 60 + 1 }') min; results in $out"
i=0
for round in $(seq 1 "$rounds"); do
    for scenario in $scenarios; do
        for broker in $brokers; do
            i=$((i + 1))
            log "[$i/$n_runs] round $round, $scenario, $broker"
            run_one "$round" "$scenario" "$broker"
            # Lets sockets and memory of the last broker settle before the next one.
            sleep 1
        done
    done
done

"$REPORT" "$out"
log "done: $out/summary.md"
