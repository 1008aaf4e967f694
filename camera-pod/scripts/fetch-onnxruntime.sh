#!/usr/bin/env bash
# Puts libonnxruntime.so from the PyPI `onnxruntime` wheel into a cache and prints its path.
# camera-pod loads ONNX Runtime at run time (ort's load-dynamic), so nothing is downloaded from a CDN.
#   camera-pod/scripts/fetch-onnxruntime.sh            -> prints the path of libonnxruntime.so
set -euo pipefail
VERSION=${ONNXRUNTIME_VERSION:-1.32.0}
CACHE=${P2PCAMERA_CACHE:-$HOME/.cache/p2pcamera}
dir="$CACHE/onnxruntime-$VERSION"
lib="$dir/libonnxruntime.so.$VERSION"
if [ ! -f "$lib" ]; then
  echo "fetching onnxruntime $VERSION wheel from PyPI into $dir" >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "onnxruntime==$VERSION" >&2
  wheel=$(ls "$tmp"/onnxruntime-*.whl)
  mkdir -p "$dir"
  python3 - "$wheel" "$dir" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime.so"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as dst:
                dst.write(src.read())
        if base in ("LICENSE", "ThirdPartyNotices.txt") and ".dist-info/" in name:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as dst:
                dst.write(src.read())
PY
fi
[ -f "$lib" ] || { echo "libonnxruntime.so.$VERSION not found in the wheel" >&2; exit 1; }
echo "$lib"
