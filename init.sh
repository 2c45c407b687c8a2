#!/usr/bin/env bash
# mlstack bootstrap: the whole stack on a kind cluster (cluster mode) or on this machine (local mode).
#
#   ./init.sh                 cluster mode when a Docker daemon and kind are usable, else local mode
#   ./init.sh --local         local mode: Redis, MLflow, Ray, the API on :8888, the dashboard on :5001
#   ./init.sh --cluster       force cluster mode
#   ./init.sh --dry-run       print every command it would run, in order; touch nothing
#   ./init.sh --down          stop / delete what it started
#   ./init.sh --help
#
# Cluster options: --name NAME (kind cluster), --repo URL (git repo Argo CD syncs; default: origin),
#   --revision REV, --with-kubevirt (VM-backed serving; software emulation on kind).
# Local ports: MLSTACK_{API,DASHBOARD,MLFLOW,REDIS,RAY,RAY_DASHBOARD,RAY_AGENT,RAYSERVE}_PORT;
# outputs: MLSTACK_OUTPUTS (default outputs/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
export OUT="${MLSTACK_OUTPUTS:-$ROOT/outputs}"

MODE=auto
ACTION=up
DRY_RUN=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

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
# Local mode is Python: `mlstack up --local` / `mlstack down` (fastapi/mlstack/local/stack.py) start and stop the
# services as processes with pid files and logs in $OUT/local; ports and paths come from MLSTACK_* variables.
# Before the virtual environment exists (its step 1 makes it) it runs from this source tree on python3.
VENV=${MLSTACK_VENV:-$ROOT/.venv}

local_mlstack() {
  local python=$VENV/bin/python flags=()
  [[ -x $python ]] || python=$(command -v python3) || die "local mode needs python3 (3.11 or newer)"
  ((DRY_RUN)) && flags+=(--dry-run)
  PYTHONPATH="$ROOT/fastapi${PYTHONPATH:+:$PYTHONPATH}" MLSTACK_OUTPUTS="$OUT" MLSTACK_VENV="$VENV" \
    exec "$python" -m mlstack "$@" "${flags[@]}"
}

local_up() { local_mlstack up --local; }
local_down() { local_mlstack down; }

# >>> cluster mode -------------------------------------------------------------------------------
# Cluster mode: kind + pinned Helm charts (config/charts.conf) + images tagged by git commit + Argo CD
# app-of-apps (manifests/argocd). Cluster-only options: --name NAME, --repo URL, --revision REV,
# --with-kubevirt. Defaults: config/defaults.env (each overridable from the environment).
CLUSTER_ARG_SHIFT=1
CLUSTER_NAME=""
CLUSTER_REPO=""
CLUSTER_REVISION=""
WITH_KUBEVIRT=0
CLUSTER_STEP=0
CLUSTER_STEPS=16

# parse_cluster_arg ARGS...: consume a cluster-only option (sets CLUSTER_ARG_SHIFT); non-zero if unknown
parse_cluster_arg() {
  CLUSTER_ARG_SHIFT=1
  case "$1" in
    --name|--repo|--revision)
      (($# >= 2)) || die "$1 needs a value"
      cluster_set_opt "$1" "$2"
      CLUSTER_ARG_SHIFT=2 ;;
    --name=*|--repo=*|--revision=*) cluster_set_opt "${1%%=*}" "${1#*=}" ;;
    --with-kubevirt) WITH_KUBEVIRT=1 ;;
    *) return 1 ;;
  esac
}

cluster_set_opt() {
  case "$1" in
    --name) CLUSTER_NAME=$2 ;;
    --repo) CLUSTER_REPO=$2 ;;
    --revision) CLUSTER_REVISION=$2 ;;
  esac
}

# cluster_usable: zero when a Docker daemon and kind are usable; else prints why on stdout
cluster_usable() {
  if ! command -v docker >/dev/null 2>&1; then echo "docker is not installed"; return 1; fi
  if ! docker info >/dev/null 2>&1; then echo "no Docker daemon is reachable (docker info failed)"; return 1; fi
  if ! command -v kind >/dev/null 2>&1; then echo "kind is not installed"; return 1; fi
  return 0
}

