#!/usr/bin/env bash
# Runs the aiortc interop tests against camera-pod: updates the Python venv from
# requirements.txt, builds camera-pod, runs pytest. Extra arguments go to pytest
# (e.g. `tests/peers/run.sh -k passthrough`). P2PCAMERA_PROFILE=release tests the release build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${P2PCAMERA_VENV:-$HOME/.cache/p2pcamera/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

if [ -z "${P2PCAMERA_CAMERA_POD_BIN:-}" ]; then
  profile="${P2PCAMERA_PROFILE:-debug}"
  release=()
  [ "$profile" = release ] && release=(--release)
  (cd "$repo" && cargo build --workspace --bins "${release[@]}")
fi

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
