#!/usr/bin/env bash
# deploy/up.sh: a three-node raftmq cluster in Docker, from a fresh clone.
#
# Builds the release binary and the image (deploy/build.sh), then
# `docker compose up -d` with deploy/docker-compose.yml, and waits (at most 90 s)
# until the three nodes are ready. The cluster secret and admin token are generated
# once into deploy/secrets/ (lib.sh, load_secrets). MQTT on 127.0.0.1:1883, 1884,
# 1885; HTTP on 127.0.0.1:8080, 8081, 8082. Stop with `deploy/down.sh` (add -v to drop the data).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

docker info >/dev/null 2>&1 || { echo "up: no Docker engine answers 'docker info'" >&2; exit 2; }
[ ${#COMPOSE_CMD[@]} -gt 0 ] || { echo "up: install Docker Compose ('docker compose' or 'docker-compose')" >&2; exit 2; }

bash deploy/build.sh
fit_nofile
compose up -d

deadline=$((SECONDS + 90))
for node in node1 node2 node3; do
  until docker exec "raftmq-$node" /usr/local/bin/raftmq-probe http://127.0.0.1:8080/ready >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "up: $node is not ready after 90 s; its log:" >&2
      docker logs --tail 30 "raftmq-$node" >&2
      exit 1
    fi
    sleep 0.5
  done
done
docker exec raftmq-node1 /usr/local/bin/raftmq cluster status --http 127.0.0.1:8080
cat <<INFO
raftmq cluster ready:
  MQTT  127.0.0.1:${RAFTMQ_MQTT_PORT_1:-1883} (node1)  127.0.0.1:${RAFTMQ_MQTT_PORT_2:-1884} (node2)  127.0.0.1:${RAFTMQ_MQTT_PORT_3:-1885} (node3)
  HTTP  http://127.0.0.1:${RAFTMQ_HTTP_PORT_1:-8080}/cluster  (8081, 8082: the other nodes)
  logs  docker logs -f raftmq-node1        stop  deploy/down.sh [-v]
  admin token  deploy/secrets/admin.token (curl -H "Authorization: Bearer \$(cat deploy/secrets/admin.token)" -X POST ...)
INFO