# cluster_init: defaults (config/defaults.env, environment wins), then the derived settings
cluster_init() {
  local key value
  while IFS='=' read -r key value; do
    [[ $key =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
    value=${value%\"}
    value=${value#\"}
    [[ -n ${!key:-} ]] || printf -v "$key" '%s' "$value"
  done <"$ROOT/config/defaults.env"
  CLUSTER_NAME=${CLUSTER_NAME:-$MLSTACK_CLUSTER_NAME}
  KCTX="kind-$CLUSTER_NAME"
  IMAGE_TAG=$(cluster_image_tag)
  ((WITH_KUBEVIRT)) && CLUSTER_STEPS=$((CLUSTER_STEPS + 1))
  return 0
}

step() {
  CLUSTER_STEP=$((CLUSTER_STEP + 1))
  log "[$CLUSTER_STEP/$CLUSTER_STEPS] $*…"
}

warn() { printf 'warning: %s\n' "$*" >&2; }

# k ARGS / h ARGS: kubectl / helm against the kind cluster's context only
k() { run kubectl --context "$KCTX" "$@"; }
h() { run helm --kube-context "$KCTX" "$@"; }

# kapply_generated CMD...: CMD prints manifests on stdout; apply them (dry-run: print the pipeline)
kapply_generated() {
  if ((DRY_RUN)); then
    printf '+ %s | kubectl --context %s apply -f -\n' "$*" "$KCTX"
  else
    "$@" | kubectl --context "$KCTX" apply -f -
  fi
}

# cluster_image_tag: the git commit (12 hex); a dirty tree adds a hash of its diff, so every state differs
cluster_image_tag() {
  local sha
  sha=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null) || { echo "0.0.0-nogit"; return 0; }
  if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    sha="$sha-dirty-$(git -C "$ROOT" diff HEAD 2>/dev/null | sha256sum | cut -c1-8)"
  fi
  echo "$sha"
}

# cluster_repo_url: --repo, else the origin remote (ssh remotes rewritten to https for Argo CD)
cluster_repo_url() {
  local url=${CLUSTER_REPO:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)} rest
  case "$url" in
    git@*:*) rest=${url#git@}; url="https://${rest/://}" ;;
    ssh://git@*) url="https://${url#ssh://git@}" ;;
  esac
  echo "$url"
}

cluster_revision() {
  local rev=$CLUSTER_REVISION
  if [[ -z $rev ]]; then
    rev=$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo HEAD)
    [[ $rev != HEAD ]] || rev=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo main)
  fi
  echo "$rev"
}

# version_ge A B: A >= B (dotted versions)
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

tool_version() {
  case "$1" in
    docker) docker version --format '{{.Client.Version}}' 2>/dev/null || true ;;
    kind) kind version 2>/dev/null | sed -n 's/^kind v\([0-9.]*\).*/\1/p' ;;
    kubectl) kubectl version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"v\([0-9.]*\).*/\1/p' | head -n1 ;;
    helm) helm version --template '{{.Version}}' 2>/dev/null | sed 's/^v//' ;;
  esac
  return 0  # `docker version` exits non-zero without a daemon, after printing the client version
}

install_hint() {
  case "$1" in
    docker) echo "install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/" ;;
    kind) echo "go install sigs.k8s.io/kind@v$MLSTACK_MIN_KIND, or see https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    kubectl) echo "see https://kubernetes.io/docs/tasks/tools/ (any kubectl >= $MLSTACK_MIN_KUBECTL)" ;;
    helm) echo "curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash" ;;
    git) echo "apt-get install git (or your OS's package manager)" ;;
  esac
}

