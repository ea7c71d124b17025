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
# Then, with certificates made for the run by scripts/test-certs.sh (openssl):
#   - a second broker with TLS, WebSocket (ws) and WebSocket over TLS (wss) listeners
#     and a password file (made with `raftmq passwd`), anonymous clients refused:
#     mosquitto_pub/sub over TLS (--cafile, -u/-P), paho over TLS (tls_set), ws and wss,
#     across transports, and wrong or missing passwords refused;
#   - a third broker with mutual TLS (--tls-client-ca-file) and
#     tls_use_identity_as_username: a client certificate (--cert/--key) is the
#     credential and its CN the username the access rules see; no certificate, no
#     connection.
# Installs mosquitto-clients (apt-get) and paho-mqtt (pip) when missing.
# Every wait is bounded; exits 1 if any check fails, 2 if it cannot run at all.
# The broker is stopped on exit.
#
# Environment:
#   RAFTMQ_BIN=path       broker binary (default $CARGO_TARGET_DIR/debug/raftmq, else
#                         target/debug/raftmq: where the script's own cargo build puts it)
#   INTEROP_BROKER=mosquitto  run the same checks against Mosquitto (reference)
#   KEEP_LOGS=1           keep the temp dir with the broker and client logs
set -u

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PAHO="$ROOT/tests/interop_paho.py"
PYTHON=${PYTHON:-python3}
RAFTMQ_BIN=${RAFTMQ_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/raftmq}
WORK=$(mktemp -d /tmp/raftmq-interop.XXXXXX)
BROKER_PID=
BROKER_PIDS=()
FAILED=0
PASSED=0

