#!/usr/bin/env bash
# tests/run_command.sh: the README's first command, as a new user runs it.
#
# `cargo run --release` in this checkout must start the broker (a durable single node):
# it is started with only addresses and a data dir after `--`, a QoS 1 retained message
# is published with mosquitto_pub, the broker is stopped with SIGTERM (it must exit 0),
# started again the same way, and mosquitto_sub must get the message back from disk.
# Installs mosquitto-clients when missing. Every wait is bounded; exits 1 on a failed
# check, 2 when it cannot run.
set -u

cd "$(dirname "$0")/.." || exit 2
WORK=$(mktemp -d /tmp/raftmq-run.XXXXXX)
PID=

cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

die() { echo "run_command: $*" >&2; [ -f "$WORK/broker.log" ] && tail -n 30 "$WORK/broker.log" >&2; exit "${2:-1}"; }

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "installing mosquitto-clients"
  (apt-get update -qq && apt-get install -y -qq mosquitto-clients) >/dev/null 2>&1 \
    || die "cannot install mosquitto-clients" 2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MQTT=$(free_port)
HTTP=$(free_port)

# The release build first (minutes on a fresh clone), so the start below is bounded.
timeout 1800 cargo build --release -q || die "cargo build --release failed" 2

start() {
  # `cargo run` execs the binary on Unix, so $! is the broker itself.
  cargo run --release -q -- --data-dir "$WORK/data" --mqtt-addr "127.0.0.1:$MQTT" \
    --http-addr "127.0.0.1:$HTTP" --cluster-addr 127.0.0.1:0 >>"$WORK/broker.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$HTTP/ready', timeout=1)" \
      2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || die "the broker exited at start"
    sleep 0.1
  done
  die "the broker was not ready within 30 s"
}

stop() {
  kill -TERM "$PID"
  for _ in $(seq 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$PID" 2>/dev/null && die "the broker did not stop within 10 s of SIGTERM"
  wait "$PID"
  local rc=$?
  PID=
  [ "$rc" = 0 ] || die "the broker exited with status $rc after SIGTERM"
}

start
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$MQTT" -q 1 -r -t run/check -m "durable $$" \
  || die "mosquitto_pub failed"
stop
start
got=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$MQTT" -q 1 -t run/check -C 1 -W 5) \
  || die "mosquitto_sub got nothing after the restart"
[ "$got" = "durable $$" ] || die "after the restart: got '$got', expected 'durable $$'"
stop
echo "run_command: cargo run --release started the broker; the retained message survived a restart"
echo "1 passed, 0 failed"