# cluster_prereqs: every tool present at its minimum version and a reachable Docker daemon; under
# --dry-run problems are warnings (nothing will run)
cluster_prereqs() {
  local tool min have problems=()
  for tool in docker kind kubectl helm git; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      problems+=("$tool is not installed: $(install_hint "$tool")")
      continue
    fi
    case "$tool" in
      docker) min=$MLSTACK_MIN_DOCKER ;; kind) min=$MLSTACK_MIN_KIND ;;
      kubectl) min=$MLSTACK_MIN_KUBECTL ;; helm) min=$MLSTACK_MIN_HELM ;; *) continue ;;
    esac
    have=$(tool_version "$tool")
    if [[ -z $have ]] || ! version_ge "$have" "$min"; then
      problems+=("$tool ${have:-(unknown version)} is older than $min: $(install_hint "$tool")")
    fi
  done
  if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    problems+=("no Docker daemon is reachable (docker info failed): start Docker, or run ./init.sh --local")
  fi
  if ((${#problems[@]})); then
    if ((DRY_RUN)); then
      for tool in "${problems[@]}"; do warn "$tool (dry run: continuing)"; done
    else
      for tool in "${problems[@]}"; do printf '  missing: %s\n' "$tool" >&2; done
      die "cluster mode prerequisites are missing (see above); ./init.sh --local needs none of them"
    fi
  fi
  return 0
}

# explain NAMESPACE: why pods there are not ready (status, the last events of each, recent logs)
explain() {
  ((DRY_RUN)) && return 0
  local ns=$1 pod
  printf -- '---- pods in namespace %s\n' "$ns" >&2
  kubectl --context "$KCTX" -n "$ns" get pods -o wide >&2 || true
  for pod in $(kubectl --context "$KCTX" -n "$ns" get pods --no-headers 2>/dev/null |
    awk '{split($2, r, "/"); if (r[1] != r[2] && $3 != "Completed") print $1}'); do
    printf -- '---- %s/%s: last events\n' "$ns" "$pod" >&2
    kubectl --context "$KCTX" -n "$ns" describe pod "$pod" 2>/dev/null | sed -n '/^Events:/,$p' | tail -n 12 >&2 || true
    printf -- '---- %s/%s: last log lines\n' "$ns" "$pod" >&2
    kubectl --context "$KCTX" -n "$ns" logs "$pod" --all-containers --tail=15 >&2 2>/dev/null || true
  done
  printf -- '---- recent events in %s\n' "$ns" >&2
  kubectl --context "$KCTX" -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
}

# or_explain NAMESPACE CMD...: run CMD; on failure explain NAMESPACE and stop
or_explain() {
  local ns=$1
  shift
  if ! "$@"; then
    explain "$ns"
    die "failed: $* (namespace $ns; details above)"
  fi
}

# secret_value NS NAME KEY: current value of a Secret key, "" when absent (reused: a re-run converges)
secret_value() {
  ((DRY_RUN)) && return 0
  kubectl --context "$KCTX" -n "$1" get secret "$2" -o "jsonpath={.data.$3}" 2>/dev/null | base64 -d 2>/dev/null || true
}

# new_secret: 24 random bytes as hex (URL-safe, so it can sit in redis:// URLs)
new_secret() {
  if ((DRY_RUN)); then echo "GENERATED"; else od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; fi
}

# apply_secret NS NAME KEY=VALUE...: create or update a Secret; values never appear in argv or output
apply_secret() {
  local ns=$1 name=$2 env
  shift 2
  if ((DRY_RUN)); then
    printf '+ kubectl --context %s -n %s create secret generic %s --from-env-file=<%s> --dry-run=client -o yaml | kubectl --context %s apply -f -\n' \
      "$KCTX" "$ns" "$name" "${*%%=*}" "$KCTX"
    return 0
  fi
  env=$(mktemp)
  chmod 600 "$env"
  printf '%s\n' "$@" >"$env"
  kubectl --context "$KCTX" -n "$ns" create secret generic "$name" --from-env-file="$env" --dry-run=client -o yaml |
    kubectl --context "$KCTX" apply -f - >/dev/null || { rm -f "$env"; die "could not write Secret $ns/$name"; }
  rm -f "$env"
}

# cluster_secrets: generated credentials (reused when they already exist) stored as Secrets
cluster_secrets() {
  MINIO_USER=$(secret_value minio minio-root rootUser)
  MINIO_PASSWORD=$(secret_value minio minio-root rootPassword)
  REDIS_PASSWORD=$(secret_value mlstack redis-auth password)
  [[ -n $MINIO_USER ]] || MINIO_USER="mlstack-$(new_secret | cut -c1-8)"
  [[ -n $MINIO_PASSWORD ]] || MINIO_PASSWORD=$(new_secret)
  [[ -n $REDIS_PASSWORD ]] || REDIS_PASSWORD=$(new_secret)
  apply_secret minio minio-root "rootUser=$MINIO_USER" "rootPassword=$MINIO_PASSWORD"
  apply_secret mlflow mlflow-s3 "AWS_ACCESS_KEY_ID=$MINIO_USER" "AWS_SECRET_ACCESS_KEY=$MINIO_PASSWORD"
  apply_secret mlstack mlstack-s3 "access-key=$MINIO_USER" "secret-key=$MINIO_PASSWORD"
  apply_secret ray mlstack-s3 "access-key=$MINIO_USER" "secret-key=$MINIO_PASSWORD"
  apply_secret mlstack redis-auth "password=$REDIS_PASSWORD"
}

# image_build IMAGE: the docker build of one of MLSTACK_IMAGES (repository root as context)
image_build() {
  case "$1" in
    mlstack-api) run docker build -f fastapi/Dockerfile --target api -t "mlstack-api:$IMAGE_TAG" . ;;
    mlstack-server) run docker build -f fastapi/Dockerfile --target server -t "mlstack-server:$IMAGE_TAG" . ;;
    mlstack-operator) run docker build -f operator/Dockerfile -t "mlstack-operator:$IMAGE_TAG" . ;;
    mlstack-dashboard)
      ((DRY_RUN)) || [[ -f frontend/Dockerfile ]] || die "frontend/Dockerfile is missing"
      run docker build -f frontend/Dockerfile -t "mlstack-dashboard:$IMAGE_TAG" frontend ;;
    *) die "no build recipe for image $1" ;;
  esac
}

