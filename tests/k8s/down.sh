#!/usr/bin/env bash
# Stops exactly what tests/k8s/up.sh DIR started (the PIDs it recorded in DIR/pids).
# Usage: tests/k8s/down.sh DIR
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
cd "$ROOT" && exec "$PY" -m tests.k8s.controlplane down "$(cd "$1" && pwd)"
