#!/usr/bin/env bash
# tests/interop.sh: raftmq against two independent MQTT clients.
#
# Starts target/debug/raftmq (built first if missing) on a free loopback port and
# checks, with Debian's mosquitto_pub / mosquitto_sub and Python paho-mqtt (>= 2,
# driven by tests/interop_paho.py), for MQTT 3.1.1 and 5.0 and in both directions
# (mosquitto -> paho and paho -> mosquitto):
#   - QoS 0, 1 and 2 publish/subscribe;
#   - a retained message reaching a later subscriber with the retain flag;
#   - a will published when its client is killed (SIGKILL).
# Installs mosquitto-clients (apt-get) and paho-mqtt (pip) when missing.
# Every wait is bounded; exits 1 if any check fails, 2 if it cannot run at all.
# The broker is stopped on exit.
#
# Environment:
#   RAFTMQ_BIN=path       broker binary (default target/debug/raftmq)
#   INTEROP_BROKER=mosquitto  run the same checks against Mosquitto (reference)
#   KEEP_LOGS=1           keep the temp dir with the broker and client logs
set -u

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PAHO="$ROOT/tests/interop_paho.py"
PYTHON=${PYTHON:-python3}
RAFTMQ_BIN=${RAFTMQ_BIN:-$ROOT/target/debug/raftmq}
WORK=$(mktemp -d /tmp/raftmq-interop.XXXXXX)
BROKER_PID=
FAILED=0
PASSED=0

cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  # SIGTERM, not SIGKILL: `timeout` passes it on to the client it runs.
  jobs -p | xargs -r kill 2>/dev/null
  if [ "${KEEP_LOGS:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then
    echo "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

die() { echo "interop: $*" >&2; exit 2; }

# ---- prerequisites -------------------------------------------------------------
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "installing mosquitto-clients"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto-clients) >/dev/null 2>&1 \
    || die "cannot install mosquitto-clients"
fi
if ! "$PYTHON" -c 'import paho.mqtt, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; then
  echo "installing paho-mqtt>=2"
  "$PYTHON" -m pip install -q 'paho-mqtt>=2' >/dev/null 2>&1 || die "cannot install paho-mqtt"
fi

# ---- broker --------------------------------------------------------------------
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1
if [ "${INTEROP_BROKER:-raftmq}" = mosquitto ]; then
  printf 'listener %s %s\nallow_anonymous true\n' "$PORT" "$HOST" >"$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >"$WORK/broker.log" 2>&1 &
else
  # Always build: cargo is quick when nothing changed, and a stale binary would test
  # yesterday's broker.
  cargo build -q -p raftmq || die "cargo build failed"
  [ -x "$RAFTMQ_BIN" ] || die "no broker binary at $RAFTMQ_BIN"
  printf 'data_dir = "%s/data"\n' "$WORK" >"$WORK/raftmq.toml"
  "$RAFTMQ_BIN" --mqtt-addr "$HOST:$PORT" --cluster-addr "$HOST:0" --http-addr "$HOST:0" --config "$WORK/raftmq.toml" --log-level debug \
    >"$WORK/broker.log" 2>&1 &
fi
BROKER_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && break
  kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/broker.log"; die "broker exited"; }
  sleep 0.1
done
(exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null || die "broker not listening on $PORT after 10 s"
echo "broker listening on $HOST:$PORT (pid $BROKER_PID)"

# ---- helpers -------------------------------------------------------------------
pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }

# SIGKILL a background job and reap it quietly.
kill_job() { { kill -9 "$1" && wait "$1"; } 2>/dev/null; }