cluster_images() {
  local image
  for image in $MLSTACK_IMAGES; do image_build "$image"; done
  for image in $MLSTACK_IMAGES; do run kind load docker-image "$image:$IMAGE_TAG" --name "$CLUSTER_NAME"; done
}

# chart_rows: the pinned chart list without comments
chart_rows() { grep -Ev '^[[:space:]]*(#|$)' "$ROOT/config/charts.conf"; }

cluster_helm_repos() {
  local release ns repo url chart version values seen=" "
  while read -r release ns repo url chart version values; do
    [[ $seen == *" $repo "* ]] && continue
    seen+="$repo "
    run helm repo add --force-update "$repo" "$url" </dev/null
  done < <(chart_rows)
  # shellcheck disable=SC2086 # one word per repository
  run helm repo update $seen
}

# helm_install RELEASE [ARGS...]: the release's row of config/charts.conf, pinned, waited for
helm_install() {
  local want=$1 release ns repo url chart version values row
  shift
  row=$(chart_rows | awk -v r="$want" '$1 == r')
  [[ -n $row ]] || die "release $want is not in config/charts.conf"
  read -r release ns repo url chart version values <<<"$row"
  : "$url"
  or_explain "$ns" h upgrade --install "$release" "$repo/$chart" --version "$version" \
    --namespace "$ns" --create-namespace -f "$values" --wait --timeout "$MLSTACK_HELM_TIMEOUT" "$@"
}

# the iris CSV into s3://mlops/data/iris.csv, by a Job running the API image (boto3) in the cluster
cluster_seed_data() {
  kapply_generated kubectl --context "$KCTX" -n mlstack create configmap iris-data \
    --from-file=iris.csv=fastapi/mlstack/data/iris.csv --dry-run=client -o yaml
  k -n mlstack delete job iris-seed --ignore-not-found
  kapply_generated sed -e "s|__IMAGE_TAG__|$IMAGE_TAG|g" manifests/platform/jobs/iris-seed.yaml
  or_explain mlstack k -n mlstack wait --for=condition=complete job/iris-seed --timeout="$MLSTACK_WAIT_TIMEOUT"
}

# wait_app NAME: the Argo CD Application exists, then is Healthy
wait_app() {
  or_explain argocd k -n argocd wait --for=create "application/$1" --timeout="$MLSTACK_WAIT_TIMEOUT"
  if ! k -n argocd wait --for=jsonpath='{.status.health.status}'=Healthy "application/$1" \
    --timeout="$MLSTACK_WAIT_TIMEOUT"; then
    kubectl --context "$KCTX" -n argocd get application "$1" \
      -o jsonpath='{.status.sync.status}{" "}{.status.health.status}{"\n"}{.status.conditions}{"\n"}{.status.operationState.message}{"\n"}' >&2 || true
    explain mlstack
    die "Argo CD Application $1 did not become Healthy (details above)"
  fi
}

cluster_kubevirt() {
  local base="https://github.com/kubevirt/kubevirt/releases/download/$MLSTACK_KUBEVIRT_VERSION"
  k apply -f "$base/kubevirt-operator.yaml"
  k apply -f "$base/kubevirt-cr.yaml"
  # kind nodes have no /dev/kvm: software emulation
  k -n kubevirt patch kubevirt kubevirt --type=merge \
    -p '{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}'
  or_explain kubevirt k -n kubevirt wait kubevirt/kubevirt --for=condition=Available --timeout="$MLSTACK_WAIT_TIMEOUT"
}

