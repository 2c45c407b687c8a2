#!/usr/bin/env bash
# Starts a real Kubernetes control plane in DIR (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# fake nodes), installs the CRDs, waits until all is ready and prints `export KUBECONFIG=DIR/kubeconfig`.
# Binaries are built once by tests/k8s/build.sh. Stop it with tests/k8s/down.sh DIR.
# Usage: tests/k8s/up.sh DIR
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
mkdir -p "$1"
cd "$ROOT" && exec "$PY" -m tests.k8s.controlplane up "$(cd "$1" && pwd)"
