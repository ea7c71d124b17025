# deploy/lib.sh: sourced by the deploy scripts. Sets ROOT (the repository), TARGET
# (cargo's target dir), RAFTMQ_IMAGE, and `compose`, which runs Compose v2 (`docker compose`)
# or v1 (`docker-compose`), whichever works, on deploy/docker-compose.yml as project
# "raftmq" (so every container, network and volume is named raftmq…).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export RAFTMQ_IMAGE=${RAFTMQ_IMAGE:-raftmq:latest}
COMPOSE_FILE_PATH=$ROOT/deploy/docker-compose.yml

if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
elif docker-compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker-compose)
else
  COMPOSE_CMD=()
fi

compose() {
  [ ${#COMPOSE_CMD[@]} -gt 0 ] || { echo "neither 'docker compose' nor 'docker-compose' works" >&2; return 2; }
  "${COMPOSE_CMD[@]}" -p raftmq -f "$COMPOSE_FILE_PATH" "$@"
}

# Exports RAFTMQ_NOFILE (the containers' open-file limit in docker-compose.yml) when
# the engine cannot give the default 65536 (its own hard limit is lower): then the
# most it can give. Left alone when already set.
fit_nofile() {
  [ -n "${RAFTMQ_NOFILE:-}" ] && return 0
  local probe=(docker run --rm --name raftmq-nofile-check --entrypoint /usr/local/bin/raftmq-probe)
  "${probe[@]}" --ulimit nofile=65536:65536 "$RAFTMQ_IMAGE" nofile >/dev/null 2>&1 && return 0
  local hard
  hard=$("${probe[@]}" "$RAFTMQ_IMAGE" nofile | awk '{print $2}')
  case "$hard" in
    '' | *[!0-9]*) echo "cannot read the engine's open-file limit; keeping 65536" >&2 ;;
    *)
      echo "the Docker engine allows at most $hard open files per container: RAFTMQ_NOFILE=$hard"
      export RAFTMQ_NOFILE=$hard
      ;;
  esac
}