# admin_token: a token of ServiceAccount mlstack/mlstack-admin (ClusterRole mlstack-platform-admin, both in
# manifests/auth), valid for MLSTACK_ADMIN_TOKEN_DURATION; each run mints a new one (the old ones stay valid
# until they expire). Dry run: prints the command.
admin_token() {
  if ((DRY_RUN)); then
    k -n mlstack create token mlstack-admin --duration="$MLSTACK_ADMIN_TOKEN_DURATION"
    return 0
  fi
  kubectl --context "$KCTX" -n mlstack create token mlstack-admin --duration="$MLSTACK_ADMIN_TOKEN_DURATION" ||
    die "could not create a token for ServiceAccount mlstack/mlstack-admin (is Argo CD application mlstack-auth synced?)"
}

cluster_outputs() {
  local argocd_password="" api_token="" urls credentials
  ((DRY_RUN)) || argocd_password=$(secret_value argocd argocd-initial-admin-secret password)
  if ((DRY_RUN)); then admin_token; else api_token=$(admin_token); fi
  urls="# mlstack cluster mode (kind cluster $CLUSTER_NAME, images $IMAGE_TAG)
api=http://localhost:$MLSTACK_PORT_API
api_docs=http://localhost:$MLSTACK_PORT_API/docs
dashboard=http://localhost:$MLSTACK_PORT_DASHBOARD
mlflow=http://localhost:$MLSTACK_PORT_MLFLOW
argocd=http://localhost:$MLSTACK_PORT_ARGOCD
# ray_dashboard: no NodePort (its job API runs code): kubectl -n ray port-forward svc/ray-cluster-kuberay-head-svc $MLSTACK_PORT_RAY_DASHBOARD:8265
ray_dashboard=http://localhost:$MLSTACK_PORT_RAY_DASHBOARD
minio_console=http://localhost:$MLSTACK_PORT_MINIO_CONSOLE"
  credentials="# mlstack cluster mode: generated credentials, also stored as Secrets in the cluster
# (minio/minio-root, mlstack/redis-auth, argocd/argocd-initial-admin-secret). Do not commit.
MINIO_ROOT_USER=$MINIO_USER
MINIO_ROOT_PASSWORD=$MINIO_PASSWORD
ARGOCD_ADMIN_USER=admin
ARGOCD_ADMIN_PASSWORD=$argocd_password
REDIS_PASSWORD=$REDIS_PASSWORD
# The dashboard's and the API's admin token (platform admin: creates organisations, may do anything in
# mlstack.io): paste it into the dashboard's login, or curl -H \"Authorization: Bearer \$MLSTACK_TOKEN\".
# ServiceAccount mlstack/mlstack-admin; expires after $MLSTACK_ADMIN_TOKEN_DURATION, ./init.sh again mints a new one.
MLSTACK_TOKEN=$api_token"
  if ((DRY_RUN)); then
    printf '+ write %s/urls.txt and %s/credentials.txt (mode 600)\n' "$OUT" "$OUT"
    return 0
  fi
  mkdir -p "$OUT"
  printf '%s\n' "$urls" >"$OUT/urls.txt"
  (umask 077 && printf '%s\n' "$credentials" >"$OUT/credentials.txt")
  chmod 600 "$OUT/credentials.txt"
}

