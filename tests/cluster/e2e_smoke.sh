#!/usr/bin/env bash
# End-to-end smoke test against a stack started by `./init.sh --cluster` (used by .github/workflows/e2e-kind.yml):
# train -> ModelDeployment -> Ready -> inference -> an alert on /webhook. Polls with deadlines, never a fixed sleep.
# Usage: tests/cluster/e2e_smoke.sh [API_URL]   (default http://localhost:8888; kube context kind-$MLSTACK_CLUSTER_NAME)
set -euo pipefail
API=${1:-http://localhost:8888}
KCTX="kind-${MLSTACK_CLUSTER_NAME:-mlstack}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { printf '[smoke] %s\n' "$*"; }
fail() { printf '[smoke] FAILED: %s\n' "$*" >&2; exit 1; }

# poll SECONDS DESCRIPTION CMD...: retry CMD until it succeeds or the deadline passes
poll() {
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after ${limit}s: $what"
    sleep 2
  done
}

# the SSE stream is read from the start, so the alerts of this run are seen whatever their timing
ALERTS=$(mktemp)
trap 'kill "$SSE_PID" 2>/dev/null || true; rm -f "$ALERTS" "$ALERTS.job"' EXIT
curl -sN --max-time 1800 -H 'Accept: text/event-stream' "$API/webhook" >"$ALERTS" &
SSE_PID=$!

log "API ready at $API"
poll 300 "GET /readyz" curl -fsS -o /dev/null "$API/readyz"

log "training"
curl -fsS -X POST "$API/trigger_training" -H 'Content-Type: application/json' \
  -d '{"hyperparameters": {"n_estimators": 50}}' >"$ALERTS.job"
JOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "$ALERTS.job")
job_done() {
  local status
  status=$(curl -fsS "$API/training/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [[ $status == failed ]] && fail "training job $JOB failed: $(curl -fsS "$API/training/$JOB")"
  [[ $status == succeeded ]]
}
poll 900 "training job $JOB" job_done
log "training job $JOB succeeded"

log "ModelDeployment iris (onnx) -> Ready"
kubectl --context "$KCTX" apply -f manifests/examples/iris-onnx.yaml
if ! kubectl --context "$KCTX" -n models wait --for=jsonpath='{.status.phase}'=Ready mdep/iris --timeout=900s; then
  kubectl --context "$KCTX" -n models get mdep iris -o yaml >&2 || true
  kubectl --context "$KCTX" -n models get pods,events >&2 || true
  kubectl --context "$KCTX" -n mlstack-system logs deploy/mlstack-operator --tail=50 >&2 || true
  fail "ModelDeployment iris did not become Ready"
fi

log "inference"
inference_ok() {
  curl -fsS -X POST "$API/inference" -H 'Content-Type: application/json' \
    -d '{"input_data": [5.1, 3.5, 1.4, 0.2]}' | grep -q '"prediction'
}
poll 300 "POST /inference" inference_ok

log "an alert on /webhook"
poll 120 "an event on /webhook" grep -q '^data:' "$ALERTS"
log "OK: train -> ModelDeployment Ready -> inference -> alert"
