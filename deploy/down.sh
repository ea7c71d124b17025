#!/usr/bin/env bash
# deploy/down.sh [-v]: stops and removes the Compose cluster; -v also deletes its
# volumes (every node's data).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
compose down --remove-orphans "$@"