cluster_up() {
  cluster_init
  local repo revision
  repo=$(cluster_repo_url)
  revision=$(cluster_revision)
  log "cluster mode: kind cluster '$CLUSTER_NAME', images tagged $IMAGE_TAG, Argo CD syncing ${repo:-<no repository>}@$revision"

  step "Checking prerequisites (docker daemon, kind, kubectl, helm)"
  cluster_prereqs
  if [[ -z $repo ]]; then
    ((DRY_RUN)) || die "no git remote 'origin': pass --repo URL (a repository Argo CD can clone, e.g. https://github.com/you/mlstack.git)"
    warn "no git remote 'origin' and no --repo: printing the Argo CD root with <repo-url>"
    repo="<repo-url>"
  fi

  step "Creating kind cluster $CLUSTER_NAME (config/kind-config.yaml)"
  if ((DRY_RUN)) || ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    run kind create cluster --name "$CLUSTER_NAME" --image "$MLSTACK_KIND_NODE_IMAGE" \
      --config "$MLSTACK_KIND_CONFIG" --wait 180s
  else
    log "  kind cluster $CLUSTER_NAME exists: reusing it"
  fi

  step "Creating namespaces and platform additions"
  k apply -k manifests/namespaces
  k apply -k manifests/platform

  step "Generating credentials into Secrets"
  cluster_secrets

  step "Building images (tag $IMAGE_TAG) and loading them into kind"
  cluster_images

  step "Adding Helm repositories"
  cluster_helm_repos

  step "Installing the KubeRay operator"
  helm_install kuberay-operator

  step "Installing MinIO and uploading s3://mlops/data/iris.csv"
  helm_install minio
  cluster_seed_data

  step "Installing MLflow (sqlite on a PVC, artifacts in MinIO)"
  helm_install mlflow

  step "Installing Redis (official image)"
  k apply -k manifests/redis
  or_explain mlstack k -n mlstack rollout status statefulset/redis --timeout="$MLSTACK_WAIT_TIMEOUT"

  step "Installing the Ray cluster (image mlstack-api:$IMAGE_TAG)"
  helm_install ray-cluster --set image.repository=mlstack-api --set "image.tag=$IMAGE_TAG"

  step "Installing Argo CD"
  helm_install argocd

  step "Applying the ModelDeployment CRD"
  k apply --server-side --force-conflicts -k manifests/crds
  k wait --for=condition=Established crd/modeldeployments.mlstack.io --timeout=120s

  step "Creating the Argo CD app-of-apps (CRD, roles, operator, API, dashboard)"
  kapply_generated sed -e "s|__REPO_URL__|$repo|g" -e "s|__REVISION__|$revision|g" \
    -e "s|__IMAGE_TAG__|$IMAGE_TAG|g" manifests/argocd/root.yaml

  step "Waiting for the roles, the operator, the API, the dashboard and the monitor (synced by Argo CD)"
  wait_app mlstack-crds
  wait_app mlstack-auth
  wait_app mlstack-operator
  wait_app mlstack-api
  wait_app mlstack-dashboard
  wait_app mlstack-monitor

  if ((WITH_KUBEVIRT)); then
    step "Installing KubeVirt $MLSTACK_KUBEVIRT_VERSION (software emulation)"
    cluster_kubevirt
  fi

  step "Writing outputs/urls.txt and outputs/credentials.txt (with an admin token for the API and dashboard)"
  cluster_outputs

  log ""
  log "mlstack is up on kind cluster '$CLUSTER_NAME' (kubectl --context $KCTX):"
  log "  API            http://localhost:$MLSTACK_PORT_API  (Swagger: /docs)"
  log "  dashboard      http://localhost:$MLSTACK_PORT_DASHBOARD"
  log "  MLflow         http://localhost:$MLSTACK_PORT_MLFLOW"
  log "  Argo CD        http://localhost:$MLSTACK_PORT_ARGOCD  (admin; password in $OUT/credentials.txt)"
  log "  Ray dashboard  http://localhost:$MLSTACK_PORT_RAY_DASHBOARD  (no NodePort: its job API runs code; first, in"
  log "                 context $KCTX: kubectl -n ray port-forward svc/ray-cluster-kuberay-head-svc $MLSTACK_PORT_RAY_DASHBOARD:8265)"
  log "  MinIO console  http://localhost:$MLSTACK_PORT_MINIO_CONSOLE"
  log "API and dashboard admin token: MLSTACK_TOKEN in $OUT/credentials.txt (send Authorization: Bearer <token>)"
  log "Deploy a model: kubectl --context $KCTX apply -k manifests/examples   |   tear down: ./init.sh --down"
}

cluster_down() {
  cluster_init
  if ((DRY_RUN)) || kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    run kind delete cluster --name "$CLUSTER_NAME"
  else
    log "no kind cluster named $CLUSTER_NAME: nothing to delete"
  fi
  # outputs written by cluster mode only (local mode writes its own)
  local f
  for f in "$OUT/urls.txt" "$OUT/credentials.txt"; do
    if [[ -f $f ]] && head -n1 "$f" | grep -q '^# mlstack cluster mode'; then run rm -f "$f"; fi
  done
  return 0
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
