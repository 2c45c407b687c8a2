#!/usr/bin/env bash
# Installs everything the suite needs on a fresh machine (apt servers, .venv, npm, a Kubernetes control plane built
# from Go modules), then runs it all.
# Usage: ./test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '[test.sh] %s\n' "$*"; }

APT_PACKAGES=(redis-server shellcheck chromium nginx-light wrk cloud-init)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: missing system packages (${missing[*]}); tests that need them will fail" >&2
  fi
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
log "installing mlstack[test] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

log "Kubernetes control plane for the cluster tier (built once from the Go module proxy, cached in ~/.cache/mlstack/k8s)"
tests/k8s/build.sh >/dev/null

if [[ -f frontend/package.json ]]; then
  log "frontend: npm ci, unit tests, build"
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm test --silent && npm run build --silent)
fi

log "ruff"
.venv/bin/ruff check .
if command -v shellcheck >/dev/null; then
  log "shellcheck"
  shellcheck init.sh test.sh .ci/run tests/cluster/e2e_smoke.sh tests/k8s/*.sh
fi

log "pytest"
export RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
