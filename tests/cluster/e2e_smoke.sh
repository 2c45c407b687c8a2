#!/usr/bin/env bash
# End-to-end smoke test against a stack started by `./init.sh --cluster` (used by .github/workflows/e2e-kind.yml):
# train -> ModelDeployment -> Ready -> inference -> an alert on /webhook. Polls with deadlines, never a fixed sleep.
# Usage: tests/cluster/e2e_smoke.sh [API_URL]   (default http://localhost:8888; kube context kind-$MLSTACK_CLUSTER_NAME)
# Authenticates with MLSTACK_TOKEN: from the environment, else the admin token ./init.sh wrote to
# ${MLSTACK_OUTPUTS:-outputs}/credentials.txt (sent from a header file, never on a command line).
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
SSE_PID=""
trap 'kill "$SSE_PID" 2>/dev/null || true; rm -f "$ALERTS" "$ALERTS.job" "$ALERTS.auth" "$ALERTS.member"' EXIT
TOKEN=${MLSTACK_TOKEN:-$(sed -n 's/^MLSTACK_TOKEN=//p' "${MLSTACK_OUTPUTS:-outputs}/credentials.txt" 2>/dev/null || true)}
AUTH=()
if [[ -n $TOKEN ]]; then
  (umask 077 && printf 'Authorization: Bearer %s\n' "$TOKEN" >"$ALERTS.auth")
  AUTH=(-H "@$ALERTS.auth")
else
  log "no MLSTACK_TOKEN (environment or outputs/credentials.txt): calling the API without a token"
fi
curl -sN --max-time 1800 "${AUTH[@]}" -H 'Accept: text/event-stream' "$API/webhook" >"$ALERTS" &
SSE_PID=$!

log "API ready at $API"
poll 300 "GET /readyz" curl -fsS -o /dev/null "$API/readyz"

log "training"
curl -fsS "${AUTH[@]}" -X POST "$API/trigger_training" -H 'Content-Type: application/json' \
  -d '{"hyperparameters": {"n_estimators": 50}}' >"$ALERTS.job"
JOB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "$ALERTS.job")
job_done() {
  local status
  status=$(curl -fsS "${AUTH[@]}" "$API/training/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [[ $status == failed ]] && fail "training job $JOB failed: $(curl -fsS "${AUTH[@]}" "$API/training/$JOB")"
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
  curl -fsS "${AUTH[@]}" -X POST "$API/inference" -H 'Content-Type: application/json' \
    -d '{"input_data": [5.1, 3.5, 1.4, 0.2]}' | grep -q '"prediction'
}
poll 300 "POST /inference" inference_ok

log "an alert on /webhook"
poll 120 "an event on /webhook" grep -q '^data:' "$ALERTS"

if [[ -n $TOKEN ]]; then
  json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
  log "authentication: no token is a 401, the admin token is the platform admin"
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$API/auth/me")
  [[ $code == 401 ]] || fail "GET /auth/me without a token answered $code, not 401"
  curl -fsS "${AUTH[@]}" "$API/auth/me" | grep -q 'mlstack-admin' || fail "the admin token is not mlstack-admin"

  ORG="smoke-$RANDOM"
  log "organisation $ORG: create, invite, join (a member's token), budget, delete"
  curl -fsS "${AUTH[@]}" -X POST "$API/orgs" -H 'Content-Type: application/json' \
    -d "{\"name\": \"$ORG\", \"budget\": {\"cpu\": \"2\", \"memory\": \"4Gi\"}}" >/dev/null
  CODE=$(curl -fsS "${AUTH[@]}" -X POST "$API/orgs/$ORG/invites" -H 'Content-Type: application/json' \
    -d '{"role": "deployer"}' | json code)
  MEMBER=$(curl -fsS -X POST "$API/orgs/join" -H 'Content-Type: application/json' \
    -d "{\"code\": \"$CODE\", \"name\": \"member\"}" | json token)
  (umask 077 && printf 'Authorization: Bearer %s\n' "$MEMBER" >"$ALERTS.member")
  [[ $(curl -fsS -H "@$ALERTS.member" "$API/auth/me" | json org) == "$ORG" ]] || fail "the member's home is not $ORG"
  curl -fsS "${AUTH[@]}" -X PATCH "$API/orgs/$ORG" -H 'Content-Type: application/json' \
    -d '{"budget": {"cpu": "3", "memory": "4Gi"}}' >/dev/null
  curl -fsS "${AUTH[@]}" -X DELETE "$API/orgs/$ORG" >/dev/null

  log "the API's admission policy: no namespace writes outside organisations (server-side dry run)"
  as_api=(kubectl --context "$KCTX" --as=system:serviceaccount:mlstack:mlstack-api)
  if out=$("${as_api[@]}" create namespace "not-an-org-$RANDOM" --dry-run=server 2>&1); then
    fail "the API could create an unlabelled namespace: $out"
  fi
  grep -q 'organisation namespaces' <<<"$out" || fail "denied, but not by mlstack-api-org-scope: $out"
  "${as_api[@]}" -n mlstack-system create serviceaccount smoke --dry-run=server >/dev/null 2>&1 &&
    fail "the API could create a ServiceAccount outside an organisation"
  log "OK: TokenReview, organisations, member token, admission policy"
fi
log "OK: train -> ModelDeployment Ready -> inference -> alert"
