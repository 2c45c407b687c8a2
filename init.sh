#!/usr/bin/env bash
# mlstack bootstrap: the whole stack on a kind cluster (cluster mode) or on this machine (local mode).
#
#   ./init.sh                 cluster mode when a Docker daemon and kind are usable, else local mode
#   ./init.sh --local         local mode: Redis, MLflow, Ray, the API on :8888, the dashboard on :5001
#   ./init.sh --cluster       force cluster mode
#   ./init.sh --dry-run       print every command it would run, in order; touch nothing
#   ./init.sh --down          stop / delete what it started
#   ./init.sh --help
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
export OUT="${MLSTACK_OUTPUTS:-$ROOT/outputs}"

MODE=auto
ACTION=up
DRY_RUN=0

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

log() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# run CMD...: print it; execute unless --dry-run
run() {
  if ((DRY_RUN)); then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

parse_args() {
  while (($#)); do
    case "$1" in
      --local) MODE=local ;;
      --cluster) MODE=cluster ;;
      --dry-run) DRY_RUN=1 ;;
      --down) ACTION=down ;;
      -h|--help) usage; exit 0 ;;
      *) parse_cluster_arg "$@" || { usage >&2; die "unknown argument: $1"; }
         shift "$CLUSTER_ARG_SHIFT"; continue ;;
    esac
    shift
  done
}

# >>> local mode ---------------------------------------------------------------------------------
local_up() {
  die "local mode: not implemented yet"
}

local_down() {
  die "local mode: not implemented yet"
}
# <<< local mode ---------------------------------------------------------------------------------

# >>> cluster mode -------------------------------------------------------------------------------
CLUSTER_ARG_SHIFT=1
# parse_cluster_arg ARGS...: consume a cluster-only option (sets CLUSTER_ARG_SHIFT); non-zero if unknown
parse_cluster_arg() {
  return 1
}

# cluster_usable: zero when a Docker daemon and kind are usable; else prints why on stdout
cluster_usable() {
  if ! command -v docker >/dev/null 2>&1; then echo "docker is not installed"; return 1; fi
  if ! docker info >/dev/null 2>&1; then echo "no Docker daemon is reachable (docker info failed)"; return 1; fi
  if ! command -v kind >/dev/null 2>&1; then echo "kind is not installed"; return 1; fi
  return 0
}

cluster_up() {
  die "cluster mode is not implemented yet"
}

cluster_down() {
  die "cluster mode is not implemented yet"
}
# <<< cluster mode -------------------------------------------------------------------------------

main() {
  parse_args "$@"
  if [[ $MODE == auto ]]; then
    local why
    if why=$(cluster_usable); then
      MODE=cluster
      log "Docker daemon and kind are usable: cluster mode (use --local to run on this machine)"
    else
      MODE=local
      log "Cluster mode unavailable: $why. Running local mode (use --cluster to force)."
    fi
  fi
  "${MODE}_${ACTION}"
}

main "$@"
