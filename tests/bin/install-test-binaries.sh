#!/usr/bin/env bash
# Builds the real third-party binaries the tests run (Kubernetes control plane, etcd, kwok, Pebble,
# helm) from pinned Go modules into a cache outside the clone, once per machine.
#
#   tests/bin/install-test-binaries.sh [k8s|etcd|kwok|pebble|helm ...]   (default: all)
#
# Cache: $P2PCAMERA_CACHE (default ~/.cache/p2pcamera)/bin/<name>-<version>/. A directory holding a
# `.complete` marker is reused as is; delete it to force a rebuild.
set -euo pipefail

K8S_VERSION=v1.36.3
STAGING_VERSION=v0.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
PEBBLE_VERSION=v2.10.1
HELM_VERSION=v3.22.0

CACHE=${P2PCAMERA_CACHE:-$HOME/.cache/p2pcamera}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { printf '[install-test-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

done_or_start() { # dir -> 0 when already built
  [ -f "$1/.complete" ] && { log "cached: $1"; return 0; }
  rm -rf "$1"; mkdir -p "$1"; return 1
}

build_k8s() (
  local out="$CACHE/bin/k8s-$K8S_VERSION"
  done_or_start "$out" && return 0
  log "building kube-apiserver, kube-scheduler, kube-controller-manager, kubectl $K8S_VERSION (cold: tens of minutes on 2 cores)"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init p2pcamera.io/k8s-wrapper >/dev/null 2>&1
  # The release's own go.mod lists the staging modules it replaces with local paths; map each to
  # its published version instead.
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local staging; staging=$(grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')
  [ -n "$staging" ] || { log "no staging modules found in $gomod"; exit 1; }
  local godebug; godebug=$(grep -E '^godebug' "$gomod" || true)
  [ -n "$godebug" ] && printf '\n%s\n' "$godebug" >> go.mod
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  for m in $staging; do go mod edit -replace "$m=$m@$STAGING_VERSION"; done
  go mod edit -replace "k8s.io/kubernetes=k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null 2>&1 || true
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for cmd in kube-apiserver kube-scheduler kube-controller-manager kubectl; do
    log "go build $cmd"
    go build -tags tools -ldflags "$ld" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  touch "$out/.complete"
)

build_etcd() (
  local out="$CACHE/bin/etcd-$ETCD_VERSION"
  done_or_start "$out" && return 0
  log "building etcd $ETCD_VERSION"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init p2pcamera.io/etcd-wrapper >/dev/null 2>&1
  cat > tools.go <<'GO'
//go:build tools
package tools
import _ "go.etcd.io/etcd/server/v3"
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1 || true
  go build -tags tools -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  touch "$out/.complete"
)

go_install() { # name module version
  local out="$CACHE/bin/$1-$3"
  done_or_start "$out" && return 0
  log "go install $2@$3"
  GOBIN="$out" go install -ldflags "-s -w ${4:-}" "$2@$3"
  touch "$out/.complete"
}

kwok_stages() { # kwok's default node and pod stages, from the same pinned module
  local out="$CACHE/bin/kwok-$KWOK_VERSION/stages"
  [ -f "$out/.complete" ] && return 0
  log "copying kwok $KWOK_VERSION default stages"
  local src; src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src/kustomize/stage" ] || { log "kwok module has no kustomize/stage: $src"; exit 1; }
  rm -rf "$out"; mkdir -p "$out"
  cp "$src/kustomize/stage/node/fast/node-initialize.yaml" \
     "$src/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
     "$src/kustomize/stage/pod/fast/pod-ready.yaml" \
     "$src/kustomize/stage/pod/fast/pod-complete.yaml" \
     "$src/kustomize/stage/pod/fast/pod-delete.yaml" "$out/"
  chmod u+w "$out"/*.yaml
  touch "$out/.complete"
}

targets=${*:-k8s etcd kwok pebble helm}
for t in $targets; do
  case "$t" in
    k8s) build_k8s ;;
    etcd) build_etcd ;;
    kwok) go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"; kwok_stages ;;
    pebble) go_install pebble github.com/letsencrypt/pebble/v2/cmd/pebble "$PEBBLE_VERSION"
            go_install pebble-challtestsrv github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv "$PEBBLE_VERSION" ;;
    helm) go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    *) log "unknown target $t"; exit 2 ;;
  esac
done
log "ready under $CACHE/bin"
