#!/usr/bin/env bash
# deploy/test.sh: the container deployment, tested with real container faults.
#
# Builds the image (deploy/build.sh), starts the three-node Compose cluster, waits
# until every node is ready, puts Debian's HAProxy in front of it (deploy/haproxy.cfg),
# then runs deploy/check.py: cross-node publish/subscribe, `docker kill` of the
# leader under persistent subscribers (who resume through HAProxy with nothing lost),
# restart and rejoin of the killed node, `docker network disconnect` of a follower
# and reconnect. See check.py for each check.
#
# Installs what is missing: haproxy (apt-get), paho-mqtt >= 2 (pip). Uses the
# published ports of docker-compose.yml (127.0.0.1:1883-1885, 8080-8082) and
# 127.0.0.1:1880/8404 for HAProxy, or free ports for all of them when one is taken.
# Every wait is bounded. `docker compose down -v` runs at the end, whatever happened.
# Exit status: 0 passed, 1 a check failed, 2 could not run.
#
# Environment: KEEP_LOGS=1 keeps the logs directory; RAFTMQ_SKIP_BUILD=1 uses the
# image already built; RAFTMQ_PARTITION=leader cuts off the leader instead of a
# follower (see deploy/README.md, "Testing").
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT" || exit 2
PYTHON=${PYTHON:-python3}

die() { echo "deploy test: $*" >&2; exit 2; }
say() { echo "deploy test: $*"; }

docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info'"
[ ${#COMPOSE_CMD[@]} -gt 0 ] || die "neither 'docker compose' nor 'docker-compose' works"
load_secrets
say "using ${COMPOSE_CMD[*]} ($("${COMPOSE_CMD[@]}" version --short 2>/dev/null || true))"

# ---- prerequisites -------------------------------------------------------------
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v haproxy >/dev/null; then
  say "installing haproxy"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy) >/dev/null 2>&1 \
    || die "cannot install haproxy"
fi
if ! "$PYTHON" -c 'import paho.mqtt, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; then
  say "installing paho-mqtt>=2"
  "$PYTHON" -m pip install -q 'paho-mqtt>=2' >/dev/null 2>&1 || die "cannot install paho-mqtt"
fi

# ---- ports ---------------------------------------------------------------------
# The defaults when all are free, else a free port for each (other tests may hold
# 1883 or 8080 on this machine).
PORTS=$("$PYTHON" - <<'PY'
import socket
defaults = [1883, 1884, 1885, 8080, 8081, 8082, 1880, 8404]
def free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
if all(free(p) for p in defaults):
    print(*defaults)
else:
    socks = [socket.socket() for _ in defaults]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(*[s.getsockname()[1] for s in socks])
    for s in socks:
        s.close()
PY
) || die "cannot pick ports"
read -r RAFTMQ_MQTT_PORT_1 RAFTMQ_MQTT_PORT_2 RAFTMQ_MQTT_PORT_3 \
        RAFTMQ_HTTP_PORT_1 RAFTMQ_HTTP_PORT_2 RAFTMQ_HTTP_PORT_3 LB_PORT STATS_PORT <<<"$PORTS"
export RAFTMQ_MQTT_PORT_1 RAFTMQ_MQTT_PORT_2 RAFTMQ_MQTT_PORT_3 \
       RAFTMQ_HTTP_PORT_1 RAFTMQ_HTTP_PORT_2 RAFTMQ_HTTP_PORT_3
export RAFTMQ_LB_BIND=127.0.0.1:$LB_PORT RAFTMQ_LB_STATS=127.0.0.1:$STATS_PORT
export RAFTMQ_LB_NODE1=127.0.0.1:$RAFTMQ_MQTT_PORT_1 RAFTMQ_LB_NODE1_HTTP=$RAFTMQ_HTTP_PORT_1
export RAFTMQ_LB_NODE2=127.0.0.1:$RAFTMQ_MQTT_PORT_2 RAFTMQ_LB_NODE2_HTTP=$RAFTMQ_HTTP_PORT_2
export RAFTMQ_LB_NODE3=127.0.0.1:$RAFTMQ_MQTT_PORT_3 RAFTMQ_LB_NODE3_HTTP=$RAFTMQ_HTTP_PORT_3
say "MQTT 127.0.0.1:$RAFTMQ_MQTT_PORT_1,$RAFTMQ_MQTT_PORT_2,$RAFTMQ_MQTT_PORT_3; HTTP $RAFTMQ_HTTP_PORT_1,$RAFTMQ_HTTP_PORT_2,$RAFTMQ_HTTP_PORT_3; HAProxy $LB_PORT (stats $STATS_PORT)"

# ---- cleanup -------------------------------------------------------------------
WORK=$(mktemp -d /tmp/raftmq-deploy.XXXXXX)
HAPROXY_PID=
CHILD=
# Long steps run in the background and are waited for, so that INT/TERM interrupt the
# wait at once (bash runs traps only between commands) and cleanup stops the step.
run() {
  "$@" &
  CHILD=$!
  wait "$CHILD"
  local status=$?
  CHILD=
  return $status
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then
    kill "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  if [ "$status" -ne 0 ]; then
    timeout 60 "${COMPOSE_CMD[@]}" -p raftmq -f "$COMPOSE_FILE_PATH" logs --no-color >"$WORK/compose.log" 2>&1
    timeout 30 docker ps -a --filter name=raftmq >"$WORK/containers.txt" 2>&1
    say "failed; last lines of the node logs (all in $WORK):"
    tail -n 40 "$WORK/compose.log"
  fi
  if [ -n "$HAPROXY_PID" ]; then
    kill "$HAPROXY_PID" 2>/dev/null
    wait "$HAPROXY_PID" 2>/dev/null
  fi
  say "compose down -v"
  timeout 120 "${COMPOSE_CMD[@]}" -p raftmq -f "$COMPOSE_FILE_PATH" down -v --remove-orphans >/dev/null 2>&1 \
    || say "compose down -v failed or timed out: remove the raftmq containers and volumes by hand"
  if [ "$status" -ne 0 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then
    say "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# ---- image ---------------------------------------------------------------------
if [ "${RAFTMQ_SKIP_BUILD:-0}" != 1 ]; then
  t0=$SECONDS
  run timeout 1800 bash deploy/build.sh 2>"$WORK/build.err" || { cat "$WORK/build.err"; die "image build failed"; }
  say "image built in $((SECONDS - t0)) s (cargo build included)"
fi
docker image inspect "$RAFTMQ_IMAGE" >/dev/null 2>&1 || die "no image $RAFTMQ_IMAGE"
fit_nofile

# ---- cluster -------------------------------------------------------------------
T0=$SECONDS
timeout 120 "${COMPOSE_CMD[@]}" -p raftmq -f "$COMPOSE_FILE_PATH" down -v --remove-orphans >/dev/null 2>&1
timeout 180 "${COMPOSE_CMD[@]}" -p raftmq -f "$COMPOSE_FILE_PATH" up -d 2>"$WORK/up.err" \
  || { cat "$WORK/up.err"; exit 1; }
deadline=$((SECONDS + 90))
for node in node1 node2 node3; do
  until docker exec "raftmq-$node" /usr/local/bin/raftmq-probe http://127.0.0.1:8080/ready >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { say "$node not ready within 90 s"; exit 1; }
    sleep 0.5
  done
done
say "cluster up and ready in $((SECONDS - T0)) s"

haproxy -db -f deploy/haproxy.cfg >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
deadline=$((SECONDS + 10))
until (exec 3<>"/dev/tcp/127.0.0.1/$STATS_PORT") 2>/dev/null; do
  kill -0 "$HAPROXY_PID" 2>/dev/null || { cat "$WORK/haproxy.log"; die "haproxy exited"; }
  [ $SECONDS -lt $deadline ] || die "haproxy not listening on $STATS_PORT after 10 s"
  sleep 0.2
done

# ---- checks --------------------------------------------------------------------
run timeout 600 "$PYTHON" deploy/check.py
status=$?
[ $status -eq 124 ] && say "check.py did not finish within 600 s"
say "container checks took $((SECONDS - T0)) s (cluster start included)"
[ $status -eq 0 ] || exit 1
say "passed"
