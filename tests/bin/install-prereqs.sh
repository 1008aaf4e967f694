#!/usr/bin/env bash
# Installs everything p2pcamera's demo and tests need on a fresh Debian machine, from package
# registries only (Debian apt, PyPI, npm, the Go module proxy). Idempotent and cached under
# $P2PCAMERA_CACHE (default ~/.cache/p2pcamera).
#
#   tests/bin/install-prereqs.sh demo    # what `make demo` needs: codecs' system libs, ONNX Runtime
#   tests/bin/install-prereqs.sh test    # everything the test suite needs (also Chromium, aiortc, Go-built binaries)
set -euo pipefail
mode=${1:-test}
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${P2PCAMERA_CACHE:-$HOME/.cache/p2pcamera}
log() { printf '[install-prereqs] %s\n' "$*" >&2; }

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in pkg-config libvpx-dev nasm; do have_pkg "$p" || need_apt+=("$p"); done
if [ "$mode" = test ]; then
  # coturn: the TURN relay of the relay tests; nftables: their network namespace's firewall.
  for p in chromium coturn nftables; do have_pkg "$p" || need_apt+=("$p"); done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

"$root/camera-pod/scripts/fetch-onnxruntime.sh" >/dev/null

if [ "$mode" = test ]; then
  venv="$CACHE/venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ -f "$root/tests/peers/requirements.txt" ]; then
    stamp="$venv/.requirements-$(sha256sum "$root/tests/peers/requirements.txt" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
      log "pip install -r tests/peers/requirements.txt"
      "$venv/bin/pip" install -q -r "$root/tests/peers/requirements.txt"
      touch "$stamp"
    fi
  fi
  if [ -f "$root/tests/browser/package-lock.json" ]; then
    (cd "$root/tests/browser" && { [ -d node_modules ] && [ node_modules -nt package-lock.json ] || npm ci --silent --no-audit --no-fund; })
  fi
  "$root/tests/bin/install-test-binaries.sh"
fi
log "prerequisites ready ($mode)"