# wait_for_line FILE PATTERN: up to 10 s for a line matching PATTERN in FILE.
wait_for_line() {
  for _ in $(seq 100); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# mosquitto_sub in the background, printing "<topic> <qos> <retain> <payload>";
# -d makes it print "received SUBACK", the readiness signal. Sets SUB_PID.
start_mosq_sub() { # OUT VERSION TOPIC QOS COUNT [extra args]
  local out=$1 ver=$2 topic=$3 qos=$4 count=$5
  shift 5
  timeout 15 stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$PORT" -V "$ver" -t "$topic" -q "$qos" \
    -C "$count" -F '%t %q %r %p' "$@" >"$out" 2>&1 &
  SUB_PID=$!
  wait_for_line "$out" "received SUBACK"
}

start_paho_sub() { # OUT V5FLAG TOPIC QOS COUNT
  timeout 15 "$PYTHON" "$PAHO" sub "$HOST" "$PORT" "$3" "$4" "$5" $2 >"$1" 2>&1 &
  SUB_PID=$!
  wait_for_line "$1" "^READY"
}

# Message lines only (drops mosquitto_sub's -d lines and paho's READY).
messages() { grep -v -e '^Client ' -e '^Subscribed ' -e '^READY' "$1"; }

expect_messages() { # NAME FILE EXPECTED
  if wait "$SUB_PID" && [ "$(messages "$2")" = "$3" ]; then
    pass "$1"
  else
    fail "$1" "expected [$3], got [$(messages "$2" | tr '\n' '|')]"
  fi
}

# ---- checks --------------------------------------------------------------------
for ver in mqttv311 mqttv5; do
  v5=""
  [ "$ver" = mqttv5 ] && v5="--v5"
  t="interop/$ver"

  # QoS 0/1/2, mosquitto_pub -> paho
  out="$WORK/$ver-m2p.out"
  if start_paho_sub "$out" "$v5" "$t/m2p" 2 3; then
    for q in 0 1 2; do
      timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V "$ver" -t "$t/m2p" -q "$q" -m "m2p-q$q" \
        || fail "$ver mosquitto_pub q$q" "exit $?"
    done
    expect_messages "$ver qos 0/1/2 mosquitto_pub -> paho" "$out" \
      "$(printf '%s\n' "$t/m2p 0 0 m2p-q0" "$t/m2p 1 0 m2p-q1" "$t/m2p 2 0 m2p-q2")"
  else
    fail "$ver paho subscribe" "$(cat "$out")"
  fi

  # QoS 0/1/2, paho -> mosquitto_sub
  out="$WORK/$ver-p2m.out"
  if start_mosq_sub "$out" "$ver" "$t/p2m" 2 3; then
    for q in 0 1 2; do
      timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$PORT" "$t/p2m" "$q" "p2m-q$q" $v5 \
        || fail "$ver paho pub q$q" "exit $?"
    done
    expect_messages "$ver qos 0/1/2 paho -> mosquitto_sub" "$out" \
      "$(printf '%s\n' "$t/p2m 0 0 p2m-q0" "$t/p2m 1 0 p2m-q1" "$t/p2m 2 0 p2m-q2")"
  else
    fail "$ver mosquitto_sub subscribe" "$(cat "$out")"
  fi

  # Retained: mosquitto_pub -r -> later paho subscriber, paho --retain -> later mosquitto_sub
  timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" -V "$ver" -t "$t/ret/m" -q 1 -r -m kept-m \
    || fail "$ver mosquitto_pub -r" "exit $?"
  out="$WORK/$ver-ret-p.out"
  start_paho_sub "$out" "$v5" "$t/ret/m" 1 1
  expect_messages "$ver retained mosquitto_pub -> paho" "$out" "$t/ret/m 1 1 kept-m"

  timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$PORT" "$t/ret/p" 1 kept-p --retain $v5 \
    || fail "$ver paho pub --retain" "exit $?"
  out="$WORK/$ver-ret-m.out"
  start_mosq_sub "$out" "$ver" "$t/ret/p" 1 1
  expect_messages "$ver retained paho -> mosquitto_sub" "$out" "$t/ret/p 1 1 kept-p"

  # Will: a killed paho client's will reaches mosquitto_sub, and vice versa.
  out="$WORK/$ver-will-m.out"
  if start_mosq_sub "$out" "$ver" "$t/will/p" 1 1; then
    wlog="$WORK/$ver-will-p.log"
    "$PYTHON" "$PAHO" will "$HOST" "$PORT" "$t/will/p" paho-died --timeout 15 $v5 >"$wlog" 2>&1 &
    wpid=$!
    if wait_for_line "$wlog" "^READY"; then
      kill_job "$wpid"
      expect_messages "$ver will paho (killed) -> mosquitto_sub" "$out" "$t/will/p 1 0 paho-died"
    else
      kill_job "$wpid"
      fail "$ver paho will client" "$(cat "$wlog")"
    fi
  else
    fail "$ver mosquitto_sub subscribe" "$(cat "$out")"
  fi

  out="$WORK/$ver-will-p.out"
  if start_paho_sub "$out" "$v5" "$t/will/m" 1 1; then
    wlog="$WORK/$ver-will-m.log"
    # No `timeout` wrapper: SIGKILL must reach mosquitto_sub itself (stdbuf execs it).
    stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$PORT" -V "$ver" -i "mosq-will-$ver" -t "$t/unused" \
      --will-topic "$t/will/m" --will-payload mosq-died --will-qos 1 >"$wlog" 2>&1 &
    wpid=$!
    if wait_for_line "$wlog" "received SUBACK"; then
      kill_job "$wpid"
      expect_messages "$ver will mosquitto_sub (killed) -> paho" "$out" "$t/will/m 1 0 mosq-died"
    else
      kill_job "$wpid"
      fail "$ver mosquitto will client" "$(cat "$wlog")"
    fi
  else
    fail "$ver paho subscribe" "$(cat "$out")"
  fi
done

echo "interop: $PASSED passed, $FAILED failed"
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
  echo "interop: the broker died"; FAILED=$((FAILED + 1))
fi
[ "$FAILED" -eq 0 ] || { echo "---- broker log (tail) ----"; tail -n 50 "$WORK/broker.log"; exit 1; }
exit 0
