# deploy/lib.sh: sourced by the deploy scripts. Sets ROOT (the repository), TARGET
# (cargo's target dir), RAFTMQ_IMAGE, and `compose`, which runs Compose v2 (`docker compose`)
# or v1 (`docker-compose`), whichever works, on deploy/docker-compose.yml as project
# "raftmq" (so every container, network and volume is named raftmq…), after
# `load_secrets` (the cluster secret and admin token in deploy/secrets/).

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
  load_secrets >&2
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

# Exports RAFTMQ_CLUSTER_SECRET and RAFTMQ_ADMIN_TOKEN (docker-compose.yml hands them to
# the nodes) from deploy/secrets/, generating each once (64 hex digits from the
# kernel's random source): the same secret across restarts, never in git.
load_secrets() {
  local dir=$ROOT/deploy/secrets
  mkdir -p "$dir"
  chmod 700 "$dir"
  local name
  for name in cluster.secret admin.token; do
    if [ ! -s "$dir/$name" ]; then
      (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$name")
      echo "generated deploy/secrets/$name"
    fi
  done
  RAFTMQ_CLUSTER_SECRET=$(cat "$dir/cluster.secret")
  RAFTMQ_ADMIN_TOKEN=$(cat "$dir/admin.token")
  export RAFTMQ_CLUSTER_SECRET RAFTMQ_ADMIN_TOKEN
}