cleanup() {
  for pid in "${BROKER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
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
command -v openssl >/dev/null || die "openssl not found (scripts/test-certs.sh needs it)"

# ---- broker --------------------------------------------------------------------
HOST=127.0.0.1
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_listening PORT...: up to 10 s each for the last started broker to accept TCP.
wait_listening() {
  local p
  for p in "$@"; do
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null && break
      kill -0 "$BROKER_PID" 2>/dev/null || { cat "$BLOG"; die "broker exited"; }
      sleep 0.1
    done
    (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null || die "broker not listening on $p after 10 s"
  done
}

# start_raftmq NAME ARGS...: a broker with its own data dir and log WORK/NAME.log.
start_raftmq() {
  local name=$1
  shift
  BLOG="$WORK/$name.log"
  "$RAFTMQ_BIN" --cluster-addr "$HOST:0" --http-addr "$HOST:0" --data-dir "$WORK/$name-data" \
    --log-level debug "$@" >"$BLOG" 2>&1 &
  BROKER_PID=$!
  BROKER_PIDS+=("$BROKER_PID")
}

# start_mosquitto NAME CONFIG-TEXT: the reference broker, for INTEROP_BROKER=mosquitto.
start_mosquitto() {
  BLOG="$WORK/$1.log"
  printf '%s\n' "$2" >"$WORK/$1.conf"
  mosquitto -c "$WORK/$1.conf" >"$BLOG" 2>&1 &
  BROKER_PID=$!
  BROKER_PIDS+=("$BROKER_PID")
}

PORT=$(free_port)
if [ "${INTEROP_BROKER:-raftmq}" = mosquitto ]; then
  start_mosquitto broker "$(printf 'listener %s %s\nallow_anonymous true' "$PORT" "$HOST")"
else
  # Always build: cargo is quick when nothing changed, and a stale binary would test
  # yesterday's broker.
  cargo build -q -p raftmq || die "cargo build failed"
  [ -x "$RAFTMQ_BIN" ] || die "no broker binary at $RAFTMQ_BIN"
  start_raftmq broker --mqtt-addr "$HOST:$PORT"
fi
wait_listening "$PORT"
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
  start_msub "$out" "$count" -p "$PORT" -V "$ver" -t "$topic" -q "$qos" "$@"
}

# start_msub OUT COUNT ARGS...: as start_mosq_sub, every connection argument given.
start_msub() {
  local out=$1 count=$2
  shift 2
  timeout 15 stdbuf -oL mosquitto_sub -d -h "$HOST" -C "$count" -F '%t %q %r %p' "$@" >"$out" 2>&1 &
  SUB_PID=$!
  wait_for_line "$out" "received SUBACK"
}

start_paho_sub() { # OUT V5FLAG TOPIC QOS COUNT
  start_psub "$1" "$PORT" "$3" "$4" "$5" $2
}

# start_psub OUT PORT TOPIC QOS COUNT [interop_paho.py options]
start_psub() {
  local out=$1
  shift
  timeout 15 "$PYTHON" "$PAHO" sub "$HOST" "$@" >"$out" 2>&1 &
  SUB_PID=$!
  wait_for_line "$out" "^READY"
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

# ---- TLS, WebSocket and passwords ----------------------------------------------
CERTS="$WORK/certs"
bash "$ROOT/scripts/test-certs.sh" "$CERTS" device-1 >"$WORK/certs.log" 2>&1 \
  || { cat "$WORK/certs.log"; die "scripts/test-certs.sh failed"; }
CA="$CERTS/ca.pem"
USER_NAME=alice
USER_PW="pw-$RANDOM$RANDOM"
TLS_PORT=$(free_port) WS_PORT=$(free_port) WSS_PORT=$(free_port) PLAIN2_PORT=$(free_port)
TLS=(-p "$TLS_PORT" --cafile "$CA")
CREDS=(-u "$USER_NAME" -P "$USER_PW")
PCREDS=(--user "$USER_NAME" --password "$USER_PW")

if [ "${INTEROP_BROKER:-raftmq}" = mosquitto ]; then
  mosquitto_passwd -b -c "$WORK/passwords" "$USER_NAME" "$USER_PW" || die "mosquitto_passwd failed"
  # user root: the files live in this root-only temp dir.
  start_mosquitto secure "user root
allow_anonymous false
password_file $WORK/passwords
listener $PLAIN2_PORT $HOST
listener $TLS_PORT $HOST
cafile $CA
certfile $CERTS/server.pem
keyfile $CERTS/server.key
listener $WS_PORT
protocol websockets
listener $WSS_PORT
protocol websockets
cafile $CA
certfile $CERTS/server.pem
keyfile $CERTS/server.key"
else
  printf '%s\n' "$USER_PW" | "$RAFTMQ_BIN" passwd "$WORK/passwords" "$USER_NAME" >"$WORK/passwd.log" 2>&1 \
    || { cat "$WORK/passwd.log"; die "raftmq passwd failed"; }
  start_raftmq secure --mqtt-addr "$HOST:$PLAIN2_PORT" --tls-addr "$HOST:$TLS_PORT" \
    --ws-addr "$HOST:$WS_PORT" --wss-addr "$HOST:$WSS_PORT" \
    --tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key" \
    --password-file "$WORK/passwords" --allow-anonymous false
fi
wait_listening "$TLS_PORT" "$WS_PORT" "$WSS_PORT"
echo "secure broker: tls $TLS_PORT, ws $WS_PORT, wss $WSS_PORT (pid $BROKER_PID)"

# expect_refused NAME OUT PATTERN COMMAND...: COMMAND must fail (bounded by 15 s) with
# output matching the extended regex PATTERN (a broker that is down must not pass).
AUTH_REFUSAL='^Connection error: |CONNECT refused'  # a failed CONNACK, mosquitto or paho
TLS_REFUSAL='TLS error|Protocol error|connection was lost|SSL|certificate|handshake'
expect_refused() {
  local name=$1 out=$2 pattern=$3 rc=0
  shift 3
  timeout 15 "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    fail "$name" "exit 0, expected a refusal: $(tr '\n' '|' <"$out")"
  elif [ "$rc" -eq 124 ]; then
    fail "$name" "no answer within 15 s: $(tr '\n' '|' <"$out")"
  elif grep -qE "$pattern" "$out"; then
    pass "$name"
  else
    fail "$name" "exit $rc without a refusal: $(tr '\n' '|' <"$out")"
  fi
}

for ver in mqttv311 mqttv5; do
  t="interop/tls/$ver"
  # QoS 1 round trip, mosquitto_pub -> mosquitto_sub, both over TLS with a password.
  out="$WORK/tls-$ver-m2m.out"
  if start_msub "$out" 1 "${TLS[@]}" "${CREDS[@]}" -V "$ver" -t "$t" -q 1; then
    timeout 10 mosquitto_pub -h "$HOST" "${TLS[@]}" "${CREDS[@]}" -V "$ver" -t "$t" -q 1 -m tls-q1 \
      || fail "tls $ver mosquitto_pub" "exit $?"
    expect_messages "tls $ver qos 1 mosquitto_pub -> mosquitto_sub (--cafile, -u/-P)" "$out" "$t 1 0 tls-q1"
  else
    fail "tls $ver mosquitto_sub subscribe" "$(tr '\n' '|' <"$out")"
  fi
  expect_refused "tls $ver wrong password refused" "$WORK/tls-$ver-badpw.out" "$AUTH_REFUSAL" \
    mosquitto_pub -h "$HOST" "${TLS[@]}" -u "$USER_NAME" -P "not-$USER_PW" -V "$ver" -t "$t" -q 1 -m x
  expect_refused "tls $ver no credentials refused (allow_anonymous false)" "$WORK/tls-$ver-anon.out" "$AUTH_REFUSAL" \
    mosquitto_pub -h "$HOST" "${TLS[@]}" -V "$ver" -t "$t" -q 1 -m x
done
expect_refused "tls unknown CA refused by the client" "$WORK/tls-badca.out" "$TLS_REFUSAL" \
  mosquitto_pub -h "$HOST" -p "$TLS_PORT" --cafile "$CERTS/client.pem" "${CREDS[@]}" -t interop/x -m x

# paho over TLS (tls_set(ca_certs=...)), both ways with mosquitto over TLS.
out="$WORK/tls-m2p.out"
if start_psub "$out" "$TLS_PORT" interop/tls/m2p 1 1 --tls-ca "$CA" "${PCREDS[@]}"; then
  timeout 10 mosquitto_pub -h "$HOST" "${TLS[@]}" "${CREDS[@]}" -t interop/tls/m2p -q 1 -m m2p \
    || fail "tls mosquitto_pub" "exit $?"
  expect_messages "tls mosquitto_pub -> paho (tls_set)" "$out" "interop/tls/m2p 1 0 m2p"
else
  fail "tls paho subscribe" "$(tr '\n' '|' <"$out")"
fi
out="$WORK/tls-p2m.out"
if start_msub "$out" 1 "${TLS[@]}" "${CREDS[@]}" -V mqttv5 -t interop/tls/p2m -q 1; then
  timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$TLS_PORT" interop/tls/p2m 1 p2m --v5 --tls-ca "$CA" "${PCREDS[@]}" \
    || fail "tls paho pub" "exit $?"
  expect_messages "tls paho (tls_set, 5.0) -> mosquitto_sub" "$out" "interop/tls/p2m 1 0 p2m"
else
  fail "tls mosquitto_sub subscribe" "$(tr '\n' '|' <"$out")"
fi

# paho_pair NAME TOPIC SUB-PORT SUB-OPTS PUB-PORT PUB-OPTS: a QoS 1 message from a paho
# publisher to a paho subscriber (the OPTS are word-split).
paho_pair() {
  local name=$1 topic=$2 out="$WORK/paho-$RANDOM.out"
  # shellcheck disable=SC2086
  if start_psub "$out" "$3" "$topic" 1 1 $4 "${PCREDS[@]}"; then
    # shellcheck disable=SC2086
    timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$5" "$topic" 1 "$name" $6 "${PCREDS[@]}" \
      || fail "$name: paho pub" "exit $?"
    expect_messages "$name" "$out" "$topic 1 0 $name"
  else
    fail "$name: paho subscribe" "$(tr '\n' '|' <"$out")"
  fi
}
paho_pair "ws paho -> paho (websockets, /mqtt)" interop/ws "$WS_PORT" --ws "$WS_PORT" --ws
paho_pair "wss paho -> paho (websockets + tls_set, 5.0)" interop/wss \
  "$WSS_PORT" "--ws --tls-ca $CA --v5" "$WSS_PORT" "--ws --tls-ca $CA --v5"
paho_pair "wss paho -> ws paho" interop/wss2ws "$WS_PORT" --ws "$WSS_PORT" "--ws --tls-ca $CA"

# Across transports: mosquitto over TLS -> paho over WebSocket, paho wss -> mosquitto TLS.
out="$WORK/tls2ws.out"
if start_psub "$out" "$WS_PORT" interop/tls2ws 1 1 --ws "${PCREDS[@]}"; then
  timeout 10 mosquitto_pub -h "$HOST" "${TLS[@]}" "${CREDS[@]}" -t interop/tls2ws -q 1 -m tls2ws \
    || fail "tls mosquitto_pub" "exit $?"
  expect_messages "cross tls mosquitto_pub -> ws paho" "$out" "interop/tls2ws 1 0 tls2ws"
else
  fail "ws paho subscribe" "$(tr '\n' '|' <"$out")"
fi
out="$WORK/wss2tls.out"
if start_msub "$out" 1 "${TLS[@]}" "${CREDS[@]}" -t interop/wss2tls -q 1; then
  timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$WSS_PORT" interop/wss2tls 1 wss2tls --ws --tls-ca "$CA" "${PCREDS[@]}" \
    || fail "wss paho pub" "exit $?"
  expect_messages "cross wss paho -> tls mosquitto_sub" "$out" "interop/wss2tls 1 0 wss2tls"
else
  fail "tls mosquitto_sub subscribe" "$(tr '\n' '|' <"$out")"
fi
expect_refused "ws paho wrong password refused" "$WORK/ws-badpw.out" "$AUTH_REFUSAL" \
  "$PYTHON" "$PAHO" pub "$HOST" "$WS_PORT" interop/ws 1 x --ws --user "$USER_NAME" --password "not-$USER_PW"

# ---- mutual TLS, the certificate's CN as username --------------------------------
MTLS_PORT=$(free_port) PLAIN3_PORT=$(free_port)
if [ "${INTEROP_BROKER:-raftmq}" = mosquitto ]; then
  printf '%s\n' "pattern read devices/#" "pattern write devices/%u/#" >"$WORK/mosquitto.acl"
  start_mosquitto mtls "user root
listener $PLAIN3_PORT $HOST
listener $MTLS_PORT $HOST
cafile $CA
certfile $CERTS/server.pem
keyfile $CERTS/server.key
require_certificate true
use_identity_as_username true
acl_file $WORK/mosquitto.acl"
else
  # Each device publishes under devices/<its CN>/ only.
  cat >"$WORK/mtls.toml" <<TOML
[[acl]]
permission = "allow"
action = "publish"
topic = "devices/%u/#"

[[acl]]
permission = "deny"
action = "publish"
topic = "devices/#"
TOML
  start_raftmq mtls --config "$WORK/mtls.toml" --mqtt-addr "$HOST:$PLAIN3_PORT" --tls-addr "$HOST:$MTLS_PORT" \
    --tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key" \
    --tls-client-ca-file "$CA" --tls-use-identity-as-username true
fi
wait_listening "$MTLS_PORT"
echo "mutual-TLS broker: tls $MTLS_PORT (pid $BROKER_PID)"
MTLS=(-p "$MTLS_PORT" --cafile "$CA" --cert "$CERTS/client.pem" --key "$CERTS/client.key")

for ver in mqttv311 mqttv5; do
  out="$WORK/mtls-$ver.out"
  if start_msub "$out" 1 "${MTLS[@]}" -V "$ver" -t "devices/#" -q 1; then
    timeout 10 mosquitto_pub -h "$HOST" "${MTLS[@]}" -V "$ver" -t "devices/device-1/$ver" -q 1 -m by-cert \
      || fail "mtls $ver mosquitto_pub --cert/--key" "exit $?"
    expect_messages "mtls $ver qos 1 mosquitto_pub -> mosquitto_sub (--cert/--key)" "$out" \
      "devices/device-1/$ver 1 0 by-cert"
  else
    fail "mtls $ver mosquitto_sub --cert/--key" "$(tr '\n' '|' <"$out")"
  fi
  expect_refused "mtls $ver without a client certificate refused" "$WORK/mtls-$ver-nocert.out" "$TLS_REFUSAL" \
    mosquitto_pub -h "$HOST" -p "$MTLS_PORT" --cafile "$CA" -V "$ver" -t devices/device-1/x -q 1 -m x
done

# The username is the certificate's CN whatever the CONNECT says: claiming device-2,
# the client still may not publish under devices/device-2/ (the rule is devices/%u/#),
# and may under devices/device-1/. The subscriber must see only the second message.
out="$WORK/mtls-identity.out"
if start_msub "$out" 1 "${MTLS[@]}" -t "devices/#" -q 1; then
  timeout 10 mosquitto_pub -h "$HOST" "${MTLS[@]}" -u device-2 -t devices/device-2/t -q 1 -m as-device-2 \
    >/dev/null 2>&1 || true
  timeout 10 mosquitto_pub -h "$HOST" "${MTLS[@]}" -u device-2 -t devices/device-1/t -q 1 -m as-device-1 \
    || fail "mtls mosquitto_pub" "exit $?"
  expect_messages "mtls identity as username: CN device-1, not the CONNECT's device-2" "$out" \
    "devices/device-1/t 1 0 as-device-1"
else
  fail "mtls mosquitto_sub" "$(tr '\n' '|' <"$out")"
fi

# paho with a client certificate (tls_set(certfile, keyfile)).
out="$WORK/mtls-paho.out"
if start_msub "$out" 1 "${MTLS[@]}" -t "devices/#" -q 1; then
  timeout 10 "$PYTHON" "$PAHO" pub "$HOST" "$MTLS_PORT" devices/device-1/paho 1 paho-cert \
    --tls-ca "$CA" --cert "$CERTS/client.pem" --key "$CERTS/client.key" \
    || fail "mtls paho pub" "exit $?"
  expect_messages "mtls paho (tls_set certfile/keyfile) -> mosquitto_sub" "$out" "devices/device-1/paho 1 0 paho-cert"
else
  fail "mtls mosquitto_sub" "$(tr '\n' '|' <"$out")"
fi

echo "interop: $PASSED passed, $FAILED failed"
for pid in "${BROKER_PIDS[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "interop: a broker died (pid $pid)"; FAILED=$((FAILED + 1))
  fi
done
if [ "$FAILED" -ne 0 ]; then
  for f in "$WORK"/*.log; do
    case $f in *broker.log | *secure.log | *mtls.log) ;; *) continue ;; esac
    echo "---- $(basename "$f") (tail) ----"
    tail -n 30 "$f"
  done
  exit 1
fi
exit 0
